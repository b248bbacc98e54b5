-- Messaging report rollups (issue 15 bench: 90 days at 100k SMS in p95 <= 500 ms): per day in the
-- dealership's zone, blast and email template, exact sums of what the SMS and email outboxes hold,
-- kept by triggers in the same transaction as every outbox change, reply and unsubscribe, so a late
-- delivery report or a reply days later lands on the day its message was sent. The report adds whole
-- days from here and counts only partial edge days from the outboxes (crm_link/message_rollups.py).
-- PostgreSQL form: postgres/0022_message_rollups.sql.

-- replies (and STOP replies among them) counted for this message: the last SMS sent to the number at
-- or before the reply (ties: the later row); unsubscribes for the last email sent to the customer
ALTER TABLE sms_outbox ADD COLUMN replies INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sms_outbox ADD COLUMN opt_outs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE email_outbox ADD COLUMN unsubscribes INTEGER NOT NULL DEFAULT 0;
CREATE INDEX email_outbox_contact_sent ON email_outbox (contact_id, sent_at);

-- each inbound SMS touch and the message it answers (NULL: none sent to that number before it)
CREATE TABLE sms_reply_links (
    touch_id  INTEGER PRIMARY KEY,
    number    TEXT,
    at        TEXT NOT NULL,
    stop      INTEGER NOT NULL,
    outbox_id INTEGER
);
CREATE INDEX sms_reply_links_number ON sms_reply_links (number, at);
CREATE INDEX sms_reply_links_outbox ON sms_reply_links (outbox_id);

-- each unsubscribe (audit_log email.unsubscribe) and the email it is counted for
CREATE TABLE email_unsub_links (
    audit_id   INTEGER PRIMARY KEY,
    contact_id INTEGER,
    at         TEXT NOT NULL,
    email_id   INTEGER
);
CREATE INDEX email_unsub_links_contact ON email_unsub_links (contact_id, at);
CREATE INDEX email_unsub_links_email ON email_unsub_links (email_id);

-- the local midnights of the zone the rollups are in, as store time text: a time's local day is
-- the day of the last midnight at or before it (filled for 1990-2099 when the rollups are built)
CREATE TABLE message_days (
    utc_start TEXT PRIMARY KEY,
    local_day TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE message_rollup_zone (zone TEXT NOT NULL);

-- dim: all (dim_key ''), blast (blast id), template (template id, '' for none). An SMS counts on the
-- day it was sent (when never sent: the day it failed or was skipped), an email on the day it was
-- sent (when it bounced: the day it failed). sms/emails: how many rows are counted there.
CREATE TABLE message_rollups (
    dim                TEXT NOT NULL,
    local_day          TEXT NOT NULL,
    dim_key            TEXT NOT NULL,
    sms                INTEGER NOT NULL DEFAULT 0,
    sent               INTEGER NOT NULL DEFAULT 0,
    delivered          INTEGER NOT NULL DEFAULT 0,
    failed             INTEGER NOT NULL DEFAULT 0,
    replies            INTEGER NOT NULL DEFAULT 0,
    opted_out          INTEGER NOT NULL DEFAULT 0,
    emails             INTEGER NOT NULL DEFAULT 0,
    email_sent         INTEGER NOT NULL DEFAULT 0,
    email_bounced      INTEGER NOT NULL DEFAULT 0,
    email_unsubscribed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dim, local_day, dim_key)
) WITHOUT ROWID;

-- the links of what is stored already, and the counts they give (before any trigger exists)
INSERT INTO sms_reply_links (touch_id, number, at, stop, outbox_id)
SELECT t.id, t.number, t.started_at, COALESCE(json_extract(t.payload, '$.keyword') = 'stop', 0),
    (SELECT o.id FROM sms_outbox o WHERE o.to_e164 = t.number AND o.sent_at IS NOT NULL
     AND o.sent_at <= t.started_at ORDER BY o.sent_at DESC, o.id DESC LIMIT 1)
FROM touches t WHERE t.kind = 'sms' AND t.direction = 'inbound';

