-- Call report rollups: per day in the dealership's zone, exact sums of the call facts per dimension,
-- kept in the same transaction as each fact (crm_link/call_rollups.py). A report reads whole days
-- from here and only partial edge days from call_facts.

-- integer milliseconds, so sums over rollups and over facts are the same numbers in any order
ALTER TABLE call_facts ADD COLUMN wait_ms INTEGER;
ALTER TABLE call_facts ADD COLUMN talk_ms INTEGER;
-- an unanswered inbound call's callback: the first outbound call to its number at or after its end
ALTER TABLE call_facts ADD COLUMN callback_s REAL;
ALTER TABLE call_facts ADD COLUMN callback_ms INTEGER;

-- dim: day (dim_key ''), agent (user id, '' for none), queue, hour (0-23 as text). wait_le_N counts
-- the answered inbound calls whose wait, rounded up to the whole second, is more than the step
-- before N and at most N (steps: crm_link/call_rollups.py WAIT_STEPS); the p90 is read from them
CREATE TABLE call_rollups (
    dim               TEXT NOT NULL,
    local_day         TEXT NOT NULL,
    dim_key           TEXT NOT NULL,
    weekday           INTEGER NOT NULL, -- of local_day, 0 = Sunday (calls by weekday × hour)
    inbound           INTEGER NOT NULL DEFAULT 0,
    outbound          INTEGER NOT NULL DEFAULT 0,
    answered          INTEGER NOT NULL DEFAULT 0,
    missed            INTEGER NOT NULL DEFAULT 0,
    abandoned         INTEGER NOT NULL DEFAULT 0,
    outbound_answered INTEGER NOT NULL DEFAULT 0,
    wait_ms           INTEGER NOT NULL DEFAULT 0,
    wait_n            INTEGER NOT NULL DEFAULT 0,
    talk_ms           INTEGER NOT NULL DEFAULT 0,
    unanswered        INTEGER NOT NULL DEFAULT 0,
    called_back       INTEGER NOT NULL DEFAULT 0,
    callback_ms       INTEGER NOT NULL DEFAULT 0,
    wait_le_0          INTEGER NOT NULL DEFAULT 0,
    wait_le_5          INTEGER NOT NULL DEFAULT 0,
    wait_le_10         INTEGER NOT NULL DEFAULT 0,
    wait_le_15         INTEGER NOT NULL DEFAULT 0,
    wait_le_20         INTEGER NOT NULL DEFAULT 0,
    wait_le_25         INTEGER NOT NULL DEFAULT 0,
    wait_le_30         INTEGER NOT NULL DEFAULT 0,
    wait_le_40         INTEGER NOT NULL DEFAULT 0,
    wait_le_50         INTEGER NOT NULL DEFAULT 0,
    wait_le_60         INTEGER NOT NULL DEFAULT 0,
    wait_le_75         INTEGER NOT NULL DEFAULT 0,
    wait_le_90         INTEGER NOT NULL DEFAULT 0,
    wait_le_120        INTEGER NOT NULL DEFAULT 0,
    wait_le_150        INTEGER NOT NULL DEFAULT 0,
    wait_le_180        INTEGER NOT NULL DEFAULT 0,
    wait_le_240        INTEGER NOT NULL DEFAULT 0,
    wait_le_300        INTEGER NOT NULL DEFAULT 0,
    wait_le_450        INTEGER NOT NULL DEFAULT 0,
    wait_le_600        INTEGER NOT NULL DEFAULT 0,
    wait_le_900        INTEGER NOT NULL DEFAULT 0,
    wait_le_1200       INTEGER NOT NULL DEFAULT 0,
    wait_le_1800       INTEGER NOT NULL DEFAULT 0,
    wait_le_3600       INTEGER NOT NULL DEFAULT 0,
    wait_le_86400      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dim, local_day, dim_key)
) WITHOUT ROWID;

-- called-back calls per delay from the end of the missed call to the callback, in whole minutes
-- rounded up (the callback window's unit, so "within N minutes" is exact for any N); delays over
-- 10080 minutes (the longest window) in 10081
CREATE TABLE call_rollup_callbacks (
    dim       TEXT NOT NULL,
    local_day TEXT NOT NULL,
    dim_key   TEXT NOT NULL,
    weekday   INTEGER NOT NULL,
    minutes   INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (dim, local_day, dim_key, minutes)
) WITHOUT ROWID;

-- the zone the facts' local days and the rollups are in; none yet: rebuilt at the next start
CREATE TABLE call_rollup_zone (zone TEXT NOT NULL);
