-- Surveys by SMS (issue 14 item 5): a blast (or a cadence step's text) can carry a one-question
-- survey; each text sent with one remembers it, so the customer's reply can be read as the answer.

ALTER TABLE sms_blasts ADD COLUMN survey_id INTEGER REFERENCES surveys (id) ON DELETE SET NULL;
ALTER TABLE sms_outbox ADD COLUMN survey_id INTEGER REFERENCES surveys (id) ON DELETE SET NULL;
-- a reply's open survey: the latest survey text sent to one of its contacts
CREATE INDEX sms_outbox_contact_survey ON sms_outbox (contact_id, sent_at) WHERE survey_id IS NOT NULL;
