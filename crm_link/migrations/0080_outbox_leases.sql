-- Outbox rows claimed under a lease by one instance: several instances may share a PostgreSQL store.
-- A `sending` row names the instance that claimed it (`owner`) and how long its claim holds
-- (`lease_until`, renewed while it sends); only a row whose lease ran out is taken as in doubt by
-- another instance. Rows claimed before this migration have neither: their lease counts as run out.

ALTER TABLE sms_outbox ADD COLUMN owner TEXT;
ALTER TABLE sms_outbox ADD COLUMN lease_until TEXT;
ALTER TABLE email_outbox ADD COLUMN owner TEXT;
ALTER TABLE email_outbox ADD COLUMN lease_until TEXT;
