-- Write-back to the dealership's CRM (issue 21): a durable event outbox.
--
-- crm_events is written by the triggers below, so an event is committed in the SAME transaction as
-- the change it describes, whichever code path made the change (touch group commit, SMS settle and
-- delivery reports, email settle, follow-ups, contact edits, recordings): nothing lost, nothing
-- invented. The delivery worker fans each event out to one crm_deliveries row per subscriber
-- (`fanned` = 1 afterwards; a fanned event is never changed again) and works those rows:
-- queued -> sending -> delivered | queued again (retry, backoff) | dead (with the reason).
-- order_key keeps a contact's events in order ('c:<contact id>'; a touch without a contact 't:<id>').
-- Times come from the rows' own columns (written with the store's clock), never from SQLite's.
-- A PostgreSQL port turns each trigger into a plpgsql trigger function with the same body.

CREATE TABLE crm_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uid         TEXT NOT NULL UNIQUE DEFAULT (lower(hex(randomblob(16)))),
    type        TEXT NOT NULL,
    contact_id  INTEGER,
    order_key   TEXT NOT NULL,
    at          TEXT NOT NULL,
    data        TEXT NOT NULL CHECK (json_valid(data)),
    fanned      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX crm_events_unfanned ON crm_events (fanned, id);
CREATE INDEX crm_events_contact ON crm_events (contact_id, id);
CREATE INDEX crm_events_at ON crm_events (at);

CREATE TABLE crm_deliveries (
    id              INTEGER PRIMARY KEY,
    event_id        INTEGER NOT NULL REFERENCES crm_events (id) ON DELETE CASCADE,
    subscriber      TEXT NOT NULL,
    order_key       TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    delivered_at    TEXT,
    UNIQUE (event_id, subscriber)
);
CREATE INDEX crm_deliveries_work ON crm_deliveries (subscriber, state, id);
CREATE INDEX crm_deliveries_order ON crm_deliveries (subscriber, order_key, state, id);
CREATE INDEX crm_deliveries_state ON crm_deliveries (state, id);

-- touches ------------------------------------------------------------------------------------------

CREATE TRIGGER crm_touch_insert AFTER INSERT ON touches
WHEN NEW.kind != 'call' OR NEW.ended_at IS NOT NULL OR NEW.status = 'logged'
BEGIN
    INSERT INTO crm_events (type, contact_id, order_key, at, data) VALUES (
        CASE
            WHEN NEW.status = 'logged' THEN NEW.kind || '.logged'
            WHEN NEW.kind = 'call' THEN CASE NEW.status WHEN 'answered' THEN 'call.answered'
                WHEN 'missed' THEN 'call.missed' ELSE 'call.not_answered' END
            WHEN NEW.kind = 'sms' AND NEW.direction = 'inbound' THEN 'sms.received'
            ELSE NEW.kind || '.' || NEW.status
        END,
        NEW.contact_id,
        CASE WHEN NEW.contact_id IS NULL THEN 't:' || NEW.id ELSE 'c:' || NEW.contact_id END,
        NEW.updated_at,
        json_object('touch_id', NEW.id, 'contact_id', NEW.contact_id,
            'contact_external_id', (SELECT external_id FROM contacts WHERE id = NEW.contact_id),
            'kind', NEW.kind, 'direction', NEW.direction, 'channel', NEW.channel, 'status', NEW.status,
            'number', NEW.number, 'started_at', NEW.started_at, 'ended_at', NEW.ended_at,
            'duration_s', NEW.duration_s, 'summary', NEW.summary,
            'agent', (SELECT username FROM users WHERE id = NEW.user_id),
            'disposition', json_extract(NEW.payload, '$.disposition'), 'details', json(NEW.payload))
    );
END;

CREATE TRIGGER crm_touch_update AFTER UPDATE ON touches
WHEN (NEW.kind = 'call' AND OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL)
  OR (NEW.kind != 'call' AND NEW.status IS NOT OLD.status)
  OR (json_extract(NEW.payload, '$.disposition') IS NOT json_extract(OLD.payload, '$.disposition'))
