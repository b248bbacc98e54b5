-- A user's manager: the follow-ups escalated to `owner_manager` for a customer go to the manager of
-- the customer's owner (no manager set: the managers' pool).
ALTER TABLE users ADD COLUMN manager_id INTEGER REFERENCES users (id) ON DELETE SET NULL;
