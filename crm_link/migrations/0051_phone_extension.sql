-- A phone's extension (the 12 of "(312) 555-0142 x12"), kept beside its E.164 number.
ALTER TABLE contact_phones ADD COLUMN extension TEXT;
