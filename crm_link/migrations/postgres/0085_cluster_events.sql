-- PostgreSQL form of 0085: ids from an identity (the NOTIFY names a range of them).
CREATE TABLE cluster_events (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    origin  TEXT NOT NULL,
    at      TEXT NOT NULL,
    body    TEXT NOT NULL
);
CREATE INDEX cluster_events_at ON cluster_events (at);