INSERT INTO email_unsub_links (audit_id, contact_id, at, email_id)
SELECT a.id, CAST(a.object_id AS INTEGER), a.at,
    (SELECT e.id FROM email_outbox e WHERE e.contact_id = CAST(a.object_id AS INTEGER) AND e.sent_at IS NOT NULL
     AND e.sent_at <= a.at ORDER BY e.sent_at DESC, e.id DESC LIMIT 1)
FROM audit_log a WHERE a.action = 'email.unsubscribe';

UPDATE sms_outbox SET
    replies = (SELECT COUNT(*) FROM sms_reply_links l WHERE l.outbox_id = sms_outbox.id),
    opt_outs = (SELECT COALESCE(SUM(l.stop), 0) FROM sms_reply_links l WHERE l.outbox_id = sms_outbox.id)
WHERE id IN (SELECT outbox_id FROM sms_reply_links);
UPDATE email_outbox SET unsubscribes = (SELECT COUNT(*) FROM email_unsub_links l WHERE l.email_id = email_outbox.id)
WHERE id IN (SELECT email_id FROM email_unsub_links);

-- SMS rows -> rollups --------------------------------------------------------------------------------

CREATE TRIGGER message_rollup_sms_insert AFTER INSERT ON sms_outbox
WHEN COALESCE(NEW.sent_at, NEW.final_at) IS NOT NULL BEGIN
    INSERT INTO message_rollups (dim, local_day, dim_key, sms, sent, delivered, failed, replies, opted_out)
    SELECT d.dim, COALESCE((SELECT c.local_day FROM message_days c WHERE c.utc_start <= COALESCE(NEW.sent_at, NEW.final_at)
        ORDER BY c.utc_start DESC LIMIT 1), ''), d.k, 1, NEW.sent_at IS NOT NULL, NEW.state = 'delivered',
        NEW.state = 'failed', NEW.replies, NEW.opt_outs
    FROM (SELECT 'all' AS dim, '' AS k UNION ALL SELECT 'blast', CAST(NEW.blast_id AS TEXT) WHERE NEW.blast_id IS NOT NULL) d
    WHERE 1 = 1
    ON CONFLICT (dim, local_day, dim_key) DO UPDATE SET sms = sms + excluded.sms, sent = sent + excluded.sent,
        delivered = delivered + excluded.delivered, failed = failed + excluded.failed,
        replies = replies + excluded.replies, opted_out = opted_out + excluded.opted_out;
END;

CREATE TRIGGER message_rollup_sms_delete AFTER DELETE ON sms_outbox
WHEN COALESCE(OLD.sent_at, OLD.final_at) IS NOT NULL BEGIN
    INSERT INTO message_rollups (dim, local_day, dim_key, sms, sent, delivered, failed, replies, opted_out)
    SELECT d.dim, COALESCE((SELECT c.local_day FROM message_days c WHERE c.utc_start <= COALESCE(OLD.sent_at, OLD.final_at)
        ORDER BY c.utc_start DESC LIMIT 1), ''), d.k, -1, -(OLD.sent_at IS NOT NULL), -(OLD.state = 'delivered'),
        -(OLD.state = 'failed'), -OLD.replies, -OLD.opt_outs
    FROM (SELECT 'all' AS dim, '' AS k UNION ALL SELECT 'blast', CAST(OLD.blast_id AS TEXT) WHERE OLD.blast_id IS NOT NULL) d
    WHERE 1 = 1
    ON CONFLICT (dim, local_day, dim_key) DO UPDATE SET sms = sms + excluded.sms, sent = sent + excluded.sent,
        delivered = delivered + excluded.delivered, failed = failed + excluded.failed,
        replies = replies + excluded.replies, opted_out = opted_out + excluded.opted_out;
END;

