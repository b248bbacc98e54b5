-- The survey report's exact rollup (issue 14 bench: a year of 100k responses in p95 <= 300 ms).
-- Per survey, UTC day (the first 10 characters of answered_at), agent and list (0 for none): the
-- counts and sums every figure of the report is made of; and per survey and UTC day, how often each
-- reason was given. Triggers keep them equal to survey_responses on every insert, correction and
-- delete, so they are never stale; the report adds whole UTC days from here and reads the few
-- responses of the partial days at a period's (or a local month's) edges from survey_responses.
-- WITHOUT ROWID: the rows are stored in key order, so a survey's days are one range read.

CREATE TABLE survey_day_totals (
    survey_id   INTEGER NOT NULL,
    day         TEXT NOT NULL,
    agent_id    INTEGER NOT NULL,
    list_id     INTEGER NOT NULL,
    responses   INTEGER NOT NULL DEFAULT 0,
    unreachable INTEGER NOT NULL DEFAULT 0,
    satisfied   INTEGER NOT NULL DEFAULT 0,
    scored      INTEGER NOT NULL DEFAULT 0,
    score_sum   REAL NOT NULL DEFAULT 0,
    score_n     INTEGER NOT NULL DEFAULT 0,
    promoters   INTEGER NOT NULL DEFAULT 0,
    detractors  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (survey_id, day, agent_id, list_id)
) WITHOUT ROWID;

CREATE TABLE survey_day_reasons (
    survey_id INTEGER NOT NULL,
    day       TEXT NOT NULL,
    reason    TEXT NOT NULL,
    n         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (survey_id, day, reason)
) WITHOUT ROWID;

INSERT INTO survey_day_totals (survey_id, day, agent_id, list_id, responses, unreachable, satisfied, scored, score_sum, score_n, promoters, detractors)
SELECT r.survey_id, substr(r.answered_at, 1, 10), COALESCE(r.agent_id, 0), COALESCE(r.list_id, 0),
    SUM(r.status = 'completed'), SUM(r.status = 'unreachable'), COALESCE(SUM(r.satisfied = 1), 0),
    SUM(r.satisfied IS NOT NULL), COALESCE(SUM(r.score), 0), COUNT(r.score), COALESCE(SUM(r.score >= 9), 0),
    COALESCE(SUM(r.score <= 6), 0)
FROM survey_responses r GROUP BY 1, 2, 3, 4;

INSERT INTO survey_day_reasons (survey_id, day, reason, n)
SELECT r.survey_id, substr(r.answered_at, 1, 10), j.value, count(*)
FROM survey_responses r, json_each(r.reasons) j WHERE r.status = 'completed' GROUP BY 1, 2, 3;

CREATE TRIGGER survey_rollup_insert AFTER INSERT ON survey_responses BEGIN
    INSERT INTO survey_day_totals (survey_id, day, agent_id, list_id, responses, unreachable, satisfied, scored, score_sum, score_n, promoters, detractors)
    VALUES (NEW.survey_id, substr(NEW.answered_at, 1, 10), COALESCE(NEW.agent_id, 0), COALESCE(NEW.list_id, 0),
        (NEW.status = 'completed'), (NEW.status = 'unreachable'), COALESCE(NEW.satisfied = 1, 0), (NEW.satisfied IS NOT NULL), COALESCE(NEW.score, 0), (NEW.score IS NOT NULL), COALESCE(NEW.score >= 9, 0), COALESCE(NEW.score <= 6, 0))
    ON CONFLICT (survey_id, day, agent_id, list_id) DO UPDATE SET responses = responses + excluded.responses, unreachable = unreachable + excluded.unreachable, satisfied = satisfied + excluded.satisfied, scored = scored + excluded.scored, score_sum = score_sum + excluded.score_sum, score_n = score_n + excluded.score_n, promoters = promoters + excluded.promoters, detractors = detractors + excluded.detractors;
    INSERT INTO survey_day_reasons (survey_id, day, reason, n)
    SELECT NEW.survey_id, substr(NEW.answered_at, 1, 10), j.value, 1 FROM json_each(NEW.reasons) j
    WHERE NEW.status = 'completed'
    ON CONFLICT (survey_id, day, reason) DO UPDATE SET n = n + excluded.n;
END;

