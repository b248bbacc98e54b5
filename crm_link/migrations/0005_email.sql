-- Email: templates, send jobs (mail merges) and the durable outbox every email goes through.

CREATE TABLE app_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO app_secrets (name, value) VALUES ('unsubscribe', lower(hex(randomblob(32))));

CREATE TABLE email_templates (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE COLLATE NOCASE,
    subject     TEXT NOT NULL,
    html        TEXT NOT NULL,
    text        TEXT NOT NULL DEFAULT '',
    merge_codes TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(merge_codes)),
    created_by  INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE email_jobs (
    id            INTEGER PRIMARY KEY,
    template_id   INTEGER NOT NULL REFERENCES email_templates (id),
    audience      TEXT NOT NULL CHECK (json_valid(audience)),
    state         TEXT NOT NULL CHECK (state IN ('scheduled', 'running', 'cancelled', 'done')),
    send_at       TEXT NOT NULL,
    next_followup TEXT,
    created_by    INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at    TEXT NOT NULL,
    finished_at   TEXT
);
CREATE INDEX email_jobs_due ON email_jobs (state, send_at);

CREATE TABLE email_outbox (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER REFERENCES email_jobs (id) ON DELETE CASCADE,
    template_id INTEGER REFERENCES email_templates (id) ON DELETE SET NULL,
    contact_id  INTEGER REFERENCES contacts (id) ON DELETE SET NULL,
    user_id     INTEGER REFERENCES users (id) ON DELETE SET NULL,
    to_addr     TEXT NOT NULL,
    to_name     TEXT NOT NULL DEFAULT '',
    subject     TEXT NOT NULL,
    html        TEXT NOT NULL,
    text        TEXT NOT NULL,
    message_id  TEXT NOT NULL UNIQUE,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'skipped', 'unknown')),
    reason      TEXT,
    code        INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    close_followups INTEGER NOT NULL DEFAULT 0,
    next_followup TEXT,
    not_before  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    sent_at     TEXT,
    UNIQUE (job_id, contact_id)
);
CREATE INDEX email_outbox_work ON email_outbox (state, not_before, id);
CREATE INDEX email_outbox_job ON email_outbox (job_id, state);
