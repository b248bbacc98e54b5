-- Surveys (issue 14): a questionnaire and its versions (editing makes a new one), responses that keep
-- the version they answered, locked answers whose corrections are versions with who/when/why, and
-- the dissatisfaction follow-up with its resolution.

CREATE TABLE surveys (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE COLLATE NOCASE,
    current_version INTEGER NOT NULL DEFAULT 1,
    active          INTEGER NOT NULL DEFAULT 1,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

CREATE TABLE survey_versions (
    survey_id  INTEGER NOT NULL REFERENCES surveys (id) ON DELETE CASCADE,
    version    INTEGER NOT NULL,
    spec       TEXT NOT NULL CHECK (json_valid(spec)),
    created_by INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (survey_id, version)
);

-- status: completed (answers given) or unreachable (the last attempt of its call list failed);
-- source_key makes each response once: call:<id>, attempt:<id>, unreachable:<entry id>, sms:<id>
CREATE TABLE survey_responses (
    id                    INTEGER PRIMARY KEY,
    survey_id             INTEGER NOT NULL REFERENCES surveys (id) ON DELETE CASCADE,
    survey_version        INTEGER NOT NULL,
    source_key            TEXT NOT NULL UNIQUE,
    contact_id            INTEGER REFERENCES contacts (id) ON DELETE SET NULL,
    channel               TEXT NOT NULL DEFAULT 'call' CHECK (channel IN ('call', 'sms', 'web')),
    status                TEXT NOT NULL CHECK (status IN ('completed', 'unreachable')),
    call_id               TEXT,
    attempt_id            INTEGER REFERENCES call_attempts (id) ON DELETE SET NULL,
    list_id               INTEGER REFERENCES call_lists (id) ON DELETE SET NULL,
    touch_id              INTEGER REFERENCES touches (id) ON DELETE SET NULL,
    agent_id              INTEGER REFERENCES users (id) ON DELETE SET NULL,
    answers               TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(answers)),
    answers_version       INTEGER NOT NULL DEFAULT 1,
    score                 REAL,
    satisfied             INTEGER,
    dissatisfied          INTEGER NOT NULL DEFAULT 0,
    reasons               TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(reasons)),
    followup_id           INTEGER REFERENCES followups (id) ON DELETE SET NULL,
    resolution            TEXT,
    resolution_satisfied  INTEGER,
    resolved_by           INTEGER REFERENCES users (id) ON DELETE SET NULL,
    resolved_at           TEXT,
    answered_at           TEXT NOT NULL,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL
);
CREATE UNIQUE INDEX survey_responses_call ON survey_responses (call_id) WHERE call_id IS NOT NULL;
CREATE UNIQUE INDEX survey_responses_attempt ON survey_responses (attempt_id) WHERE attempt_id IS NOT NULL;
-- the report: one survey's responses in a period, by agent / list / month
CREATE INDEX survey_responses_report ON survey_responses
    (survey_id, answered_at, status, satisfied, score, agent_id, list_id);
CREATE INDEX survey_responses_contact ON survey_responses (contact_id, answered_at);

-- every version of a response's answers: 1 as given, then each manager's correction
CREATE TABLE survey_answer_versions (
    response_id INTEGER NOT NULL REFERENCES survey_responses (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    answers     TEXT NOT NULL CHECK (json_valid(answers)),
    changed_by  INTEGER REFERENCES users (id) ON DELETE SET NULL,
    changed_at  TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (response_id, version)
);

ALTER TABLE call_lists ADD COLUMN survey_id INTEGER REFERENCES surveys (id) ON DELETE SET NULL;
