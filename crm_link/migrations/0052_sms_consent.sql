-- A customer's consent to receive texts: when it was given, how (web form, in person, a START
-- reply, an import) and who recorded it. No consent: sms_consent_at is NULL.
ALTER TABLE contacts ADD COLUMN sms_consent_at TEXT;
ALTER TABLE contacts ADD COLUMN sms_consent_source TEXT
    CHECK (sms_consent_source IN ('web_form', 'in_person', 'reply_start', 'import'));
ALTER TABLE contacts ADD COLUMN sms_consent_by INTEGER REFERENCES users (id) ON DELETE SET NULL;