CREATE TRIGGER message_rollup_sms_update AFTER UPDATE OF state, sent_at, final_at, blast_id, replies, opt_outs ON sms_outbox
WHEN COALESCE(OLD.sent_at, OLD.final_at) IS NOT NULL OR COALESCE(NEW.sent_at, NEW.final_at) IS NOT NULL BEGIN
    INSERT INTO message_rollups (dim, local_day, dim_key, sms, sent, delivered, failed, replies, opted_out)
    SELECT d.dim, COALESCE((SELECT c.local_day FROM message_days c WHERE c.utc_start <= COALESCE(OLD.sent_at, OLD.final_at)
        ORDER BY c.utc_start DESC LIMIT 1), ''), d.k, -1, -(OLD.sent_at IS NOT NULL), -(OLD.state = 'delivered'),
        -(OLD.state = 'failed'), -OLD.replies, -OLD.opt_outs
    FROM (SELECT 'all' AS dim, '' AS k UNION ALL SELECT 'blast', CAST(OLD.blast_id AS TEXT) WHERE OLD.blast_id IS NOT NULL) d
    WHERE COALESCE(OLD.sent_at, OLD.final_at) IS NOT NULL
    ON CONFLICT (dim, local_day, dim_key) DO UPDATE SET sms = sms + excluded.sms, sent = sent + excluded.sent,
        delivered = delivered + excluded.delivered, failed = failed + excluded.failed,
        replies = replies + excluded.replies, opted_out = opted_out + excluded.opted_out;
    INSERT INTO message_rollups (dim, local_day, dim_key, sms, sent, delivered, failed, replies, opted_out)
    SELECT d.dim, COALESCE((SELECT c.local_day FROM message_days c WHERE c.utc_start <= COALESCE(NEW.sent_at, NEW.final_at)
        ORDER BY c.utc_start DESC LIMIT 1), ''), d.k, 1, NEW.sent_at IS NOT NULL, NEW.state = 'delivered',
        NEW.state = 'failed', NEW.replies, NEW.opt_outs
    FROM (SELECT 'all' AS dim, '' AS k UNION ALL SELECT 'blast', CAST(NEW.blast_id AS TEXT) WHERE NEW.blast_id IS NOT NULL) d
    WHERE COALESCE(NEW.sent_at, NEW.final_at) IS NOT NULL
    ON CONFLICT (dim, local_day, dim_key) DO UPDATE SET sms = sms + excluded.sms, sent = sent + excluded.sent,
        delivered = delivered + excluded.delivered, failed = failed + excluded.failed,
        replies = replies + excluded.replies, opted_out = opted_out + excluded.opted_out;
END;

-- a message sent (or moved to another number) may now be the one later replies answer
CREATE TRIGGER sms_reply_relink_insert AFTER INSERT ON sms_outbox WHEN NEW.sent_at IS NOT NULL BEGIN
    UPDATE sms_reply_links SET outbox_id = (SELECT o.id FROM sms_outbox o WHERE o.to_e164 = sms_reply_links.number
        AND o.sent_at IS NOT NULL AND o.sent_at <= sms_reply_links.at ORDER BY o.sent_at DESC, o.id DESC LIMIT 1)
    WHERE number = NEW.to_e164 AND at >= NEW.sent_at;
END;

CREATE TRIGGER sms_reply_relink_update AFTER UPDATE OF sent_at, to_e164 ON sms_outbox
WHEN OLD.sent_at IS NOT NEW.sent_at OR OLD.to_e164 IS NOT NEW.to_e164 BEGIN
    UPDATE sms_reply_links SET outbox_id = (SELECT o.id FROM sms_outbox o WHERE o.to_e164 = sms_reply_links.number
        AND o.sent_at IS NOT NULL AND o.sent_at <= sms_reply_links.at ORDER BY o.sent_at DESC, o.id DESC LIMIT 1)
    WHERE (number = NEW.to_e164 AND at >= NEW.sent_at) OR outbox_id = OLD.id;
END;

CREATE TRIGGER sms_reply_relink_delete AFTER DELETE ON sms_outbox BEGIN
    UPDATE sms_reply_links SET outbox_id = (SELECT o.id FROM sms_outbox o WHERE o.to_e164 = sms_reply_links.number
        AND o.sent_at IS NOT NULL AND o.sent_at <= sms_reply_links.at ORDER BY o.sent_at DESC, o.id DESC LIMIT 1)
    WHERE outbox_id = OLD.id;
END;

-- links -> the message's reply counts (whose change moves the rollups above)
CREATE TRIGGER sms_reply_link_insert AFTER INSERT ON sms_reply_links WHEN NEW.outbox_id IS NOT NULL BEGIN
    UPDATE sms_outbox SET replies = replies + 1, opt_outs = opt_outs + NEW.stop WHERE id = NEW.outbox_id;
