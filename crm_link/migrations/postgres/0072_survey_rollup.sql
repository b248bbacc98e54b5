-- PostgreSQL form of ../0072_survey_rollup.sql: the same two rollup tables, kept equal to
-- survey_responses by one plpgsql trigger function (json_each -> json_array_elements_text,
-- boolean -> integer with ::int) instead of SQLite's three triggers.

CREATE TABLE survey_day_totals (
    survey_id   BIGINT NOT NULL,
    day         TEXT NOT NULL,
    agent_id    BIGINT NOT NULL,
    list_id     BIGINT NOT NULL,
    responses   BIGINT NOT NULL DEFAULT 0,
    unreachable BIGINT NOT NULL DEFAULT 0,
    satisfied   BIGINT NOT NULL DEFAULT 0,
    scored      BIGINT NOT NULL DEFAULT 0,
    score_sum   DOUBLE PRECISION NOT NULL DEFAULT 0,
    score_n     BIGINT NOT NULL DEFAULT 0,
    promoters   BIGINT NOT NULL DEFAULT 0,
    detractors  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (survey_id, day, agent_id, list_id)
);

CREATE TABLE survey_day_reasons (
    survey_id BIGINT NOT NULL,
    day       TEXT NOT NULL,
    reason    TEXT NOT NULL,
    n         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (survey_id, day, reason)
);

INSERT INTO survey_day_totals (survey_id, day, agent_id, list_id, responses, unreachable, satisfied, scored, score_sum, score_n, promoters, detractors)
SELECT r.survey_id, substr(r.answered_at, 1, 10), COALESCE(r.agent_id, 0), COALESCE(r.list_id, 0),
    SUM((r.status = 'completed')::int), SUM((r.status = 'unreachable')::int), COALESCE(SUM((r.satisfied = 1)::int), 0),
    SUM((r.satisfied IS NOT NULL)::int), COALESCE(SUM(r.score), 0), COUNT(r.score), COALESCE(SUM((r.score >= 9)::int), 0),
    COALESCE(SUM((r.score <= 6)::int), 0)
FROM survey_responses r GROUP BY 1, 2, 3, 4;

INSERT INTO survey_day_reasons (survey_id, day, reason, n)
SELECT r.survey_id, substr(r.answered_at, 1, 10), j.value, count(*)
FROM survey_responses r, json_array_elements_text(r.reasons::json) j(value) WHERE r.status = 'completed' GROUP BY 1, 2, 3;

-- add (sign 1) or take away (sign -1) one response's share of the rollup
CREATE FUNCTION survey_rollup_apply(r survey_responses, sign int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO survey_day_totals AS t (survey_id, day, agent_id, list_id, responses, unreachable, satisfied, scored, score_sum, score_n, promoters, detractors)
    VALUES (r.survey_id, substr(r.answered_at, 1, 10), COALESCE(r.agent_id, 0), COALESCE(r.list_id, 0),
        sign * (r.status = 'completed')::int, sign * (r.status = 'unreachable')::int,
        sign * COALESCE((r.satisfied = 1)::int, 0), sign * (r.satisfied IS NOT NULL)::int,
        sign * COALESCE(r.score, 0), sign * (r.score IS NOT NULL)::int,
        sign * COALESCE((r.score >= 9)::int, 0), sign * COALESCE((r.score <= 6)::int, 0))
    ON CONFLICT (survey_id, day, agent_id, list_id) DO UPDATE SET
        responses = t.responses + excluded.responses, unreachable = t.unreachable + excluded.unreachable,
        satisfied = t.satisfied + excluded.satisfied, scored = t.scored + excluded.scored,
        score_sum = t.score_sum + excluded.score_sum, score_n = t.score_n + excluded.score_n,
        promoters = t.promoters + excluded.promoters, detractors = t.detractors + excluded.detractors;
    IF r.status = 'completed' THEN
        INSERT INTO survey_day_reasons AS d (survey_id, day, reason, n)
        SELECT r.survey_id, substr(r.answered_at, 1, 10), j.value, sign
        FROM json_array_elements_text(r.reasons::json) j(value)
        ON CONFLICT (survey_id, day, reason) DO UPDATE SET n = d.n + excluded.n;
    END IF;
END $$;

CREATE FUNCTION survey_rollup_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM survey_rollup_apply(OLD, -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM survey_rollup_apply(NEW, 1);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER survey_rollup_insert AFTER INSERT OR DELETE ON survey_responses
    FOR EACH ROW EXECUTE FUNCTION survey_rollup_trigger();
CREATE TRIGGER survey_rollup_update
    AFTER UPDATE OF survey_id, status, score, satisfied, reasons, agent_id, list_id, answered_at ON survey_responses
    FOR EACH ROW EXECUTE FUNCTION survey_rollup_trigger();
