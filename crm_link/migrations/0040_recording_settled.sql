-- 1 when a recording's file was judged after its call had ended (or, for a file no call announced,
-- after a quiet period): its state is final. 0: judged while MixMonitor may still have been writing.
ALTER TABLE recordings ADD COLUMN settled INTEGER NOT NULL DEFAULT 0;
UPDATE recordings SET settled = 1 WHERE state = 'indexed' OR call_key IS NULL;
