"""Saved segments: a filter over contact fields, attributes, tags and history, stored as data.

A filter is JSON, never code. It compiles to one parameterised SQL condition over `contacts c`:

    {"all": [cond, ...]} | {"any": [cond, ...]} | {"not": cond} | cond
    cond = {"field": F, "op": OP, "value": V}
         | {"tag": "vip"}
         | {"touches": {"kind": "call", "direction": "inbound", "status": "answered"},
            "op": "count_gte" | "count_lte" | "any_within_days" | "none_within_days", "value": n}

F is one of the contact columns below or `attributes.<key>`. Date operators take "today" in the
dealer's time zone: `days_ago_between [a, b]` (a to b days ago, inclusive), `older_than_days n`,
`within_days n` (in the last n days), `anniversary_within_days n` (a birthday or purchase anniversary
today or in the next n days), `in_next_days n` (today to n days ahead: an insurance expiry),
`days_ago n` (exactly n days ago), `anniversary_this_week` / `anniversary_this_month` (value ignored:
month-day in this Monday-to-Sunday week / this calendar month).
"""

from __future__ import annotations

import builtins
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo

from crm_link.db import Database, one_row, to_db_time
from crm_link.errors import Conflict, NotFound, ValidationError
from crm_link.models import MAX_INT64, fits_int64

