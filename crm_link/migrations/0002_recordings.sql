-- Call recordings: one row per audio file, linked to its call's touch once both are known.
-- state: pending (announced, no file yet) | indexed | unlinked (a file with no known call)
--        | empty (header only: nothing was bridged) | truncated (the audio ends early) | deleted (retention)

CREATE TABLE recordings (
    id           INTEGER PRIMARY KEY,
    source       TEXT NOT NULL,
    pbx_name     TEXT NOT NULL,
    call_key     TEXT,
    touch_id     INTEGER REFERENCES touches (id) ON DELETE SET NULL,
    contact_id   INTEGER REFERENCES contacts (id) ON DELETE SET NULL,
    user_id      INTEGER REFERENCES users (id) ON DELETE SET NULL,
    extension    TEXT,
    direction    TEXT,
    from_number  TEXT,
    to_number    TEXT,
    started_at   TEXT,
    duration_s   REAL,
    format       TEXT,
    size         INTEGER,
    sha256       TEXT,
    storage_path TEXT,
    remote_url   TEXT,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'indexed', 'unlinked', 'empty', 'truncated', 'deleted')),
    notes        TEXT NOT NULL DEFAULT '',
    tags         TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    transcript   TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (source, pbx_name)
);
CREATE INDEX recordings_call ON recordings (call_key);
CREATE INDEX recordings_started ON recordings (started_at DESC, id DESC);
CREATE INDEX recordings_extension ON recordings (extension, started_at DESC);
CREATE INDEX recordings_user ON recordings (user_id, started_at DESC);
CREATE INDEX recordings_contact ON recordings (contact_id, started_at DESC);
CREATE INDEX recordings_from ON recordings (from_number, started_at DESC);
CREATE INDEX recordings_to ON recordings (to_number, started_at DESC);

-- free text over the customer's name, notes, tags and transcript
CREATE VIRTUAL TABLE recordings_fts USING fts5 (body, tokenize = 'unicode61 remove_diacritics 2');

-- the call facts a recording is linked with (they may arrive before or after the file)
CREATE TABLE recording_calls (
    call_key TEXT PRIMARY KEY,
    facts    TEXT NOT NULL CHECK (json_valid(facts))
);
