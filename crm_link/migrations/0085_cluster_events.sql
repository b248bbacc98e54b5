-- Events one instance hands to the others when several share one PostgreSQL store: each row is one
-- hub message (a screen-pop for a user, a call update, a live pop set or cleared), announced by a
-- NOTIFY that carries only the origin and the rows' ids; every other instance reads the rows by id
-- and delivers them to its own browser tabs. Rows are short-lived (pruned after minutes). On a
-- SQLite store (one instance) the table stays empty.
CREATE TABLE cluster_events (
    id      INTEGER PRIMARY KEY,
    origin  TEXT NOT NULL,
    at      TEXT NOT NULL,
    body    TEXT NOT NULL
);
CREATE INDEX cluster_events_at ON cluster_events (at);
