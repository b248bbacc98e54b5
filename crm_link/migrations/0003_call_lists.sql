-- Outbound call lists: saved segments, lists, their entries (one per number) and every dial attempt.
-- Entry states: pending -> in_progress (claimed with a lease) -> pending (retry) | done | skipped.
-- Attempt states: dialing -> answered | busy | noanswer | failed; cancelled when the agent's leg failed
-- (the customer was never dialed); unknown when a crash left it open.
-- Skipped entries (do not call, no or invalid number, duplicate) keep a NULL number and the reason.

CREATE TABLE segments (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE COLLATE NOCASE,
    description TEXT NOT NULL DEFAULT '',
    filter      TEXT NOT NULL CHECK (json_valid(filter)),
    created_by  INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE call_lists (
    id                 INTEGER PRIMARY KEY,
    name               TEXT NOT NULL,
    mode               TEXT NOT NULL CHECK (mode IN ('preview', 'progressive')),
    state              TEXT NOT NULL CHECK (state IN ('draft', 'running', 'paused', 'stopped', 'done')),
    source             TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(source)),
    priority           INTEGER NOT NULL DEFAULT 0,
    max_attempts       INTEGER NOT NULL DEFAULT 3,
    retry_minutes      INTEGER NOT NULL DEFAULT 60,
    busy_retry_minutes INTEGER NOT NULL DEFAULT 240,
    calling_start      TEXT,
    calling_end        TEXT,
    window_start       TEXT,
    window_end         TEXT,
    created_by         INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    started_at         TEXT,
    finished_at        TEXT
);

CREATE TABLE call_list_agents (
    list_id INTEGER NOT NULL REFERENCES call_lists (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (list_id, user_id)
) WITHOUT ROWID;
CREATE INDEX call_list_agents_user ON call_list_agents (user_id);

CREATE TABLE call_list_entries (
    id            INTEGER PRIMARY KEY,
    list_id       INTEGER NOT NULL REFERENCES call_lists (id) ON DELETE CASCADE,
    contact_id    INTEGER REFERENCES contacts (id) ON DELETE SET NULL,
    number        TEXT,
    time_zone     TEXT NOT NULL,
    priority      INTEGER NOT NULL DEFAULT 0,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'in_progress', 'done', 'skipped')),
    reason        TEXT,
    result        TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    no_contact    INTEGER NOT NULL DEFAULT 0,
    next_at       TEXT NOT NULL,
    agent_id      INTEGER REFERENCES users (id) ON DELETE SET NULL,
    lease_owner   TEXT,
    lease_until   TEXT,
    last_attempt_at TEXT,
    updated_at    TEXT NOT NULL,
    UNIQUE (list_id, number)
);
-- the next due entry of a list in one zone: equality on (list, state, zone), then priority and time
CREATE INDEX call_list_entries_due ON call_list_entries (list_id, state, time_zone, priority DESC, next_at, id);
CREATE INDEX call_list_entries_lease ON call_list_entries (state, lease_until);
CREATE INDEX call_list_entries_agent ON call_list_entries (agent_id, state, next_at);
CREATE INDEX call_list_entries_contact ON call_list_entries (contact_id);

CREATE TABLE call_attempts (
    id          INTEGER PRIMARY KEY,
    entry_id    INTEGER NOT NULL REFERENCES call_list_entries (id) ON DELETE CASCADE,
    list_id     INTEGER NOT NULL REFERENCES call_lists (id) ON DELETE CASCADE,
    contact_id  INTEGER REFERENCES contacts (id) ON DELETE SET NULL,
    agent_id    INTEGER REFERENCES users (id) ON DELETE SET NULL,
    number      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('dialing', 'answered', 'busy', 'noanswer', 'failed', 'cancelled', 'unknown')),
    source      TEXT NOT NULL DEFAULT '',
    call_id     TEXT,
    touch_id    INTEGER REFERENCES touches (id) ON DELETE SET NULL,
    disposition TEXT,
    note        TEXT NOT NULL DEFAULT '',
    error       TEXT,
    started_at  TEXT NOT NULL,
    ended_at    TEXT
);
CREATE INDEX call_attempts_list ON call_attempts (list_id, state);
CREATE INDEX call_attempts_entry ON call_attempts (entry_id, id);
CREATE UNIQUE INDEX call_attempts_call ON call_attempts (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX call_attempts_open ON call_attempts (state) WHERE state = 'dialing';