BEGIN
    INSERT INTO crm_events (type, contact_id, order_key, at, data) VALUES (
        CASE
            WHEN NEW.kind = 'call' AND OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL THEN
                CASE NEW.status WHEN 'answered' THEN 'call.answered' WHEN 'missed' THEN 'call.missed'
                    ELSE 'call.not_answered' END
            WHEN NEW.kind != 'call' AND NEW.status IS NOT OLD.status THEN
                CASE WHEN NEW.kind = 'sms' AND NEW.direction = 'inbound' THEN 'sms.received'
                    ELSE NEW.kind || '.' || NEW.status END
            ELSE NEW.kind || '.disposition'
        END,
        NEW.contact_id,
        CASE WHEN NEW.contact_id IS NULL THEN 't:' || NEW.id ELSE 'c:' || NEW.contact_id END,
        NEW.updated_at,
        json_object('touch_id', NEW.id, 'contact_id', NEW.contact_id,
            'contact_external_id', (SELECT external_id FROM contacts WHERE id = NEW.contact_id),
            'kind', NEW.kind, 'direction', NEW.direction, 'channel', NEW.channel, 'status', NEW.status,
            'number', NEW.number, 'started_at', NEW.started_at, 'ended_at', NEW.ended_at,
            'duration_s', NEW.duration_s, 'summary', NEW.summary,
            'agent', (SELECT username FROM users WHERE id = NEW.user_id),
            'disposition', json_extract(NEW.payload, '$.disposition'), 'details', json(NEW.payload))
    );
END;

-- a recording linked to its call ------------------------------------------------------------------

CREATE TRIGGER crm_recording_insert AFTER INSERT ON recordings
WHEN NEW.touch_id IS NOT NULL AND NEW.state = 'indexed'
BEGIN
    INSERT INTO crm_events (type, contact_id, order_key, at, data) VALUES (
        'call.recording', NEW.contact_id,
        CASE WHEN NEW.contact_id IS NULL THEN 't:' || NEW.touch_id ELSE 'c:' || NEW.contact_id END,
        NEW.updated_at,
        json_object('recording_id', NEW.id, 'touch_id', NEW.touch_id, 'contact_id', NEW.contact_id,
            'contact_external_id', (SELECT external_id FROM contacts WHERE id = NEW.contact_id),
            'duration_s', NEW.duration_s, 'format', NEW.format, 'size', NEW.size, 'sha256', NEW.sha256,
            'audio_path', '/api/v1/recordings/' || NEW.id || '/audio')
    );
END;

CREATE TRIGGER crm_recording_update AFTER UPDATE ON recordings
WHEN NEW.touch_id IS NOT NULL AND NEW.state = 'indexed'
  AND (OLD.touch_id IS NULL OR OLD.state != 'indexed' OR OLD.touch_id != NEW.touch_id)
BEGIN
    INSERT INTO crm_events (type, contact_id, order_key, at, data) VALUES (
        'call.recording', NEW.contact_id,
        CASE WHEN NEW.contact_id IS NULL THEN 't:' || NEW.touch_id ELSE 'c:' || NEW.contact_id END,
        NEW.updated_at,
        json_object('recording_id', NEW.id, 'touch_id', NEW.touch_id, 'contact_id', NEW.contact_id,
            'contact_external_id', (SELECT external_id FROM contacts WHERE id = NEW.contact_id),
            'duration_s', NEW.duration_s, 'format', NEW.format, 'size', NEW.size, 'sha256', NEW.sha256,
            'audio_path', '/api/v1/recordings/' || NEW.id || '/audio')
    );
END;

-- email that failed at the server (bounced) --------------------------------------------------------

CREATE TRIGGER crm_email_failed AFTER UPDATE OF state ON email_outbox
WHEN NEW.state = 'failed' AND OLD.state != 'failed'
BEGIN
    INSERT INTO crm_events (type, contact_id, order_key, at, data) VALUES (
        'email.bounced', NEW.contact_id,
        CASE WHEN NEW.contact_id IS NULL THEN 'm:' || NEW.id ELSE 'c:' || NEW.contact_id END,
        NEW.updated_at,
        json_object('email_id', NEW.id, 'contact_id', NEW.contact_id,
            'contact_external_id', (SELECT external_id FROM contacts WHERE id = NEW.contact_id),
            'to', NEW.to_addr, 'subject', NEW.subject, 'reason', NEW.reason, 'code', NEW.code,
            'template_id', NEW.template_id, 'job_id', NEW.job_id, 'message_id', NEW.message_id)
    );
