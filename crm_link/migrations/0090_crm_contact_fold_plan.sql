-- PostgreSQL only (postgres/0090_crm_contact_fold_plan.sql): there the phone and tag triggers' search
-- for a contact's pending snapshot scanned every unfanned event. SQLite already walks
-- crm_events_contact for it; nothing changes here.
SELECT 1;
