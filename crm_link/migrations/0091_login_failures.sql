-- Failed sign-ins, kept in the store so that every instance on it counts the same ones: one row per
-- wrong password (or unknown account), by client address and by the account name tried. An address
-- is judged by its rows of the last minute, an account by its rows not yet cleared by a sign-in;
-- rows older than the account window (a day) are pruned as new ones come.
CREATE TABLE login_failures (
    id       INTEGER PRIMARY KEY,
    address  TEXT NOT NULL,
    account  TEXT NOT NULL,
    at       TEXT NOT NULL,
    cleared  INTEGER NOT NULL DEFAULT 0  -- 1 once the account signed in after this failure
);
CREATE INDEX login_failures_address ON login_failures (address, at);
CREATE INDEX login_failures_account ON login_failures (account, at) WHERE cleared = 0;
CREATE INDEX login_failures_at ON login_failures (at);

-- The addresses an account signed in from lately (its few newest): spared the account's delay.
CREATE TABLE login_known_addresses (
    account  TEXT NOT NULL,
    address  TEXT NOT NULL,
    at       TEXT NOT NULL,  -- the latest sign-in from there
    PRIMARY KEY (account, address)
);
