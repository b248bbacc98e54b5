-- Core CRM schema: users, tokens, sessions, contacts, phones, tags, touches, follow-ups, audit log.
-- Times are ISO-8601 UTC text ('2026-11-22T10:00:00.000000Z'), so they sort and compare as text.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
    display_name  TEXT NOT NULL DEFAULT '',
    email         TEXT,
    role          TEXT NOT NULL CHECK (role IN ('rep', 'manager', 'marketing', 'admin')),
    extension     TEXT UNIQUE,
    password_hash TEXT NOT NULL,
    active        INTEGER NOT NULL DEFAULT 1,
    time_zone     TEXT,
    created_at    TEXT NOT NULL
);

CREATE TABLE user_interfaces (
    interface TEXT PRIMARY KEY,
    user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE
);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL DEFAULT '',
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);

CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE contacts (
    id            INTEGER PRIMARY KEY,
    external_id   TEXT UNIQUE,
    first_name    TEXT NOT NULL DEFAULT '',
    last_name     TEXT NOT NULL DEFAULT '',
    email         TEXT,
    owner_id      INTEGER REFERENCES users (id) ON DELETE SET NULL,
    time_zone     TEXT,
    attributes    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(attributes)),
    do_not_call   INTEGER NOT NULL DEFAULT 0,
    sms_opt_out   INTEGER NOT NULL DEFAULT 0,
    email_opt_out INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX contacts_email ON contacts (email COLLATE NOCASE);
CREATE INDEX contacts_owner ON contacts (owner_id, id);
CREATE INDEX contacts_last_name ON contacts (last_name COLLATE NOCASE, first_name COLLATE NOCASE);

CREATE TABLE contact_phones (
    id         INTEGER PRIMARY KEY,
    contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    raw        TEXT NOT NULL,
    e164       TEXT NOT NULL,
    valid      INTEGER NOT NULL,
    kind       TEXT NOT NULL DEFAULT 'unknown',
    position   INTEGER NOT NULL DEFAULT 0,
    UNIQUE (contact_id, e164)
);
CREATE INDEX contact_phones_e164 ON contact_phones (e164);

CREATE TABLE contact_tags (
    tag        TEXT NOT NULL COLLATE NOCASE,
    contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    PRIMARY KEY (tag, contact_id)
) WITHOUT ROWID;
CREATE INDEX contact_tags_contact ON contact_tags (contact_id);

CREATE TABLE touches (
    id          INTEGER PRIMARY KEY,
    source_key  TEXT NOT NULL UNIQUE,
    contact_id  INTEGER REFERENCES contacts (id) ON DELETE SET NULL,
    user_id     INTEGER REFERENCES users (id) ON DELETE SET NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('call', 'sms', 'email', 'note')),
    direction   TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound', 'internal', 'none')),
    channel     TEXT NOT NULL DEFAULT '',
    status      TEXT NOT NULL DEFAULT '',
    number      TEXT,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    duration_s  REAL,
    summary     TEXT NOT NULL DEFAULT '',
    payload     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(payload)),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX touches_contact ON touches (contact_id, started_at DESC, id DESC);
CREATE INDEX touches_user ON touches (user_id, started_at DESC);
CREATE INDEX touches_number ON touches (number, started_at DESC);

CREATE TABLE followups (
    id                  INTEGER PRIMARY KEY,
    contact_id          INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    assignee_id         INTEGER REFERENCES users (id) ON DELETE SET NULL,
    kind                TEXT NOT NULL DEFAULT 'followup',
    due_at              TEXT NOT NULL,
    note                TEXT NOT NULL DEFAULT '',
    status              TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'cancelled')),
    created_by_touch_id INTEGER REFERENCES touches (id) ON DELETE SET NULL,
    closed_by_touch_id  INTEGER REFERENCES touches (id) ON DELETE SET NULL,
    created_at          TEXT NOT NULL,
    closed_at           TEXT,
    UNIQUE (created_by_touch_id, kind)
);
CREATE INDEX followups_assignee ON followups (assignee_id, status, due_at);
CREATE INDEX followups_contact ON followups (contact_id, status, due_at);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    user_id     INTEGER REFERENCES users (id) ON DELETE SET NULL,
    action      TEXT NOT NULL,
    object_type TEXT NOT NULL DEFAULT '',
    object_id   TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(detail))
);
CREATE INDEX audit_log_at ON audit_log (at);