END;

CREATE TRIGGER sms_reply_link_delete AFTER DELETE ON sms_reply_links WHEN OLD.outbox_id IS NOT NULL BEGIN
    UPDATE sms_outbox SET replies = replies - 1, opt_outs = opt_outs - OLD.stop WHERE id = OLD.outbox_id;
END;

CREATE TRIGGER sms_reply_link_update AFTER UPDATE OF outbox_id, stop ON sms_reply_links
WHEN OLD.outbox_id IS NOT NEW.outbox_id OR OLD.stop IS NOT NEW.stop BEGIN
    UPDATE sms_outbox SET replies = replies - 1, opt_outs = opt_outs - OLD.stop WHERE id = OLD.outbox_id;
    UPDATE sms_outbox SET replies = replies + 1, opt_outs = opt_outs + NEW.stop WHERE id = NEW.outbox_id;
END;

-- inbound SMS touches -> links
CREATE TRIGGER sms_reply_touch_insert AFTER INSERT ON touches
WHEN NEW.kind = 'sms' AND NEW.direction = 'inbound' BEGIN
    INSERT INTO sms_reply_links (touch_id, number, at, stop, outbox_id)
    VALUES (NEW.id, NEW.number, NEW.started_at, COALESCE(json_extract(NEW.payload, '$.keyword') = 'stop', 0),
        (SELECT o.id FROM sms_outbox o WHERE o.to_e164 = NEW.number AND o.sent_at IS NOT NULL
         AND o.sent_at <= NEW.started_at ORDER BY o.sent_at DESC, o.id DESC LIMIT 1));
END;

CREATE TRIGGER sms_reply_touch_update AFTER UPDATE OF kind, direction, number, started_at, payload ON touches
WHEN (OLD.kind = 'sms' AND OLD.direction = 'inbound') OR (NEW.kind = 'sms' AND NEW.direction = 'inbound') BEGIN
    DELETE FROM sms_reply_links WHERE touch_id = OLD.id AND NOT (NEW.kind = 'sms' AND NEW.direction = 'inbound');
    UPDATE sms_reply_links SET number = NEW.number, at = NEW.started_at,
        stop = COALESCE(json_extract(NEW.payload, '$.keyword') = 'stop', 0),
        outbox_id = (SELECT o.id FROM sms_outbox o WHERE o.to_e164 = NEW.number AND o.sent_at IS NOT NULL
            AND o.sent_at <= NEW.started_at ORDER BY o.sent_at DESC, o.id DESC LIMIT 1)
    WHERE touch_id = NEW.id;
    INSERT INTO sms_reply_links (touch_id, number, at, stop, outbox_id)
    SELECT NEW.id, NEW.number, NEW.started_at, COALESCE(json_extract(NEW.payload, '$.keyword') = 'stop', 0),
        (SELECT o.id FROM sms_outbox o WHERE o.to_e164 = NEW.number AND o.sent_at IS NOT NULL
         AND o.sent_at <= NEW.started_at ORDER BY o.sent_at DESC, o.id DESC LIMIT 1)
    WHERE NEW.kind = 'sms' AND NEW.direction = 'inbound'
    AND NOT EXISTS (SELECT 1 FROM sms_reply_links l WHERE l.touch_id = NEW.id);
END;

CREATE TRIGGER sms_reply_touch_delete AFTER DELETE ON touches
WHEN OLD.kind = 'sms' AND OLD.direction = 'inbound' BEGIN
    DELETE FROM sms_reply_links WHERE touch_id = OLD.id;
END;

-- email rows -> rollups ---------------------------------------------------------------------------------

