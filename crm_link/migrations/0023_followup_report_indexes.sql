-- The follow-up report counts each figure over one index range: due by due_at, done and reached
-- (and past due for the ones closed since) by (status, closed_at), past due for the open ones by
-- (status, due_at); each index also carries the columns the report filters and groups by, so the
-- counts are read from the index alone (see ReportStore.followups).
CREATE INDEX followups_due ON followups (due_at, assignee_id, pool, cadence_id, contact_id);
CREATE INDEX followups_status_closed ON followups (status, closed_at, due_at, created_at, result, assignee_id, pool, cadence_id, contact_id);
CREATE INDEX followups_status_due ON followups (status, due_at, created_at, assignee_id, pool, cadence_id, contact_id);
