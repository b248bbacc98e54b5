-- Reports: one row per finished call touch with the figures the call report counts, written in the
-- same transaction as the touch's end (so a report is exact whatever order events arrive in).
-- Times are epoch seconds (arithmetic on them is portable SQL); local_day/local_hour/weekday are
-- the call's start in the dealership's zone (settings.server.time_zone) when it was written.

CREATE TABLE call_facts (
    touch_id   INTEGER PRIMARY KEY REFERENCES touches (id) ON DELETE CASCADE,
    direction  TEXT NOT NULL,
    outcome    TEXT NOT NULL CHECK (outcome IN ('answered', 'missed', 'abandoned', 'busy', 'no_answer')),
    user_id    INTEGER REFERENCES users (id) ON DELETE SET NULL,
    queue      TEXT NOT NULL DEFAULT '',
    number     TEXT,
    started_s  REAL NOT NULL,
    answered_s REAL,
    ended_s    REAL NOT NULL,
    wait_s     REAL,
    talk_s     REAL,
    local_day  TEXT NOT NULL,
    local_hour INTEGER NOT NULL,
    weekday    INTEGER NOT NULL
);
CREATE INDEX call_facts_started ON call_facts (started_s);
CREATE INDEX call_facts_callback ON call_facts (number, direction, started_s);

-- calls that ended before this migration get their facts once, at the next start
CREATE TABLE report_backfill (name TEXT PRIMARY KEY);
INSERT INTO report_backfill (name) VALUES ('call_facts');

-- replies and opt-outs are matched to the last message sent to the number before them
CREATE INDEX sms_outbox_to_sent ON sms_outbox (to_e164, sent_at);
CREATE INDEX email_outbox_sent ON email_outbox (sent_at);
CREATE INDEX touches_kind_started ON touches (kind, direction, started_at);
CREATE INDEX sms_outbox_sent ON sms_outbox (sent_at);
CREATE INDEX sms_outbox_final ON sms_outbox (final_at);
