-- Cadence SMS steps and replies: an outbound SMS may serve a follow-up (a cadence step sent by the
-- loop, or a rep's text from a follow-up); the send closes it, a reply from the customer answers it.

ALTER TABLE sms_outbox ADD COLUMN followup_id INTEGER REFERENCES followups (id) ON DELETE SET NULL;
CREATE INDEX sms_outbox_followup ON sms_outbox (followup_id);
CREATE INDEX sms_outbox_to_followup ON sms_outbox (to_e164, sent_at) WHERE followup_id IS NOT NULL;
CREATE INDEX email_outbox_followup ON email_outbox (followup_id);
-- the step sender's work: open SMS/email steps by due time
CREATE INDEX followups_steps ON followups (channel, status, due_at) WHERE channel != 'call';
