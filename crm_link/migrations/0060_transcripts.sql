-- Transcripts: the words of each recording with their times, and the durable queue that makes them.
-- A job: queued -> working (claimed with a lease, renewed while decoding) -> done | failed (reason kept).
-- A worker that died leaves `working` with a lease that runs out; the next claim takes the job again.
ALTER TABLE recordings ADD COLUMN transcript_segments TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(transcript_segments));

CREATE TABLE transcript_jobs (
    recording_id INTEGER PRIMARY KEY REFERENCES recordings (id) ON DELETE CASCADE,
    state        TEXT NOT NULL CHECK (state IN ('queued', 'working', 'done', 'failed')),
    lease_until  TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX transcript_jobs_state ON transcript_jobs (state, recording_id);
