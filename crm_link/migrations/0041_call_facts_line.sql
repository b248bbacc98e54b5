-- The line an inbound call came in on: the number the customer dialled (Asterisk's SB_DID, in
-- E.164), so the call report can be read per line (a dealership's sales vs service number).
-- '' for outbound calls and for calls written before it was known.
ALTER TABLE call_facts ADD COLUMN line TEXT NOT NULL DEFAULT '';
