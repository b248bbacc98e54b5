"""SQLite-style SQL to PostgreSQL: placeholders and the handful of idioms the store writes.

The store's SQL is written once, in SQLite's dialect (`?` placeholders, `IS ?`, scalar `max(a, b)`,
ASCII-case-insensitive `LIKE`, `json_object`, `INSERT OR IGNORE`, FTS5 `MATCH`). On PostgreSQL each
statement passes through `to_postgres` once (cached). Functions SQLite has and PostgreSQL lacks
(`json_extract`, `json_patch`, `json_valid`, `json_group_array`, `json_group_object`, `randomblob`,
`hex`) are defined in PostgreSQL by `pg_compat.sql` under the same names, so they need no rewrite.

Nothing inside a string literal, a quoted identifier or a comment is changed, except that `%` is
doubled (psycopg reads `%` everywhere in a statement that has parameters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from crm_link.errors import StoreError


class TranslationError(StoreError):
    """A statement uses SQLite SQL that has no faithful PostgreSQL form here."""


_TOKEN = re.compile(
    r"""
    (?P<str>'(?:[^']|'')*'?)
   |(?P<qid>"(?:[^"]|"")*"?)
   |(?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
   |(?P<param>\?)
   |(?P<word>[A-Za-z_][A-Za-z0-9_$]*)
   |(?P<num>[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)
   |(?P<space>\s+)
   |(?P<op>\|\||<>|!=|<=|>=|::|.)
    """,
    re.S | re.X,
)


@dataclass(slots=True)
class _Tok:
    kind: str
    text: str

    @property
    def up(self) -> str:
        return self.text.upper() if self.kind == "word" else self.text


def tokenize(sql: str) -> list[_Tok]:
    """The statement as tokens; joining their texts gives the statement back exactly."""
    out = []
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup
        assert kind is not None
        out.append(_Tok(kind, m.group()))
    return out


_IS_KEEP = {"NULL", "TRUE", "FALSE", "UNKNOWN", "DISTINCT", "NOT"}
_RENAME = {"JSON_OBJECT": "json_build_object", "JSON_ARRAY": "json_build_array"}
# words that may follow a FROM-subquery and are not its alias (PostgreSQL before 16 wants one)
_NOT_ALIAS = {
    "WHERE", "GROUP", "ORDER", "LIMIT", "OFFSET", "JOIN", "LEFT", "RIGHT", "INNER", "CROSS", "FULL",
    "NATURAL", "ON", "USING", "UNION", "EXCEPT", "INTERSECT", "HAVING", "WINDOW", "RETURNING", "FOR",
}  # fmt: skip
_DDL_TYPES = {"REAL": "DOUBLE PRECISION", "INTEGER": "BIGINT", "BLOB": "BYTEA"}


def _next(toks: list[_Tok], i: int) -> int:
    """Index of the next significant token after i (len(toks) when none)."""
    i += 1
    while i < len(toks) and toks[i].kind in ("space", "comment"):
        i += 1
    return i


def _prev(toks: list[_Tok], i: int) -> int:
    i -= 1
    while i >= 0 and toks[i].kind in ("space", "comment"):
        i -= 1
    return i


def _close(toks: list[_Tok], open_at: int) -> tuple[int, int]:
    """(index of the `)` matching the `(` at open_at, number of top-level commas inside)."""
    depth, commas = 0, 0
    for j in range(open_at, len(toks)):
        t = toks[j].text
        if toks[j].kind != "op":
            continue
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
            if depth == 0:
                return j, commas
        elif t == "," and depth == 1:
            commas += 1
    raise TranslationError("unbalanced parentheses in SQL")


@lru_cache(maxsize=4096)
def to_postgres(sql: str, *, ddl: bool = False, params: bool = True) -> str:
    """The PostgreSQL form of one SQLite-style statement (or, with ddl=True, a migration script).

    params=True: `?` becomes `%s` and every `%` is doubled, as psycopg wants when parameters are passed.
    """
    toks = tokenize(sql)
    n = len(toks)
    insert_or_ignore = False
    aliases = 0
    last: list[tuple[int, str]] = []  # (token, text) set once the pass is over
    for i, t in enumerate(toks):
        up = t.up
        if up == "IN" and t.kind == "word":
            _locking_in(toks, i, last)
        if t.kind == "param":
            if params:
                t.text = "%s"
                # `? IS NULL` (an optional filter): PostgreSQL cannot type a lone NULL parameter
                j = _next(toks, i)
                k = _next(toks, j)
                if j < n and toks[j].up == "IS" and k < n and toks[k].up == "NOT":
                    k = _next(toks, k)
                if j < n and toks[j].up == "IS" and k < n and toks[k].up == "NULL":
                    t.text = "%s::text"
        elif t.kind == "word":
            if up == "IS":
                j = _next(toks, i)
                negate = j < n and toks[j].up == "NOT"
                k = _next(toks, j) if negate else j
                if k < n and toks[k].up not in _IS_KEEP:
                    t.text = "IS DISTINCT FROM" if negate else "IS NOT DISTINCT FROM"
                    if negate:
                        toks[j].text = ""
                        if toks[j + 1].kind == "space" and j + 1 < k:
                            toks[j + 1].text = ""
            elif up in ("MAX", "MIN"):
                p, j = _prev(toks, i), _next(toks, i)
                if (p < 0 or toks[p].text != ".") and j < n and toks[j].text == "(":
                    if _close(toks, j)[1] >= 1:
                        t.text = "GREATEST" if up == "MAX" else "LEAST"
            elif up == "LIKE":
                t.text = "ILIKE"
            elif up == "GLOB":
                j = _next(toks, i)
                if j >= n or toks[j].kind != "str":
                    raise TranslationError("GLOB takes a literal pattern here; use LIKE with a parameter")
                t.text = "~"
                toks[j].text = (
                    "'" + _glob_regex(toks[j].text[1:-1].replace("''", "'")).replace("'", "''") + "'"
                )
            elif up == "DO" and _next(toks, i) < n and toks[_next(toks, i)].up == "UPDATE":
                _qualify_upsert(toks, i)
            elif up in _RENAME:
                j = _next(toks, i)
                if j < n and toks[j].text == "(":
                    t.text = _RENAME[up]
            elif up == "MATCH":
                p = _prev(toks, i)
                if p < 0 or toks[p].kind != "word":
                    raise TranslationError("MATCH must follow the full-text table's name")
                toks[p].text = f"{toks[p].text}.tsv"
                t.text = "@@"
                j = _next(toks, i)
                if j >= n:
                    raise TranslationError("MATCH needs a query")
                arg = "%s" if toks[j].kind == "param" and params else toks[j].text
                toks[j] = _Tok("done", f"fts5_query({arg})")
            elif up == "OR" and _prev(toks, i) >= 0 and toks[_prev(toks, i)].up == "INSERT":
                j = _next(toks, i)
                what = toks[j].up if j < n else ""
                if what == "IGNORE":
                    insert_or_ignore = True
                    t.text = ""
                    toks[j].text = ""
                    if toks[i - 1].kind == "space":
                        toks[i - 1].text = ""
                    if toks[i + 1].kind == "space":
                        toks[i + 1].text = ""
                elif what in ("REPLACE", "ROLLBACK", "ABORT", "FAIL"):
                    raise TranslationError(
                        f"INSERT OR {what} has no PostgreSQL form; write INSERT … ON CONFLICT (…) DO UPDATE"
                    )
            elif up == "IMMEDIATE" and _prev(toks, i) >= 0 and toks[_prev(toks, i)].up == "BEGIN":
                t.text = ""
            elif up in ("FROM", "JOIN"):
                j = _next(toks, i)
                if (
                    j < n
                    and toks[j].text == "("
                    and _next(toks, j) < n
                    and toks[_next(toks, j)].up == "SELECT"
                ):
                    end, _ = _close(toks, j)
                    after = _next(toks, end)
                    if after >= n or toks[after].kind != "word" or toks[after].up in _NOT_ALIAS:
                        aliases += 1
                        toks[end].text += f" AS _sq{aliases}"
            elif ddl and up in _DDL_TYPES:
                t.text = _DDL_TYPES[up]
                if up == "INTEGER":
                    _integer_primary_key(toks, i)
            elif up == "INTEGER" and (p := _prev(toks, i)) >= 0 and toks[p].up == "AS":
                # CAST(x AS INTEGER): SQLite's integer is 64-bit, PostgreSQL's INTEGER is int4
                t.text = "BIGINT"
            elif ddl and up == "WITHOUT":
                j = _next(toks, i)
                if j < n and toks[j].up == "ROWID":
                    t.text = toks[j].text = ""
        if params and t.kind not in ("param", "done") and "%" in t.text:
            t.text = t.text.replace("%", "%%")
    for at, text in last:
        toks[at].text = text
    out = "".join(t.text for t in toks)
    if insert_or_ignore:
        out = _append_on_conflict(out)
    return out


def _locking_in(toks: list[_Tok], in_at: int, last: list[tuple[int, str]]) -> None:
    """`x IN (SELECT … FOR UPDATE … SKIP LOCKED)` becomes `x = ANY(ARRAY(SELECT …))`.

    Under IN, PostgreSQL may scan the subquery again for each outer row; each scan would pass over
    the rows the last one locked (and this statement has just updated) and take more, so a claim
    with LIMIT n could take every row. ARRAY(…) is computed once, before the outer statement runs.
    """
    n = len(toks)
    j = _next(toks, in_at)
    if j >= n or toks[j].text != "(" or _next(toks, j) >= n or toks[_next(toks, j)].up != "SELECT":
        return
    end, _ = _close(toks, j)
    locked = _prev(toks, end)
    skip = _prev(toks, locked)
    if not (toks[locked].up == "LOCKED" and skip >= 0 and toks[skip].up == "SKIP"):
        return
    p = _prev(toks, in_at)
    if p >= 0 and toks[p].up == "NOT":
        raise TranslationError("NOT IN over a locking subquery has no faithful PostgreSQL form here")
    last += [(in_at, "= ANY"), (j, "(ARRAY("), (end, "))")]


_SQL_WORDS = {
    "AND", "OR", "NOT", "NULL", "IS", "DISTINCT", "FROM", "CASE", "WHEN", "THEN", "ELSE", "END", "IN",
    "LIKE", "ILIKE", "BETWEEN", "TRUE", "FALSE", "SET", "WHERE", "AS", "EXISTS", "SELECT", "CAST",
    "TEXT", "INTEGER", "BIGINT", "REAL", "ESCAPE", "UPDATE", "DO", "EXCLUDED", "COLLATE", "NOCASE",
}  # fmt: skip


def _qualify_upsert(toks: list[_Tok], do_at: int) -> None:
    """In `ON CONFLICT … DO UPDATE SET a = f(a, excluded.a)`, a bare `a` on the right means the
    existing row in SQLite; PostgreSQL calls that ambiguous, so it becomes `<table>.a`."""
    table = None
    for j in range(do_at):
        if toks[j].up == "INTO":
            k = _next(toks, j)
            table = toks[k].text if k < len(toks) else None
            break
    if table is None:
        return
    depth = 0
    j = _next(toks, _next(toks, do_at))  # past UPDATE
    while j < len(toks):
        t = toks[j]
        if t.kind == "op" and t.text == "(":
            k = _next(toks, j)
            if k < len(toks) and toks[k].up == "SELECT":
                j = _close(toks, j)[0] + 1
                continue
            depth += 1
        elif t.kind == "op" and t.text == ")":
            depth -= 1
        elif depth == 0 and t.up == "RETURNING":
            return
        elif t.kind == "word" and t.up not in _SQL_WORDS:
            p, k = _prev(toks, j), _next(toks, j)
            qualified = p >= 0 and toks[p].text == "."
            has_dot = k < len(toks) and toks[k].text == "."
            is_call = k < len(toks) and toks[k].text == "("
            is_target = k < len(toks) and toks[k].text == "=" and p >= 0 and toks[p].up in ("SET", ",")
            if not (qualified or has_dot or is_call or is_target):
                t.text = f"{table}.{t.text}"
        j += 1


def _glob_regex(pattern: str) -> str:
    """A GLOB pattern as an anchored POSIX regular expression."""
    out, i = ["^"], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out) + "$"


def _integer_primary_key(toks: list[_Tok], i: int) -> None:
    """`INTEGER PRIMARY KEY [AUTOINCREMENT]` (SQLite's rowid alias) becomes an identity column."""
    j = _next(toks, i)
    k = _next(toks, j)
    if j < len(toks) and k < len(toks) and toks[j].up == "PRIMARY" and toks[k].up == "KEY":
        toks[i].text = "BIGINT GENERATED BY DEFAULT AS IDENTITY"
        a = _next(toks, k)
        if a < len(toks) and toks[a].up == "AUTOINCREMENT":
            toks[a].text = ""


def _append_on_conflict(sql: str) -> str:
    """`ON CONFLICT DO NOTHING` before a top-level RETURNING, else at the end."""
    toks = tokenize(sql)
    depth = 0
    for i, t in enumerate(toks):
        if t.kind == "op" and t.text == "(":
            depth += 1
        elif t.kind == "op" and t.text == ")":
            depth -= 1
        elif depth == 0 and t.up == "RETURNING":
            return (
                "".join(x.text for x in toks[:i])
                + "ON CONFLICT DO NOTHING "
                + "".join(x.text for x in toks[i:])
            )
    body = sql.rstrip()
    semi = body.endswith(";")
    return body.rstrip(";").rstrip() + " ON CONFLICT DO NOTHING" + (";" if semi else "")


def skip_locked(dialect: str, of: str | None = None) -> str:
    """What a claim's candidate SELECT ends with, so that claimers sharing the database take
    disjoint rows without waiting on each other: on PostgreSQL `FOR UPDATE [OF t] SKIP LOCKED`
    (a row another transaction is claiming is passed over, not waited for and then found taken);
    on SQLite nothing (its one writer already runs claims one at a time)."""
    if dialect != "postgres":
        return ""
    if of is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", of):
        raise TranslationError(f"FOR UPDATE OF takes a table name or alias, got {of!r}")
    return f" FOR UPDATE{f' OF {of}' if of else ''} SKIP LOCKED"
