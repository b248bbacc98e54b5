-- The follow-up loop: cadence rules as data, follow-ups that know their rule/step/pool/result,
-- typed attributes, and a little state for the daily sweep.

CREATE TABLE cadences (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    date_field   TEXT NOT NULL,
    steps        TEXT NOT NULL CHECK (json_valid(steps)),
    assign       TEXT NOT NULL DEFAULT 'owner',
    filter       TEXT CHECK (filter IS NULL OR json_valid(filter)),
    retry_hours  INTEGER NOT NULL DEFAULT 4,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    escalate_to  TEXT NOT NULL DEFAULT 'managers',
    active       INTEGER NOT NULL DEFAULT 1,
    starts_on    TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);

ALTER TABLE followups ADD COLUMN pool TEXT;
ALTER TABLE followups ADD COLUMN cadence_id INTEGER REFERENCES cadences (id) ON DELETE SET NULL;
ALTER TABLE followups ADD COLUMN step INTEGER;
ALTER TABLE followups ADD COLUMN anchor TEXT;
ALTER TABLE followups ADD COLUMN source_key TEXT;
ALTER TABLE followups ADD COLUMN channel TEXT NOT NULL DEFAULT 'call';
ALTER TABLE followups ADD COLUMN result TEXT;
ALTER TABLE followups ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE followups ADD COLUMN escalated_reason TEXT;
ALTER TABLE followups ADD COLUMN closed_by_user_id INTEGER REFERENCES users (id) ON DELETE SET NULL;
ALTER TABLE followups ADD COLUMN updated_at TEXT;

CREATE UNIQUE INDEX followups_source_key ON followups (source_key);
CREATE INDEX followups_pool ON followups (pool, status, due_at);
CREATE INDEX followups_closed ON followups (assignee_id, status, closed_at);
CREATE INDEX followups_cadence ON followups (contact_id, cadence_id, step);

CREATE TABLE attribute_types (
    name   TEXT PRIMARY KEY,
    type   TEXT NOT NULL CHECK (type IN ('text', 'number', 'date', 'boolean')),
    source TEXT NOT NULL DEFAULT 'inferred'
);

CREATE TABLE followup_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- an email sent from a follow-up closes that one (and no other) once it is sent
ALTER TABLE email_outbox ADD COLUMN followup_id INTEGER REFERENCES followups (id) ON DELETE SET NULL;
