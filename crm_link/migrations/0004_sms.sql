-- SMS: blasts and the durable outbox every outbound message goes through.
-- Outbox states: queued -> sending -> sent -> delivered | failed; skipped (with a reason);
-- unknown (a crash left the outcome ambiguous; never resent blindly).

CREATE TABLE sms_blasts (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL,
    text            TEXT NOT NULL,
    channel         TEXT NOT NULL,
    audience        TEXT NOT NULL CHECK (json_valid(audience)),
    state           TEXT NOT NULL CHECK (state IN ('scheduled', 'running', 'paused', 'cancelled', 'done')),
    send_at         TEXT,
    cron            TEXT,
    time_zone       TEXT NOT NULL DEFAULT 'UTC',
    next_run_at     TEXT,
    runs            INTEGER NOT NULL DEFAULT 0,
    rate_per_second REAL,
    pause_reason    TEXT,
    created_by      INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT
);
CREATE INDEX sms_blasts_due ON sms_blasts (state, next_run_at);

CREATE TABLE sms_outbox (
    id           INTEGER PRIMARY KEY,
    blast_id     INTEGER REFERENCES sms_blasts (id) ON DELETE CASCADE,
    run          INTEGER NOT NULL DEFAULT 0,
    dedupe_key   TEXT UNIQUE,
    contact_id   INTEGER REFERENCES contacts (id) ON DELETE SET NULL,
    user_id      INTEGER REFERENCES users (id) ON DELETE SET NULL,
    to_e164      TEXT NOT NULL,
    time_zone    TEXT,
    text         TEXT NOT NULL,
    encoding     TEXT NOT NULL DEFAULT 'gsm7',
    segments     INTEGER NOT NULL DEFAULT 1,
    channel      TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'sent', 'delivered', 'failed', 'skipped', 'unknown')),
    reason       TEXT,
    provider_id  TEXT,
    error_code   TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    not_before   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    sent_at      TEXT,
    final_at     TEXT,
    UNIQUE (blast_id, run, to_e164)
);
CREATE INDEX sms_outbox_work ON sms_outbox (channel, state, not_before, id);
CREATE INDEX sms_outbox_blast ON sms_outbox (blast_id, state);
CREATE INDEX sms_outbox_provider ON sms_outbox (channel, provider_id);
