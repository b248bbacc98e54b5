-- An agent previews one call-list entry at a time, whichever instance hands it out: a unique index
-- on the lease owner of in-progress entries leased to an agent (`agent:<user id>`) makes a second
-- simultaneous claim for the same agent fail, and the claimer then returns the entry the agent holds.
-- Entries an agent held beyond one before this migration: those not being dialed go back to the
-- queue (keeping a dialed one, else the first); of several being dialed, all but the first keep
-- their call under an owner of their own (`agent:<id>#<entry id>`) until the call ends or the
-- lease runs out.

UPDATE call_list_entries SET state = 'pending', lease_owner = NULL, lease_until = NULL
WHERE state = 'in_progress' AND lease_owner LIKE 'agent:%'
  AND NOT EXISTS (SELECT 1 FROM call_attempts a WHERE a.entry_id = call_list_entries.id AND a.state = 'dialing')
  AND EXISTS (
      SELECT 1 FROM call_list_entries k
      WHERE k.lease_owner = call_list_entries.lease_owner AND k.state = 'in_progress' AND k.id <> call_list_entries.id
        AND (k.id < call_list_entries.id
             OR EXISTS (SELECT 1 FROM call_attempts d WHERE d.entry_id = k.id AND d.state = 'dialing'))
  );

UPDATE call_list_entries SET lease_owner = lease_owner || '#' || id
WHERE state = 'in_progress' AND lease_owner LIKE 'agent:%'
  AND EXISTS (
      SELECT 1 FROM call_list_entries k
      WHERE k.lease_owner = call_list_entries.lease_owner AND k.state = 'in_progress' AND k.id < call_list_entries.id
  );

CREATE UNIQUE INDEX call_list_entries_agent_lease ON call_list_entries (lease_owner)
WHERE state = 'in_progress' AND lease_owner LIKE 'agent:%';