END;

-- follow-ups ---------------------------------------------------------------------------------------

CREATE TRIGGER crm_followup_insert AFTER INSERT ON followups
BEGIN
    INSERT INTO crm_events (type, contact_id, order_key, at, data) VALUES (
        'followup.created', NEW.contact_id, 'c:' || NEW.contact_id, NEW.created_at,
        json_object('followup_id', NEW.id, 'contact_id', NEW.contact_id,
            'contact_external_id', (SELECT external_id FROM contacts WHERE id = NEW.contact_id),
            'kind', NEW.kind, 'due_at', NEW.due_at, 'note', NEW.note, 'status', NEW.status,
            'assignee', (SELECT username FROM users WHERE id = NEW.assignee_id),
            'created_by_touch_id', NEW.created_by_touch_id)
    );
END;

CREATE TRIGGER crm_followup_closed AFTER UPDATE OF status ON followups
WHEN OLD.status = 'open' AND NEW.status != 'open'
BEGIN
    INSERT INTO crm_events (type, contact_id, order_key, at, data) VALUES (
        'followup.closed', NEW.contact_id, 'c:' || NEW.contact_id, COALESCE(NEW.closed_at, NEW.created_at),
        json_object('followup_id', NEW.id, 'contact_id', NEW.contact_id,
            'contact_external_id', (SELECT external_id FROM contacts WHERE id = NEW.contact_id),
            'kind', NEW.kind, 'due_at', NEW.due_at, 'note', NEW.note, 'status', NEW.status,
            'assignee', (SELECT username FROM users WHERE id = NEW.assignee_id),
            'closed_at', NEW.closed_at, 'closed_by_touch_id', NEW.closed_by_touch_id)
    );
END;

-- contacts: a snapshot per change; phones and tags written later in the same transaction are
-- folded into that (not yet fanned-out) snapshot by the triggers on contact_phones/contact_tags ----

CREATE TRIGGER crm_contact_insert AFTER INSERT ON contacts
BEGIN
    INSERT INTO crm_events (type, contact_id, order_key, at, data) VALUES (
        'contact.created', NEW.id, 'c:' || NEW.id, NEW.updated_at,
        json_object('contact_id', NEW.id, 'external_id', NEW.external_id, 'first_name', NEW.first_name,
            'last_name', NEW.last_name, 'email', NEW.email,
            'owner', (SELECT username FROM users WHERE id = NEW.owner_id), 'time_zone', NEW.time_zone,
            'attributes', json(NEW.attributes),
            'do_not_call', json(CASE WHEN NEW.do_not_call THEN 'true' ELSE 'false' END),
            'sms_opt_out', json(CASE WHEN NEW.sms_opt_out THEN 'true' ELSE 'false' END),
            'email_opt_out', json(CASE WHEN NEW.email_opt_out THEN 'true' ELSE 'false' END),
            'phones', json('[]'), 'tags', json('[]'))
    );
END;

CREATE TRIGGER crm_contact_update AFTER UPDATE ON contacts
BEGIN
    INSERT INTO crm_events (type, contact_id, order_key, at, data) VALUES (
        'contact.updated', NEW.id, 'c:' || NEW.id, NEW.updated_at,
        json_object('contact_id', NEW.id, 'external_id', NEW.external_id, 'first_name', NEW.first_name,
            'last_name', NEW.last_name, 'email', NEW.email,
            'owner', (SELECT username FROM users WHERE id = NEW.owner_id), 'time_zone', NEW.time_zone,
            'attributes', json(NEW.attributes),
            'do_not_call', json(CASE WHEN NEW.do_not_call THEN 'true' ELSE 'false' END),
            'sms_opt_out', json(CASE WHEN NEW.sms_opt_out THEN 'true' ELSE 'false' END),
            'email_opt_out', json(CASE WHEN NEW.email_opt_out THEN 'true' ELSE 'false' END),
            'phones', json(COALESCE((SELECT json_group_array(json_object('number', e164, 'raw', raw,
                'kind', kind, 'valid', json(CASE WHEN valid THEN 'true' ELSE 'false' END)))
                FROM (SELECT * FROM contact_phones WHERE contact_id = NEW.id ORDER BY position, id)), '[]')),
            'tags', json(COALESCE((SELECT json_group_array(tag)
                FROM (SELECT tag FROM contact_tags WHERE contact_id = NEW.id ORDER BY tag)), '[]')))
    );
