-- PostgreSQL: SQLite functions the store's SQL calls, under their SQLite names (see crm_link/dialect.py).
-- Applied before the migrations on every start; every statement is idempotent.

CREATE EXTENSION IF NOT EXISTS unaccent;

-- SQLite's COLLATE NOCASE: equality and uniqueness ignore case
CREATE COLLATION IF NOT EXISTS nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);

CREATE OR REPLACE FUNCTION json_valid(doc text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM doc::json;
    RETURN true;
EXCEPTION WHEN others THEN
    RETURN false;
END $$;

-- '$.a.b' and '$[0].a' paths (array indexes become path elements, which #>> takes as indexes);
-- a JSON string comes back unquoted, other values as JSON text
CREATE OR REPLACE FUNCTION json_extract(doc text, path text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN path = '$' THEN doc
                ELSE doc::jsonb #>> string_to_array(
                    substr(regexp_replace(substr(path, 2), '\[([0-9]+)\]', '.\1', 'g'), 2), '.') END
$$;
CREATE OR REPLACE FUNCTION json_extract(doc json, path text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT json_extract(doc::text, path)
$$;

-- RFC 7396 merge patch, as SQLite's json_patch
CREATE OR REPLACE FUNCTION json_patch_jsonb(target jsonb, patch jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
    v jsonb;
BEGIN
    IF jsonb_typeof(patch) IS DISTINCT FROM 'object' THEN
        RETURN patch;
    END IF;
    IF jsonb_typeof(target) IS DISTINCT FROM 'object' THEN
        target := '{}'::jsonb;
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(patch) LOOP
        IF jsonb_typeof(v) = 'null' THEN
            target := target - k;
        ELSE
            target := jsonb_set(target, ARRAY[k], json_patch_jsonb(target -> k, v));
        END IF;
    END LOOP;
    RETURN target;
END $$;
CREATE OR REPLACE FUNCTION json_patch(target text, patch text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT json_patch_jsonb(target::jsonb, patch::jsonb)::text
$$;

-- json_group_array(x): '[]' over no rows (json_agg gives NULL)
CREATE OR REPLACE FUNCTION json_group_array_final(acc anycompatiblearray) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(array_to_json(acc)::text, '[]')
$$;
CREATE OR REPLACE AGGREGATE json_group_array(anycompatible) (
    SFUNC = array_append, STYPE = anycompatiblearray, FINALFUNC = json_group_array_final
);
CREATE OR REPLACE FUNCTION json_group_object_step(acc jsonb, k text, v anyelement) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(acc, '{}'::jsonb) || jsonb_build_object(k, v)
$$;
CREATE OR REPLACE FUNCTION json_group_object_final(acc jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(acc, '{}'::jsonb)::text
$$;
CREATE OR REPLACE AGGREGATE json_group_object(text, anyelement) (
    SFUNC = json_group_object_step, STYPE = jsonb, FINALFUNC = json_group_object_final
);

CREATE OR REPLACE FUNCTION randomblob(n integer) RETURNS bytea LANGUAGE sql VOLATILE AS $$
    SELECT substring(decode(string_agg(replace(gen_random_uuid()::text, '-', ''), ''), 'hex') FROM 1 FOR n)
    FROM generate_series(1, (n + 15) / 16)
$$;
CREATE OR REPLACE FUNCTION hex(b bytea) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT upper(encode(b, 'hex'))
$$;

-- an FTS5 query of the form the store writes ("word"* "word"* …) as a prefix tsquery, all words required
CREATE OR REPLACE FUNCTION fts5_query(q text) RETURNS tsquery LANGUAGE sql STABLE AS $$
    SELECT to_tsquery('simple', COALESCE(string_agg(
        quote_literal(lower(unaccent(m[1]))) || ':*', ' & '), ''))
    FROM regexp_matches(q, '"([^"]+)"', 'g') AS m
$$;

-- comparing text with a number, as SQLite compares json_extract's result with a numeric parameter:
-- numerically when the text is a number, else the text is the greater (SQLite sorts TEXT after numbers)
CREATE OR REPLACE FUNCTION sqlite_number(t text) RETURNS numeric LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN t::numeric;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION sqlite_compare(a text, b numeric) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN a IS NULL OR b IS NULL THEN NULL
                WHEN sqlite_number(a) IS NULL THEN 1
                ELSE sign(sqlite_number(a) - b)::integer END
$$;
DO $$
DECLARE
    typ text;
    r record;
    fn text;
BEGIN
    FOREACH typ IN ARRAY ARRAY['numeric', 'double precision'] LOOP
        FOR r IN SELECT * FROM (VALUES ('=', 'eq'), ('<>', 'ne'), ('<', 'lt'), ('<=', 'le'), ('>', 'gt'),
                                       ('>=', 'ge')) AS v (op, name) LOOP
            fn := format('sqlite_text_%s_%s', r.name, CASE typ WHEN 'numeric' THEN 'numeric' ELSE 'float' END);
            EXECUTE format('CREATE OR REPLACE FUNCTION %I(a text, b %s) RETURNS boolean LANGUAGE sql IMMUTABLE'
                           ' AS $f$ SELECT sqlite_compare(a, b::numeric) %s 0 $f$', fn, typ, r.op);
            IF NOT EXISTS (SELECT 1 FROM pg_operator WHERE oprname = r.op AND oprleft = 'text'::regtype
                           AND oprright = typ::regtype) THEN
                EXECUTE format('CREATE OPERATOR %s (LEFTARG = text, RIGHTARG = %s, FUNCTION = %I)', r.op, typ, fn);
            END IF;
        END LOOP;
    END LOOP;
END $$;

-- sum(a = b): SQLite sums a comparison as 0/1; NULLs are skipped and no rows give NULL, as sum does
CREATE OR REPLACE FUNCTION sqlite_bool_sum_step(acc bigint, b boolean) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN b IS NULL THEN acc ELSE COALESCE(acc, 0) + b::integer END
$$;
CREATE OR REPLACE AGGREGATE sum(boolean) (SFUNC = sqlite_bool_sum_step, STYPE = bigint);
