-- A run of a blast is claimed (runs + 1, compare-and-set on next_run_at) before its audience is
-- materialized; materialized_runs says how many claimed runs have their outbox rows. A claim whose
-- materializer died is taken over after claim_expires_at, for the same run number, so the unique
-- (blast_id, run, to_e164) key keeps every recipient to one message per run.
ALTER TABLE sms_blasts ADD COLUMN materialized_runs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sms_blasts ADD COLUMN claim_expires_at TEXT;
UPDATE sms_blasts SET materialized_runs = runs;
