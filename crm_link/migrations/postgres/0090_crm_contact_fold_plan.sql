-- The phone and tag triggers fold into a contact's pending (unfanned) snapshot. Without statistics on
-- crm_events (a fresh or bulk-loaded store) the planner ANDed crm_events_contact with
-- crm_events_unfanned, reading every unfanned event for each phone or tag inserted: a bulk insert or an
-- import slowed down as it went (quadratic). `fanned + 0` keeps the search on the contact's own events
-- (crm_events_contact), a handful of rows whatever the backlog.
CREATE OR REPLACE FUNCTION crm_contact_fold(cid bigint, key text, value json) RETURNS void LANGUAGE sql AS $$
    UPDATE crm_events SET data = (data::jsonb || jsonb_build_object(key, value))::text
    WHERE id = (SELECT max(id) FROM crm_events WHERE contact_id = cid AND fanned + 0 = 0
                AND type IN ('contact.created', 'contact.updated'))
$$;