END;

CREATE TRIGGER crm_contact_unsubscribed AFTER UPDATE OF email_opt_out ON contacts
WHEN NEW.email_opt_out AND NOT OLD.email_opt_out
BEGIN
    INSERT INTO crm_events (type, contact_id, order_key, at, data) VALUES (
        'email.unsubscribed', NEW.id, 'c:' || NEW.id, NEW.updated_at,
        json_object('contact_id', NEW.id, 'contact_external_id', NEW.external_id, 'email', NEW.email)
    );
END;

CREATE TRIGGER crm_contact_sms_opt_out AFTER UPDATE OF sms_opt_out ON contacts
WHEN NEW.sms_opt_out AND NOT OLD.sms_opt_out
BEGIN
    INSERT INTO crm_events (type, contact_id, order_key, at, data) VALUES (
        'sms.opted_out', NEW.id, 'c:' || NEW.id, NEW.updated_at,
        json_object('contact_id', NEW.id, 'contact_external_id', NEW.external_id)
    );
END;

CREATE TRIGGER crm_contact_phone_insert AFTER INSERT ON contact_phones
BEGIN
    UPDATE crm_events SET data = json_set(data, '$.phones', json(COALESCE((SELECT json_group_array(
            json_object('number', e164, 'raw', raw, 'kind', kind,
                'valid', json(CASE WHEN valid THEN 'true' ELSE 'false' END)))
            FROM (SELECT * FROM contact_phones WHERE contact_id = NEW.contact_id ORDER BY position, id)), '[]')))
    WHERE id = (SELECT max(id) FROM crm_events WHERE contact_id = NEW.contact_id AND fanned = 0
                AND type IN ('contact.created', 'contact.updated'));
END;

CREATE TRIGGER crm_contact_phone_delete AFTER DELETE ON contact_phones
BEGIN
    UPDATE crm_events SET data = json_set(data, '$.phones', json(COALESCE((SELECT json_group_array(
            json_object('number', e164, 'raw', raw, 'kind', kind,
                'valid', json(CASE WHEN valid THEN 'true' ELSE 'false' END)))
            FROM (SELECT * FROM contact_phones WHERE contact_id = OLD.contact_id ORDER BY position, id)), '[]')))
    WHERE id = (SELECT max(id) FROM crm_events WHERE contact_id = OLD.contact_id AND fanned = 0
                AND type IN ('contact.created', 'contact.updated'));
END;

CREATE TRIGGER crm_contact_tag_insert AFTER INSERT ON contact_tags
BEGIN
    UPDATE crm_events SET data = json_set(data, '$.tags', json(COALESCE((SELECT json_group_array(tag)
            FROM (SELECT tag FROM contact_tags WHERE contact_id = NEW.contact_id ORDER BY tag)), '[]')))
    WHERE id = (SELECT max(id) FROM crm_events WHERE contact_id = NEW.contact_id AND fanned = 0
                AND type IN ('contact.created', 'contact.updated'));
END;

CREATE TRIGGER crm_contact_tag_delete AFTER DELETE ON contact_tags
BEGIN
    UPDATE crm_events SET data = json_set(data, '$.tags', json(COALESCE((SELECT json_group_array(tag)
            FROM (SELECT tag FROM contact_tags WHERE contact_id = OLD.contact_id ORDER BY tag)), '[]')))
    WHERE id = (SELECT max(id) FROM crm_events WHERE contact_id = OLD.contact_id AND fanned = 0
                AND type IN ('contact.created', 'contact.updated'));
END;
