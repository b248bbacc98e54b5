-- PostgreSQL form of ../0022_message_rollups.sql: the same tables and links, kept by plpgsql trigger
-- functions (booleans as ::int, IS DISTINCT FROM for SQLite's IS NOT, ->> for json_extract).

ALTER TABLE sms_outbox ADD COLUMN replies BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sms_outbox ADD COLUMN opt_outs BIGINT NOT NULL DEFAULT 0;
ALTER TABLE email_outbox ADD COLUMN unsubscribes BIGINT NOT NULL DEFAULT 0;
CREATE INDEX email_outbox_contact_sent ON email_outbox (contact_id, sent_at);

CREATE TABLE sms_reply_links (
    touch_id  BIGINT PRIMARY KEY,
    number    TEXT,
    at        TEXT NOT NULL,
    stop      BIGINT NOT NULL,
    outbox_id BIGINT
);
CREATE INDEX sms_reply_links_number ON sms_reply_links (number, at);
CREATE INDEX sms_reply_links_outbox ON sms_reply_links (outbox_id);

CREATE TABLE email_unsub_links (
    audit_id   BIGINT PRIMARY KEY,
    contact_id BIGINT,
    at         TEXT NOT NULL,
    email_id   BIGINT
);
CREATE INDEX email_unsub_links_contact ON email_unsub_links (contact_id, at);
CREATE INDEX email_unsub_links_email ON email_unsub_links (email_id);

CREATE TABLE message_days (
    utc_start TEXT PRIMARY KEY,
    local_day TEXT NOT NULL
);
CREATE TABLE message_rollup_zone (zone TEXT NOT NULL);

CREATE TABLE message_rollups (
    dim                TEXT NOT NULL,
    local_day          TEXT NOT NULL,
    dim_key            TEXT NOT NULL,
    sms                BIGINT NOT NULL DEFAULT 0,
    sent               BIGINT NOT NULL DEFAULT 0,
    delivered          BIGINT NOT NULL DEFAULT 0,
    failed             BIGINT NOT NULL DEFAULT 0,
    replies            BIGINT NOT NULL DEFAULT 0,
    opted_out          BIGINT NOT NULL DEFAULT 0,
    emails             BIGINT NOT NULL DEFAULT 0,
    email_sent         BIGINT NOT NULL DEFAULT 0,
    email_bounced      BIGINT NOT NULL DEFAULT 0,
    email_unsubscribed BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (dim, local_day, dim_key)
);

CREATE FUNCTION message_local_day(at text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT COALESCE((SELECT c.local_day FROM message_days c WHERE c.utc_start <= at
        ORDER BY c.utc_start DESC LIMIT 1), '')
$$;

CREATE FUNCTION sms_reply_target(num text, at text) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT o.id FROM sms_outbox o WHERE o.to_e164 = num AND o.sent_at IS NOT NULL AND o.sent_at <= at
    ORDER BY o.sent_at DESC, o.id DESC LIMIT 1
$$;

CREATE FUNCTION email_unsub_target(cid bigint, at text) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT e.id FROM email_outbox e WHERE e.contact_id = cid AND e.sent_at IS NOT NULL AND e.sent_at <= at
    ORDER BY e.sent_at DESC, e.id DESC LIMIT 1
$$;

INSERT INTO sms_reply_links (touch_id, number, at, stop, outbox_id)
SELECT t.id, t.number, t.started_at, COALESCE((t.payload::json ->> 'keyword') = 'stop', false)::int,
    sms_reply_target(t.number, t.started_at)
FROM touches t WHERE t.kind = 'sms' AND t.direction = 'inbound';

INSERT INTO email_unsub_links (audit_id, contact_id, at, email_id)
SELECT a.id, CAST(a.object_id AS BIGINT), a.at, email_unsub_target(CAST(a.object_id AS BIGINT), a.at)
FROM audit_log a WHERE a.action = 'email.unsubscribe';

UPDATE sms_outbox SET
    replies = (SELECT COUNT(*) FROM sms_reply_links l WHERE l.outbox_id = sms_outbox.id),
    opt_outs = (SELECT COALESCE(SUM(l.stop), 0) FROM sms_reply_links l WHERE l.outbox_id = sms_outbox.id)
WHERE id IN (SELECT outbox_id FROM sms_reply_links);
UPDATE email_outbox SET unsubscribes = (SELECT COUNT(*) FROM email_unsub_links l WHERE l.email_id = email_outbox.id)
WHERE id IN (SELECT email_id FROM email_unsub_links);

-- add (sign 1) or take away (sign -1) one SMS row's share of the rollups
CREATE FUNCTION message_rollup_sms(r sms_outbox, sign int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    day text;
    k text;
BEGIN
    IF COALESCE(r.sent_at, r.final_at) IS NULL THEN
        RETURN;
    END IF;
    day := message_local_day(COALESCE(r.sent_at, r.final_at));
    FOREACH k IN ARRAY CASE WHEN r.blast_id IS NULL THEN ARRAY['all:'] ELSE ARRAY['all:', 'blast:' || r.blast_id] END LOOP
        INSERT INTO message_rollups AS m (dim, local_day, dim_key, sms, sent, delivered, failed, replies, opted_out)
        VALUES (split_part(k, ':', 1), day, substr(k, strpos(k, ':') + 1), sign,
            sign * (r.sent_at IS NOT NULL)::int, sign * (r.state = 'delivered')::int,
            sign * (r.state = 'failed')::int, sign * r.replies, sign * r.opt_outs)
        ON CONFLICT (dim, local_day, dim_key) DO UPDATE SET sms = m.sms + excluded.sms,
            sent = m.sent + excluded.sent, delivered = m.delivered + excluded.delivered,
            failed = m.failed + excluded.failed, replies = m.replies + excluded.replies,
            opted_out = m.opted_out + excluded.opted_out;
    END LOOP;
END $$;

CREATE FUNCTION message_rollup_email(r email_outbox, sign int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    at text := COALESCE(r.sent_at, CASE WHEN r.state = 'failed' THEN r.updated_at END);
    day text;
    k text;
BEGIN
    IF at IS NULL THEN
        RETURN;
    END IF;
    day := message_local_day(at);
    FOREACH k IN ARRAY ARRAY['all:', 'template:' || COALESCE(r.template_id::text, '')] LOOP
        INSERT INTO message_rollups AS m (dim, local_day, dim_key, emails, email_sent, email_bounced, email_unsubscribed)
        VALUES (split_part(k, ':', 1), day, substr(k, strpos(k, ':') + 1), sign,
            sign * (r.state = 'sent')::int, sign * (r.state = 'failed')::int, sign * r.unsubscribes)
        ON CONFLICT (dim, local_day, dim_key) DO UPDATE SET emails = m.emails + excluded.emails,
            email_sent = m.email_sent + excluded.email_sent, email_bounced = m.email_bounced + excluded.email_bounced,
            email_unsubscribed = m.email_unsubscribed + excluded.email_unsubscribed;
    END LOOP;
END $$;

CREATE FUNCTION message_rollup_sms_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM message_rollup_sms(OLD, -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM message_rollup_sms(NEW, 1);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION message_rollup_email_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM message_rollup_email(OLD, -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM message_rollup_email(NEW, 1);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER message_rollup_sms AFTER INSERT OR DELETE ON sms_outbox
    FOR EACH ROW EXECUTE FUNCTION message_rollup_sms_trigger();
CREATE TRIGGER message_rollup_sms_update
    AFTER UPDATE OF state, sent_at, final_at, blast_id, replies, opt_outs ON sms_outbox
    FOR EACH ROW EXECUTE FUNCTION message_rollup_sms_trigger();
CREATE TRIGGER message_rollup_email AFTER INSERT OR DELETE ON email_outbox
    FOR EACH ROW EXECUTE FUNCTION message_rollup_email_trigger();
CREATE TRIGGER message_rollup_email_update
    AFTER UPDATE OF state, sent_at, updated_at, template_id, unsubscribes ON email_outbox
    FOR EACH ROW EXECUTE FUNCTION message_rollup_email_trigger();

-- a message sent, moved or deleted: the replies (unsubscribes) it may now answer or no longer does
CREATE FUNCTION sms_reply_relink() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE sms_reply_links l SET outbox_id = sms_reply_target(l.number, l.at) WHERE l.outbox_id = OLD.id;
    ELSIF TG_OP = 'INSERT' THEN
        UPDATE sms_reply_links l SET outbox_id = sms_reply_target(l.number, l.at)
        WHERE l.number = NEW.to_e164 AND l.at >= NEW.sent_at
        AND l.outbox_id IS DISTINCT FROM sms_reply_target(l.number, l.at);
    ELSIF OLD.sent_at IS DISTINCT FROM NEW.sent_at OR OLD.to_e164 IS DISTINCT FROM NEW.to_e164 THEN
        UPDATE sms_reply_links l SET outbox_id = sms_reply_target(l.number, l.at)
        WHERE ((l.number = NEW.to_e164 AND l.at >= NEW.sent_at) OR l.outbox_id = OLD.id)
        AND l.outbox_id IS DISTINCT FROM sms_reply_target(l.number, l.at);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION email_unsub_relink() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE email_unsub_links l SET email_id = email_unsub_target(l.contact_id, l.at) WHERE l.email_id = OLD.id;
    ELSIF TG_OP = 'INSERT' THEN
        UPDATE email_unsub_links l SET email_id = email_unsub_target(l.contact_id, l.at)
        WHERE l.contact_id = NEW.contact_id AND l.at >= NEW.sent_at
        AND l.email_id IS DISTINCT FROM email_unsub_target(l.contact_id, l.at);
    ELSIF OLD.sent_at IS DISTINCT FROM NEW.sent_at OR OLD.contact_id IS DISTINCT FROM NEW.contact_id THEN
        UPDATE email_unsub_links l SET email_id = email_unsub_target(l.contact_id, l.at)
        WHERE ((l.contact_id = NEW.contact_id AND l.at >= NEW.sent_at) OR l.email_id = OLD.id)
        AND l.email_id IS DISTINCT FROM email_unsub_target(l.contact_id, l.at);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER sms_reply_relink AFTER INSERT OR DELETE OR UPDATE OF sent_at, to_e164 ON sms_outbox
    FOR EACH ROW EXECUTE FUNCTION sms_reply_relink();
CREATE TRIGGER email_unsub_relink AFTER INSERT OR DELETE OR UPDATE OF sent_at, contact_id ON email_outbox
    FOR EACH ROW EXECUTE FUNCTION email_unsub_relink();

-- links -> the message's counts
CREATE FUNCTION sms_reply_link_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.outbox_id IS NOT NULL THEN
        UPDATE sms_outbox SET replies = replies - 1, opt_outs = opt_outs - OLD.stop WHERE id = OLD.outbox_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.outbox_id IS NOT NULL THEN
        UPDATE sms_outbox SET replies = replies + 1, opt_outs = opt_outs + NEW.stop WHERE id = NEW.outbox_id;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION email_unsub_link_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.email_id IS NOT NULL THEN
        UPDATE email_outbox SET unsubscribes = unsubscribes - 1 WHERE id = OLD.email_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.email_id IS NOT NULL THEN
        UPDATE email_outbox SET unsubscribes = unsubscribes + 1 WHERE id = NEW.email_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER sms_reply_link_count AFTER INSERT OR DELETE ON sms_reply_links
    FOR EACH ROW EXECUTE FUNCTION sms_reply_link_count();
CREATE TRIGGER sms_reply_link_count_update AFTER UPDATE OF outbox_id, stop ON sms_reply_links
    FOR EACH ROW WHEN (OLD.outbox_id IS DISTINCT FROM NEW.outbox_id OR OLD.stop IS DISTINCT FROM NEW.stop)
    EXECUTE FUNCTION sms_reply_link_count();
CREATE TRIGGER email_unsub_link_count AFTER INSERT OR DELETE ON email_unsub_links
    FOR EACH ROW EXECUTE FUNCTION email_unsub_link_count();
CREATE TRIGGER email_unsub_link_count_update AFTER UPDATE OF email_id ON email_unsub_links
    FOR EACH ROW WHEN (OLD.email_id IS DISTINCT FROM NEW.email_id) EXECUTE FUNCTION email_unsub_link_count();

-- inbound SMS touches and unsubscribes -> links
CREATE FUNCTION sms_reply_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.kind = 'sms' AND OLD.direction = 'inbound'
        AND (TG_OP = 'DELETE' OR NOT (NEW.kind = 'sms' AND NEW.direction = 'inbound')) THEN
        DELETE FROM sms_reply_links WHERE touch_id = OLD.id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.kind = 'sms' AND NEW.direction = 'inbound' THEN
        INSERT INTO sms_reply_links AS l (touch_id, number, at, stop, outbox_id)
        VALUES (NEW.id, NEW.number, NEW.started_at, COALESCE((NEW.payload::json ->> 'keyword') = 'stop', false)::int,
            sms_reply_target(NEW.number, NEW.started_at))
        ON CONFLICT (touch_id) DO UPDATE SET number = excluded.number, at = excluded.at, stop = excluded.stop,
            outbox_id = excluded.outbox_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER sms_reply_touch AFTER INSERT OR DELETE ON touches
    FOR EACH ROW EXECUTE FUNCTION sms_reply_touch();
CREATE TRIGGER sms_reply_touch_update AFTER UPDATE OF kind, direction, number, started_at, payload ON touches
    FOR EACH ROW WHEN ((OLD.kind = 'sms' AND OLD.direction = 'inbound') OR (NEW.kind = 'sms' AND NEW.direction = 'inbound'))
    EXECUTE FUNCTION sms_reply_touch();

CREATE FUNCTION email_unsub_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM email_unsub_links WHERE audit_id = OLD.id;
    ELSE
        INSERT INTO email_unsub_links (audit_id, contact_id, at, email_id)
        VALUES (NEW.id, CAST(NEW.object_id AS BIGINT), NEW.at,
            email_unsub_target(CAST(NEW.object_id AS BIGINT), NEW.at));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER email_unsub_audit AFTER INSERT ON audit_log
    FOR EACH ROW WHEN (NEW.action = 'email.unsubscribe') EXECUTE FUNCTION email_unsub_audit();
CREATE TRIGGER email_unsub_audit_delete AFTER DELETE ON audit_log
    FOR EACH ROW WHEN (OLD.action = 'email.unsubscribe') EXECUTE FUNCTION email_unsub_audit();