CREATE TRIGGER survey_rollup_delete AFTER DELETE ON survey_responses BEGIN
    INSERT INTO survey_day_totals (survey_id, day, agent_id, list_id, responses, unreachable, satisfied, scored, score_sum, score_n, promoters, detractors)
    VALUES (OLD.survey_id, substr(OLD.answered_at, 1, 10), COALESCE(OLD.agent_id, 0), COALESCE(OLD.list_id, 0),
        -(OLD.status = 'completed'), -(OLD.status = 'unreachable'), -COALESCE(OLD.satisfied = 1, 0), -(OLD.satisfied IS NOT NULL), -COALESCE(OLD.score, 0), -(OLD.score IS NOT NULL), -COALESCE(OLD.score >= 9, 0), -COALESCE(OLD.score <= 6, 0))
    ON CONFLICT (survey_id, day, agent_id, list_id) DO UPDATE SET responses = responses + excluded.responses, unreachable = unreachable + excluded.unreachable, satisfied = satisfied + excluded.satisfied, scored = scored + excluded.scored, score_sum = score_sum + excluded.score_sum, score_n = score_n + excluded.score_n, promoters = promoters + excluded.promoters, detractors = detractors + excluded.detractors;
    INSERT INTO survey_day_reasons (survey_id, day, reason, n)
    SELECT OLD.survey_id, substr(OLD.answered_at, 1, 10), j.value, -1 FROM json_each(OLD.reasons) j
    WHERE OLD.status = 'completed'
    ON CONFLICT (survey_id, day, reason) DO UPDATE SET n = n + excluded.n;
END;

CREATE TRIGGER survey_rollup_update
AFTER UPDATE OF survey_id, status, score, satisfied, reasons, agent_id, list_id, answered_at ON survey_responses
BEGIN
    INSERT INTO survey_day_totals (survey_id, day, agent_id, list_id, responses, unreachable, satisfied, scored, score_sum, score_n, promoters, detractors)
    VALUES (OLD.survey_id, substr(OLD.answered_at, 1, 10), COALESCE(OLD.agent_id, 0), COALESCE(OLD.list_id, 0),
        -(OLD.status = 'completed'), -(OLD.status = 'unreachable'), -COALESCE(OLD.satisfied = 1, 0), -(OLD.satisfied IS NOT NULL), -COALESCE(OLD.score, 0), -(OLD.score IS NOT NULL), -COALESCE(OLD.score >= 9, 0), -COALESCE(OLD.score <= 6, 0))
    ON CONFLICT (survey_id, day, agent_id, list_id) DO UPDATE SET responses = responses + excluded.responses, unreachable = unreachable + excluded.unreachable, satisfied = satisfied + excluded.satisfied, scored = scored + excluded.scored, score_sum = score_sum + excluded.score_sum, score_n = score_n + excluded.score_n, promoters = promoters + excluded.promoters, detractors = detractors + excluded.detractors;
    INSERT INTO survey_day_reasons (survey_id, day, reason, n)
    SELECT OLD.survey_id, substr(OLD.answered_at, 1, 10), j.value, -1 FROM json_each(OLD.reasons) j
    WHERE OLD.status = 'completed'
    ON CONFLICT (survey_id, day, reason) DO UPDATE SET n = n + excluded.n;
    INSERT INTO survey_day_totals (survey_id, day, agent_id, list_id, responses, unreachable, satisfied, scored, score_sum, score_n, promoters, detractors)
    VALUES (NEW.survey_id, substr(NEW.answered_at, 1, 10), COALESCE(NEW.agent_id, 0), COALESCE(NEW.list_id, 0),
        (NEW.status = 'completed'), (NEW.status = 'unreachable'), COALESCE(NEW.satisfied = 1, 0), (NEW.satisfied IS NOT NULL), COALESCE(NEW.score, 0), (NEW.score IS NOT NULL), COALESCE(NEW.score >= 9, 0), COALESCE(NEW.score <= 6, 0))
    ON CONFLICT (survey_id, day, agent_id, list_id) DO UPDATE SET responses = responses + excluded.responses, unreachable = unreachable + excluded.unreachable, satisfied = satisfied + excluded.satisfied, scored = scored + excluded.scored, score_sum = score_sum + excluded.score_sum, score_n = score_n + excluded.score_n, promoters = promoters + excluded.promoters, detractors = detractors + excluded.detractors;
    INSERT INTO survey_day_reasons (survey_id, day, reason, n)
    SELECT NEW.survey_id, substr(NEW.answered_at, 1, 10), j.value, 1 FROM json_each(NEW.reasons) j
    WHERE NEW.status = 'completed'
    ON CONFLICT (survey_id, day, reason) DO UPDATE SET n = n + excluded.n;
END;