CREATE TRIGGER message_rollup_email_insert AFTER INSERT ON email_outbox
WHEN COALESCE(NEW.sent_at, CASE WHEN NEW.state = 'failed' THEN NEW.updated_at END) IS NOT NULL BEGIN
    INSERT INTO message_rollups (dim, local_day, dim_key, emails, email_sent, email_bounced, email_unsubscribed)
    SELECT d.dim, COALESCE((SELECT c.local_day FROM message_days c WHERE c.utc_start
        <= COALESCE(NEW.sent_at, CASE WHEN NEW.state = 'failed' THEN NEW.updated_at END)
        ORDER BY c.utc_start DESC LIMIT 1), ''), d.k, 1, NEW.state = 'sent', NEW.state = 'failed', NEW.unsubscribes
    FROM (SELECT 'all' AS dim, '' AS k UNION ALL SELECT 'template', COALESCE(CAST(NEW.template_id AS TEXT), '')) d
    WHERE 1 = 1
    ON CONFLICT (dim, local_day, dim_key) DO UPDATE SET emails = emails + excluded.emails,
        email_sent = email_sent + excluded.email_sent, email_bounced = email_bounced + excluded.email_bounced,
        email_unsubscribed = email_unsubscribed + excluded.email_unsubscribed;
END;

CREATE TRIGGER message_rollup_email_delete AFTER DELETE ON email_outbox
WHEN COALESCE(OLD.sent_at, CASE WHEN OLD.state = 'failed' THEN OLD.updated_at END) IS NOT NULL BEGIN
    INSERT INTO message_rollups (dim, local_day, dim_key, emails, email_sent, email_bounced, email_unsubscribed)
    SELECT d.dim, COALESCE((SELECT c.local_day FROM message_days c WHERE c.utc_start
        <= COALESCE(OLD.sent_at, CASE WHEN OLD.state = 'failed' THEN OLD.updated_at END)
        ORDER BY c.utc_start DESC LIMIT 1), ''), d.k, -1, -(OLD.state = 'sent'), -(OLD.state = 'failed'), -OLD.unsubscribes
    FROM (SELECT 'all' AS dim, '' AS k UNION ALL SELECT 'template', COALESCE(CAST(OLD.template_id AS TEXT), '')) d
    WHERE 1 = 1
    ON CONFLICT (dim, local_day, dim_key) DO UPDATE SET emails = emails + excluded.emails,
        email_sent = email_sent + excluded.email_sent, email_bounced = email_bounced + excluded.email_bounced,
        email_unsubscribed = email_unsubscribed + excluded.email_unsubscribed;
END;

CREATE TRIGGER message_rollup_email_update
AFTER UPDATE OF state, sent_at, updated_at, template_id, unsubscribes ON email_outbox
WHEN COALESCE(OLD.sent_at, CASE WHEN OLD.state = 'failed' THEN OLD.updated_at END) IS NOT NULL
    OR COALESCE(NEW.sent_at, CASE WHEN NEW.state = 'failed' THEN NEW.updated_at END) IS NOT NULL BEGIN
    INSERT INTO message_rollups (dim, local_day, dim_key, emails, email_sent, email_bounced, email_unsubscribed)
    SELECT d.dim, COALESCE((SELECT c.local_day FROM message_days c WHERE c.utc_start
        <= COALESCE(OLD.sent_at, CASE WHEN OLD.state = 'failed' THEN OLD.updated_at END)
        ORDER BY c.utc_start DESC LIMIT 1), ''), d.k, -1, -(OLD.state = 'sent'), -(OLD.state = 'failed'), -OLD.unsubscribes
    FROM (SELECT 'all' AS dim, '' AS k UNION ALL SELECT 'template', COALESCE(CAST(OLD.template_id AS TEXT), '')) d
    WHERE COALESCE(OLD.sent_at, CASE WHEN OLD.state = 'failed' THEN OLD.updated_at END) IS NOT NULL
    ON CONFLICT (dim, local_day, dim_key) DO UPDATE SET emails = emails + excluded.emails,
        email_sent = email_sent + excluded.email_sent, email_bounced = email_bounced + excluded.email_bounced,
        email_unsubscribed = email_unsubscribed + excluded.email_unsubscribed;
    INSERT INTO message_rollups (dim, local_day, dim_key, emails, email_sent, email_bounced, email_unsubscribed)
    SELECT d.dim, COALESCE((SELECT c.local_day FROM message_days c WHERE c.utc_start
        <= COALESCE(NEW.sent_at, CASE WHEN NEW.state = 'failed' THEN NEW.updated_at END)
        ORDER BY c.utc_start DESC LIMIT 1), ''), d.k, 1, NEW.state = 'sent', NEW.state = 'failed', NEW.unsubscribes
    FROM (SELECT 'all' AS dim, '' AS k UNION ALL SELECT 'template', COALESCE(CAST(NEW.template_id AS TEXT), '')) d
    WHERE COALESCE(NEW.sent_at, CASE WHEN NEW.state = 'failed' THEN NEW.updated_at END) IS NOT NULL
    ON CONFLICT (dim, local_day, dim_key) DO UPDATE SET emails = emails + excluded.emails,
        email_sent = email_sent + excluded.email_sent, email_bounced = email_bounced + excluded.email_bounced,
        email_unsubscribed = email_unsubscribed + excluded.email_unsubscribed;