COLUMNS = {
    "first_name": "c.first_name",
    "last_name": "c.last_name",
    "email": "c.email",
    "time_zone": "c.time_zone",
    "created_at": "c.created_at",
    "do_not_call": "c.do_not_call",
    "sms_opt_out": "c.sms_opt_out",
    "email_opt_out": "c.email_opt_out",
    "owner": "(SELECT username FROM users WHERE id = c.owner_id)",
    "external_id": "c.external_id",
}
COMPARE = {"eq": "=", "ne": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
DATE_OPS = (
    "days_ago_between",
    "older_than_days",
    "within_days",
    "anniversary_within_days",
    "in_next_days",
    "days_ago",
    "anniversary_this_week",
    "anniversary_this_month",
)
OPS = (*COMPARE, "between", "in", "contains", "is_set", "not_set", *DATE_OPS)
TOUCH_OPS = ("count_gte", "count_lte", "any_within_days", "none_within_days")
_ATTR_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_CONDITIONS = 50


@dataclass(frozen=True, slots=True)
class Compiled:
    sql: str
    params: list[Any]


class _Compiler:
    def __init__(self, today: date) -> None:
        self.today = today
        self.params: list[Any] = []
        self.count = 0

    def node(self, f: Any, path: str) -> str:
        self.count += 1
        if self.count > MAX_CONDITIONS:
            raise ValidationError("filter", f"at most {MAX_CONDITIONS} conditions")
        if not isinstance(f, dict) or not f:
            raise ValidationError(path, 'must be an object such as {"field": ..., "op": ..., "value": ...}')
        if "all" in f or "any" in f:
            key = "all" if "all" in f else "any"
            items = f[key]
            if len(f) != 1 or not isinstance(items, list) or not items:
                raise ValidationError(f"{path}.{key}", "must be a non-empty list of conditions")
            joiner = " AND " if key == "all" else " OR "
            return "(" + joiner.join(self.node(x, f"{path}.{key}[{i}]") for i, x in enumerate(items)) + ")"
        if "not" in f:
            if len(f) != 1:
                raise ValidationError(f"{path}.not", "takes one condition")
            return f"(NOT {self.node(f['not'], f'{path}.not')})"
        if "tag" in f:
            tag = f["tag"]
            if len(f) != 1 or not isinstance(tag, str) or not tag.strip():
                raise ValidationError(f"{path}.tag", "must be a tag name")
            self.params.append(tag.strip())
            return "EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = ?)"
        if "touches" in f:
            return self.touches(f, path)
        return self.condition(f, path)

    def touches(self, f: dict[str, Any], path: str) -> str:
        what, op, value = f.get("touches"), f.get("op"), f.get("value")
        if set(f) - {"touches", "op", "value"}:
            raise ValidationError(path, f"unknown keys: {sorted(set(f) - {'touches', 'op', 'value'})}")
        if not isinstance(what, dict) or set(what) - {"kind", "direction", "status", "channel"}:
            raise ValidationError(f"{path}.touches", "may name kind, direction, status, channel")
        if op not in TOUCH_OPS:
            raise ValidationError(f"{path}.op", f"must be one of: {', '.join(TOUCH_OPS)}")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT64:
            raise ValidationError(f"{path}.value", "must be a whole number ≥ 0 (at most 19 digits)")
        where = ["x.contact_id = c.id"]
        params: list[Any] = []
        for key in ("kind", "direction", "status", "channel"):
            if key in what:
                if not isinstance(what[key], str):
                    raise ValidationError(f"{path}.touches.{key}", "must be text")
                where.append(f"x.{key} = ?")
                params.append(what[key])
        if op in ("any_within_days", "none_within_days"):
            since = datetime.combine(self.today - timedelta(days=value), datetime.min.time())
            where.append("x.started_at >= ?")
            params.append(since.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        self.params += params
        sub = " AND ".join(where)
        if op == "any_within_days":
            return f"EXISTS (SELECT 1 FROM touches x WHERE {sub})"
        if op == "none_within_days":
            return f"NOT EXISTS (SELECT 1 FROM touches x WHERE {sub})"
        self.params.append(value)
        sign = ">=" if op == "count_gte" else "<="
        return f"((SELECT count(*) FROM touches x WHERE {sub}) {sign} ?)"

    def column(self, name: Any, path: str) -> str:
        if not isinstance(name, str):
            raise ValidationError(f"{path}.field", "must be a field name")
        if name in COLUMNS:
            return COLUMNS[name]
        if name.startswith("attributes."):
            key = name.removeprefix("attributes.")
            if not _ATTR_KEY.match(key):
                raise ValidationError(
                    f"{path}.field", f"{key!r} is not an attribute name (letters, digits, _)"
                )
            return f"json_extract(c.attributes, '$.{key}')"
        known = ", ".join([*COLUMNS, "attributes.<key>"])
        raise ValidationError(f"{path}.field", f"unknown field {name!r}; one of: {known}")

    def condition(self, f: dict[str, Any], path: str) -> str:
        extra = set(f) - {"field", "op", "value"}
        if extra:
            raise ValidationError(path, f"unknown keys: {sorted(extra)}")
        col = self.column(f.get("field"), path)
        op, value = f.get("op", "eq"), f.get("value")
        vpath = f"{path}.value"
        if op not in OPS:
            raise ValidationError(f"{path}.op", f"must be one of: {', '.join(OPS)}")
        if op == "is_set":
            return f"({col} IS NOT NULL AND {col} != '')"
        if op == "not_set":
            return f"({col} IS NULL OR {col} = '')"
        if op in COMPARE:
            self.params.append(_scalar(value, vpath))
            return f"({col} {COMPARE[op]} ?)"
        if op == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise ValidationError(vpath, "must be [low, high]")
            self.params += [_scalar(value[0], vpath), _scalar(value[1], vpath)]
            return f"({col} BETWEEN ? AND ?)"
        if op == "in":
            if not isinstance(value, list) or not value or len(value) > 500:
                raise ValidationError(vpath, "must be a list of 1 to 500 values")
            self.params += [_scalar(v, vpath) for v in value]
            return f"({col} IN ({','.join('?' * len(value))}))"
        if op == "contains":
            if not isinstance(value, str) or not value:
                raise ValidationError(vpath, "must be text")
            self.params.append(
                "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            )
            return f"({col} LIKE ? ESCAPE '\\')"
        day = f"substr({col}, 1, 10)"
        if op in ("anniversary_this_week", "anniversary_this_month"):
            if op == "anniversary_this_week":
                first = self.today - timedelta(days=self.today.weekday())
                span = [first + timedelta(days=i) for i in range(7)]
                days = {d.strftime("%m-%d") for d in span}
                if "02-28" in days:
                    days.add("02-29")
                self.params += sorted(days)
                return f"(substr({col}, 6, 5) IN ({','.join('?' * len(days))}))"
            self.params.append(self.today.strftime("%m"))
            return f"(substr({col}, 6, 2) = ?)"
        if op == "days_ago_between":
            if (
                not isinstance(value, list)
                or len(value) != 2
                or not all(_days(v) for v in value)
                or value[0] > value[1]
            ):
                raise ValidationError(vpath, "must be [fewer, more] days ago, e.g. [4, 5]")
            self.params += [
                (self.today - timedelta(days=value[1])).isoformat(),
                (self.today - timedelta(days=value[0])).isoformat(),
            ]
            return f"({day} BETWEEN ? AND ?)"
        if not _days(value):
            raise ValidationError(vpath, "must be a number of days (0 to 36,500)")
        if op == "older_than_days":
            self.params.append((self.today - timedelta(days=value)).isoformat())
            return f"({day} < ?)"
        if op == "within_days":
            self.params.append((self.today - timedelta(days=value)).isoformat())
            return f"({day} >= ?)"
        if op == "in_next_days":
            self.params += [self.today.isoformat(), (self.today + timedelta(days=value)).isoformat()]
            return f"({day} BETWEEN ? AND ?)"
        if op == "days_ago":
            self.params.append((self.today - timedelta(days=value)).isoformat())
            return f"({day} = ?)"
        # anniversary_within_days: month-day today .. today + n
        days = {(self.today + timedelta(days=i)).strftime("%m-%d") for i in range(min(value, 366) + 1)}
        if "02-28" in days and "03-01" in days:
            days.add("02-29")
        self.params += sorted(days)
        return f"(substr({col}, 6, 5) IN ({','.join('?' * len(days))}))"


def _days(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 36_500


def _scalar(v: Any, path: str) -> Any:
    if isinstance(v, bool):
        return int(v)
    if (isinstance(v, int) and not fits_int64(v)) or (isinstance(v, float) and not math.isfinite(v)):
        raise ValidationError(path, "is out of range (a whole number of at most 19 digits)")
    if isinstance(v, str | int | float):
        return v
    raise ValidationError(path, "must be text, a number or true/false")


def compile_filter(f: Any, today: date) -> Compiled:
    """The SQL condition (over `contacts c`) of a segment filter; ValidationError names the bad part."""
    c = _Compiler(today)
    sql = c.node(f, "filter")
    return Compiled(sql, c.params)


@dataclass(frozen=True, slots=True)
class Segment:
    id: int
    name: str
    description: str
    filter: Any

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description, "filter": self.filter}


class Segments:
    """Named filters, and the contacts they select today."""

    def __init__(self, db: Database, time_zone: str) -> None:
        self.db = db
        self.time_zone = time_zone

    def today(self, now: datetime | None = None) -> date:
        return (now or self.db.now()).astimezone(ZoneInfo(self.time_zone)).date()

    async def create(
        self, name: str, f: Any, *, description: str = "", user_id: int | None = None
    ) -> Segment:
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ValidationError("name", "is required (at most 200 characters)")
        compile_filter(f, self.today())  # refuse a bad filter before storing it
        now = to_db_time(self.db.now())
        if await self.db.fetchone("SELECT 1 FROM segments WHERE name = ?", (name.strip(),)):
            raise Conflict("name", f"a segment named {name.strip()!r} exists")
        async with self.db.transaction() as tx:
            cur = await tx.execute(
                "INSERT INTO segments (name, description, filter, created_by, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (name.strip(), description, json.dumps(f), user_id, now, now),
            )
            sid = int((await one_row(cur))[0])
        return await self.get(sid)

    async def update(self, segment_id: int, name: str, f: Any, *, description: str | None = None) -> Segment:
        """Rename a saved segment and/or replace its filter (refused like create when bad)."""
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ValidationError("name", "is required (at most 200 characters)")
        compile_filter(f, self.today())
        old = await self.get(segment_id)
        other = await self.db.fetchone(
            "SELECT id FROM segments WHERE name = ? AND id != ?", (name.strip(), segment_id)
        )
        if other:
            raise Conflict("name", f"a segment named {name.strip()!r} exists")
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE segments SET name = ?, description = ?, filter = ?, updated_at = ? WHERE id = ?",
                (
                    name.strip(),
                    old.description if description is None else description,
                    json.dumps(f),
                    to_db_time(self.db.now()),
                    segment_id,
                ),
            )
        return await self.get(segment_id)

    async def get(self, ident: int | str) -> Segment:
        """A segment by id or by name."""
        if isinstance(ident, int) and not isinstance(ident, bool):
            row = await self.db.fetchone("SELECT * FROM segments WHERE id = ?", (ident,))
        elif isinstance(ident, str):
            row = await self.db.fetchone("SELECT * FROM segments WHERE name = ?", (ident.strip(),))
        else:
            raise ValidationError("segment", "must be a segment id or name")
        if row is None:
            raise NotFound("segment", ident)
        return Segment(row["id"], row["name"], row["description"], json.loads(row["filter"]))

    async def list(self) -> list[Segment]:
        rows = await self.db.fetchall("SELECT * FROM segments ORDER BY name")
        return [Segment(r["id"], r["name"], r["description"], json.loads(r["filter"])) for r in rows]

    async def delete(self, segment_id: int) -> None:
        async with self.db.transaction() as tx:
            cur = await tx.execute("DELETE FROM segments WHERE id = ?", (segment_id,))
            if cur.rowcount == 0:
                raise NotFound("segment", segment_id)

    async def resolve(self, spec: Any) -> Any:
        """A filter from a segment reference: an id, a name, or {"filter": {...}} inline."""
        if isinstance(spec, dict) and set(spec) == {"filter"}:
            return spec["filter"]
        return (await self.get(spec)).filter

    async def ids(self, f: Any, *, now: datetime | None = None) -> builtins.list[int]:
        """Contact ids the filter selects, in id order."""
        c = compile_filter(f, self.today(now))
        rows = await self.db.fetchall(f"SELECT c.id FROM contacts c WHERE {c.sql} ORDER BY c.id", c.params)
        return [r[0] for r in rows]

    async def preview(self, f: Any, *, limit: int = 10, now: datetime | None = None) -> dict[str, Any]:
        """How many contacts the filter selects today, and the first few."""
        c = compile_filter(f, self.today(now))
        count = await self.db.fetchone(f"SELECT count(*) FROM contacts c WHERE {c.sql}", c.params)
        rows = await self.db.fetchall(
            f"SELECT c.id, c.first_name, c.last_name FROM contacts c WHERE {c.sql} ORDER BY c.id LIMIT ?",
            [*c.params, limit],
        )
        return {
            "count": count[0] if count else 0,
            "sample": [
                {"id": r[0], "name": f"{r[1]} {r[2]}".strip(), "url": f"/contacts/{r[0]}"} for r in rows
            ],
        }