END;

CREATE TRIGGER email_unsub_relink_insert AFTER INSERT ON email_outbox WHEN NEW.sent_at IS NOT NULL BEGIN
    UPDATE email_unsub_links SET email_id = (SELECT e.id FROM email_outbox e WHERE e.contact_id = email_unsub_links.contact_id
        AND e.sent_at IS NOT NULL AND e.sent_at <= email_unsub_links.at ORDER BY e.sent_at DESC, e.id DESC LIMIT 1)
    WHERE contact_id = NEW.contact_id AND at >= NEW.sent_at;
END;

CREATE TRIGGER email_unsub_relink_update AFTER UPDATE OF sent_at, contact_id ON email_outbox
WHEN OLD.sent_at IS NOT NEW.sent_at OR OLD.contact_id IS NOT NEW.contact_id BEGIN
    UPDATE email_unsub_links SET email_id = (SELECT e.id FROM email_outbox e WHERE e.contact_id = email_unsub_links.contact_id
        AND e.sent_at IS NOT NULL AND e.sent_at <= email_unsub_links.at ORDER BY e.sent_at DESC, e.id DESC LIMIT 1)
    WHERE (contact_id = NEW.contact_id AND at >= NEW.sent_at) OR email_id = OLD.id;
END;

CREATE TRIGGER email_unsub_relink_delete AFTER DELETE ON email_outbox BEGIN
    UPDATE email_unsub_links SET email_id = (SELECT e.id FROM email_outbox e WHERE e.contact_id = email_unsub_links.contact_id
        AND e.sent_at IS NOT NULL AND e.sent_at <= email_unsub_links.at ORDER BY e.sent_at DESC, e.id DESC LIMIT 1)
    WHERE email_id = OLD.id;
END;

CREATE TRIGGER email_unsub_link_insert AFTER INSERT ON email_unsub_links WHEN NEW.email_id IS NOT NULL BEGIN
    UPDATE email_outbox SET unsubscribes = unsubscribes + 1 WHERE id = NEW.email_id;
END;

CREATE TRIGGER email_unsub_link_delete AFTER DELETE ON email_unsub_links WHEN OLD.email_id IS NOT NULL BEGIN
    UPDATE email_outbox SET unsubscribes = unsubscribes - 1 WHERE id = OLD.email_id;
END;

CREATE TRIGGER email_unsub_link_update AFTER UPDATE OF email_id ON email_unsub_links
WHEN OLD.email_id IS NOT NEW.email_id BEGIN
    UPDATE email_outbox SET unsubscribes = unsubscribes - 1 WHERE id = OLD.email_id;
    UPDATE email_outbox SET unsubscribes = unsubscribes + 1 WHERE id = NEW.email_id;
END;

CREATE TRIGGER email_unsub_audit_insert AFTER INSERT ON audit_log WHEN NEW.action = 'email.unsubscribe' BEGIN
    INSERT INTO email_unsub_links (audit_id, contact_id, at, email_id)
    VALUES (NEW.id, CAST(NEW.object_id AS INTEGER), NEW.at,
        (SELECT e.id FROM email_outbox e WHERE e.contact_id = CAST(NEW.object_id AS INTEGER) AND e.sent_at IS NOT NULL
         AND e.sent_at <= NEW.at ORDER BY e.sent_at DESC, e.id DESC LIMIT 1));
END;

CREATE TRIGGER email_unsub_audit_delete AFTER DELETE ON audit_log WHEN OLD.action = 'email.unsubscribe' BEGIN
    DELETE FROM email_unsub_links WHERE audit_id = OLD.id;
END;
