"""Surveys in the store: definitions and their versions, responses (once per call), locked answers
whose corrections are versions, the dissatisfaction follow-up and its resolution, report figures."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from crm_link.db import Database, from_db_time, to_db_time
from crm_link.errors import Conflict, NotFound
from crm_link.models import iso
from crm_link.touches import Touches, TouchInput


@dataclass(frozen=True, slots=True)
class SurveyRow:
    id: int
    name: str
    version: int  # the version `spec` is
    current_version: int
    active: bool
    spec: dict[str, Any]
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.spec,
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "current_version": self.current_version,
            "active": self.active,
        }


@dataclass(frozen=True, slots=True)
class NewResponse:
    """A response to write; `source_key` (call:<id>, attempt:<id>, sms:<id>…) makes it once."""

    survey_id: int
    survey_version: int
    source_key: str
    contact_id: int
    answers: dict[str, Any]
    score: float | None
    satisfied: bool | None
    dissatisfied: bool
    reasons: list[str]
    summary: str  # the timeline's text
    channel: str = "call"
    call_id: str | None = None
    attempt_id: int | None = None
    list_id: int | None = None
    touch_id: int | None = None
    agent_id: int | None = None


@dataclass(frozen=True, slots=True)
class Response:
    id: int
    survey_id: int
    survey_version: int
    contact_id: int | None
    channel: str
    status: str
    call_id: str | None
    attempt_id: int | None
    list_id: int | None
    touch_id: int | None
    agent_id: int | None
    agent: str | None
    answers: dict[str, Any]
    answers_version: int
    score: float | None
    satisfied: bool | None
    dissatisfied: bool
    reasons: list[str]
    followup_id: int | None
    resolution: str | None
    resolution_satisfied: bool | None
    resolved_by: str | None
    resolved_at: datetime | None
    answered_at: datetime
    versions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "survey_id": self.survey_id,
            "survey_version": self.survey_version,
            "contact_id": self.contact_id,
            "channel": self.channel,
            "status": self.status,
            "call_id": self.call_id,
            "attempt_id": self.attempt_id,
            "list_id": self.list_id,
            "touch_id": self.touch_id,
            "agent": self.agent,
            "answers": self.answers,
            "answers_version": self.answers_version,
            "score": self.score,
            "satisfied": self.satisfied,
            "dissatisfied": self.dissatisfied,
            "reasons": self.reasons,
            "followup_id": self.followup_id,
            "resolution": (
                {
                    "text": self.resolution,
                    "satisfied": self.resolution_satisfied,
                    "by": self.resolved_by,
                    "at": iso(self.resolved_at),
                }
                if self.resolution is not None
                else None
            ),
            "answered_at": iso(self.answered_at),
            "versions": self.versions,
        }


def _bool(v: Any) -> bool | None:
    return None if v is None else bool(v)


_RESPONSE_SELECT = (
    "SELECT r.*, u.username AS agent, rb.username AS resolver FROM survey_responses r"
    " LEFT JOIN users u ON u.id = r.agent_id LEFT JOIN users rb ON rb.id = r.resolved_by"
)


def _response(r: Any) -> Response:
    return Response(
        id=r["id"],
        survey_id=r["survey_id"],
        survey_version=r["survey_version"],
        contact_id=r["contact_id"],
        channel=r["channel"],
        status=r["status"],
        call_id=r["call_id"],
        attempt_id=r["attempt_id"],
        list_id=r["list_id"],
        touch_id=r["touch_id"],
        agent_id=r["agent_id"],
        agent=r["agent"],
        answers=json.loads(r["answers"]),
        answers_version=r["answers_version"],
        score=r["score"],
        satisfied=_bool(r["satisfied"]),
        dissatisfied=bool(r["dissatisfied"]),
        reasons=json.loads(r["reasons"]),
        followup_id=r["followup_id"],
        resolution=r["resolution"],
        resolution_satisfied=_bool(r["resolution_satisfied"]),
        resolved_by=r["resolver"],
        resolved_at=from_db_time(r["resolved_at"]),
        answered_at=from_db_time(r["answered_at"]),  # type: ignore[arg-type]
    )


class SurveyStore:
    """Surveys, their versions and responses."""

    def __init__(self, db: Database, touches: Touches) -> None:
        self._db = db
        self._touches = touches

    # definitions ------------------------------------------------------------------------------

    async def create(self, spec: Mapping[str, Any], *, user_id: int | None) -> SurveyRow:
        now = to_db_time(self._db.now())
        # ON CONFLICT DO NOTHING: a taken name returns no row on SQLite and PostgreSQL alike
        async with self._db.transaction() as tx:
            async with tx.execute(
                "INSERT INTO surveys (name, current_version, active, created_at, updated_at)"
                " VALUES (?, 1, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (spec["name"], int(spec.get("active", True)), now, now),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                raise Conflict("name", f"a survey named {spec['name']!r} exists")
            survey_id = int(row[0])
            await tx.execute(
                "INSERT INTO survey_versions (survey_id, version, spec, created_by, created_at)"
                " VALUES (?, 1, ?, ?, ?)",
                (survey_id, json.dumps(spec), user_id, now),
            )
        return await self.get(survey_id)

    async def new_version(self, survey_id: int, spec: Mapping[str, Any], *, user_id: int | None) -> SurveyRow:
        """Editing: the next version becomes current; responses keep the version they answered."""
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            async with tx.execute("SELECT current_version FROM surveys WHERE id = ?", (survey_id,)) as cur:
                row = await cur.fetchone()
            if row is None:
                raise NotFound("survey", survey_id)
            async with tx.execute(
                "SELECT 1 FROM surveys WHERE name = ? AND id != ?", (spec["name"], survey_id)
            ) as cur:
                if await cur.fetchone():
                    raise Conflict("name", f"a survey named {spec['name']!r} exists")
            version = row[0] + 1
            await tx.execute(
                "INSERT INTO survey_versions (survey_id, version, spec, created_by, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (survey_id, version, json.dumps(spec), user_id, now),
            )
            await tx.execute(
                "UPDATE surveys SET name = ?, current_version = ?, active = ?, updated_at = ? WHERE id = ?",
                (spec["name"], version, int(spec.get("active", True)), now, survey_id),
            )
        return await self.get(survey_id)

    async def get(self, survey_id: int, version: int | None = None) -> SurveyRow:
        """A survey at a version (the current one by default)."""
        row = await self._db.fetchone(
            "SELECT s.*, v.version, v.spec FROM surveys s JOIN survey_versions v ON v.survey_id = s.id"
            " AND v.version = COALESCE(?, s.current_version) WHERE s.id = ?",
            (version, survey_id),
        )
        if row is None:
            raise NotFound("survey" if version is None else "survey version", survey_id)
        return SurveyRow(
            id=row["id"],
            name=row["name"],
            version=row["version"],
            current_version=row["current_version"],
            active=bool(row["active"]),
            spec=json.loads(row["spec"]),
            created_at=from_db_time(row["created_at"]),  # type: ignore[arg-type]
        )

    async def all(self) -> list[SurveyRow]:
        rows = await self._db.fetchall("SELECT id FROM surveys ORDER BY name")
        return [await self.get(r[0]) for r in rows]

    async def exists(self, survey_id: int) -> bool:
        return await self._db.fetchone("SELECT 1 FROM surveys WHERE id = ?", (survey_id,)) is not None

    async def for_list(self, list_id: int) -> int | None:
        row = await self._db.fetchone("SELECT survey_id FROM call_lists WHERE id = ?", (list_id,))
        return row[0] if row else None

    async def set_list_survey(self, list_id: int, survey_id: int | None) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE call_lists SET survey_id = ?, updated_at = ? WHERE id = ?",
                (survey_id, to_db_time(self._db.now()), list_id),
            )

    async def for_contact_followup(self, contact_id: int, until: datetime) -> int | None:
        """The survey of the soonest open cadence follow-up of this contact due by `until` whose step
        carries one (a cadence step's `survey_id`)."""
        row = await self._db.fetchone(
            "SELECT json_extract(k.steps, '$[' || f.step || '].survey_id') FROM followups f"
            " JOIN cadences k ON k.id = f.cadence_id WHERE f.contact_id = ? AND f.status = 'open'"
            " AND f.due_at < ? AND json_extract(k.steps, '$[' || f.step || '].survey_id') IS NOT NULL"
            " ORDER BY f.due_at, f.id LIMIT 1",
            (contact_id, to_db_time(until)),
        )
        return int(row[0]) if row and row[0] is not None else None

    async def open_sms_survey(
        self, contact_ids: Sequence[int], since: datetime
    ) -> tuple[int, int, int] | None:
        """(outbox id, survey id, contact id) of the latest survey text sent to one of these contacts
        since `since`, while it has no answer; None otherwise (an answered one closes it)."""
        if not contact_ids:
            return None
        marks = ", ".join("?" for _ in contact_ids)
        row = await self._db.fetchone(
            f"SELECT o.id, o.survey_id, o.contact_id FROM sms_outbox o WHERE o.contact_id IN ({marks})"
            " AND o.survey_id IS NOT NULL AND o.sent_at >= ? ORDER BY o.sent_at DESC, o.id DESC LIMIT 1",
            (*contact_ids, to_db_time(since)),
        )
        if row is None:
            return None
        answered = await self._db.fetchone(
            "SELECT 1 FROM survey_responses WHERE source_key = ?", (f"sms-survey:{row[0]}",)
        )
        return None if answered else (int(row[0]), int(row[1]), int(row[2]))

    # responses --------------------------------------------------------------------------------

    async def record(self, new: NewResponse) -> Response:
        """Write a response with answers version 1 and its line on the customer's timeline (next to
        the call's touch). Conflict when this call (or key) already has one."""
        now = self._db.now()
        stamp = to_db_time(now)
        async with self._db.transaction() as tx:
            async with tx.execute(
                "INSERT INTO survey_responses (survey_id, survey_version, source_key, contact_id, channel,"
                " status, call_id, attempt_id, list_id, touch_id, agent_id, answers, score, satisfied,"
                " dissatisfied, reasons, answered_at, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 'completed', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING id",
                (
                    new.survey_id,
                    new.survey_version,
                    new.source_key,
                    new.contact_id,
                    new.channel,
                    new.call_id,
                    new.attempt_id,
                    new.list_id,
                    new.touch_id,
                    new.agent_id,
                    json.dumps(new.answers),
                    new.score,
                    None if new.satisfied is None else int(new.satisfied),
                    int(new.dissatisfied),
                    json.dumps(new.reasons),
                    stamp,
                    stamp,
                    stamp,
                ),
            ) as cur:
                row = await cur.fetchone()
            if row is None:  # its source key, call or attempt has one (either database's way)
                raise Conflict("call_id", "this call already has a survey response")
            rid = int(row[0])
            await tx.execute(
                "INSERT INTO survey_answer_versions (response_id, version, answers, changed_by, changed_at,"
                " reason) VALUES (?, 1, ?, ?, ?, 'answered')",
                (rid, json.dumps(new.answers), new.agent_id, stamp),
            )
            await self._touches.record_in(
                tx,
                TouchInput(
                    source_key=f"survey:{rid}",
                    kind="note",
                    direction="none",
                    started_at=now,
                    contact_id=new.contact_id,
                    user_id=new.agent_id,
                    channel="survey",
                    status="dissatisfied" if new.dissatisfied else "answered",
                    summary=new.summary,
                    payload={"survey_response_id": rid, "call_touch_id": new.touch_id},
                ),
            )
            if new.touch_id is not None:
                await self._link_touch_in(tx, rid, new.touch_id)
        return await self.response(rid)

    async def _link_touch_in(self, tx: Any, response_id: int, touch_id: int) -> None:
        await tx.execute(
            "UPDATE touches SET payload = json_patch(payload, ?), updated_at = ? WHERE id = ?",
            (json.dumps({"survey_response_id": response_id}), to_db_time(self._db.now()), touch_id),
        )
        await tx.execute(
            "UPDATE touches SET payload = json_patch(payload, ?) WHERE source_key = ?",
            (json.dumps({"call_touch_id": touch_id}), f"survey:{response_id}"),
        )

    async def link_attempt_touch(self, attempt_id: int, touch_id: int) -> None:
        """The call of an attempt got its touch (it ended after the survey was saved): link them."""
        async with self._db.transaction() as tx:
            async with tx.execute(
                "UPDATE survey_responses SET touch_id = ?, call_id = COALESCE(call_id,"
                " (SELECT source_key FROM touches WHERE id = ?)) WHERE attempt_id = ? AND touch_id IS NULL"
                " RETURNING id",
                (touch_id, touch_id, attempt_id),
            ) as cur:
                row = await cur.fetchone()
            if row is not None:
                await self._link_touch_in(tx, int(row[0]), touch_id)

    async def response(self, response_id: int, *, with_versions: bool = False) -> Response:
        row = await self._db.fetchone(_RESPONSE_SELECT + " WHERE r.id = ?", (response_id,))
        if row is None:
            raise NotFound("survey response", response_id)
        out = _response(row)
        if with_versions:
            out.versions.extend(await self.answer_versions(response_id))
        return out

    async def answer_versions(self, response_id: int) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT v.version, v.answers, v.changed_at, v.reason, u.username FROM survey_answer_versions v"
            " LEFT JOIN users u ON u.id = v.changed_by WHERE v.response_id = ? ORDER BY v.version",
            (response_id,),
        )
        return [
            {
                "version": r[0],
                "answers": json.loads(r[1]),
                "at": iso(from_db_time(r[2])),
                "reason": r[3],
                "by": r[4],
            }
            for r in rows
        ]

    async def responses(
        self, *, survey_id: int | None = None, contact_id: int | None = None, limit: int = 100
    ) -> list[Response]:
        where, params = [], []
        if survey_id is not None:
            where.append("r.survey_id = ?")
            params.append(survey_id)
        if contact_id is not None:
            where.append("r.contact_id = ?")
            params.append(contact_id)
        sql = _RESPONSE_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        rows = await self._db.fetchall(
            sql + " ORDER BY r.answered_at DESC, r.id DESC LIMIT ?", [*params, limit]
        )
        return [_response(r) for r in rows]

    async def correct(
        self,
        response_id: int,
        answers: dict[str, Any],
        *,
        score: float | None,
        satisfied: bool | None,
        dissatisfied: bool,
        reasons: Sequence[str],
        summary: str,
        user_id: int,
        reason: str,
    ) -> Response:
        """A manager's correction: the next answers version (the old ones stay), the figures the
        reports count recomputed, the timeline line rewritten with who and why."""
        stamp = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            async with tx.execute(
                "UPDATE survey_responses SET answers = ?, answers_version = answers_version + 1, score = ?,"
                " satisfied = ?, dissatisfied = ?, reasons = ?, updated_at = ? WHERE id = ?"
                " AND status = 'completed' RETURNING answers_version",
                (
                    json.dumps(answers),
                    score,
                    None if satisfied is None else int(satisfied),
                    int(dissatisfied),
                    json.dumps(list(reasons)),
                    stamp,
                    response_id,
                ),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                raise NotFound("survey response", response_id)
            await tx.execute(
                "INSERT INTO survey_answer_versions (response_id, version, answers, changed_by, changed_at,"
                " reason) VALUES (?, ?, ?, ?, ?, ?)",
                (response_id, row[0], json.dumps(answers), user_id, stamp, reason),
            )
            await tx.execute(
                "UPDATE touches SET summary = ?, updated_at = ? WHERE source_key = ?",
                (summary, stamp, f"survey:{response_id}"),
            )
        return await self.response(response_id, with_versions=True)

    async def set_followup(self, response_id: int, followup_id: int) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE survey_responses SET followup_id = ? WHERE id = ?", (followup_id, response_id)
            )

    async def resolve(
        self, response_id: int, text: str, satisfied: bool, *, user_id: int, summary: str
    ) -> Response:
        """The manager's resolution of a dissatisfied response, once, on the timeline too."""
        now = self._db.now()
        stamp = to_db_time(now)
        async with self._db.transaction() as tx:
            async with tx.execute(
                "UPDATE survey_responses SET resolution = ?, resolution_satisfied = ?, resolved_by = ?,"
                " resolved_at = ?, updated_at = ? WHERE id = ? AND dissatisfied = 1 AND resolution IS NULL"
                " RETURNING contact_id",
                (text, int(satisfied), user_id, stamp, stamp, response_id),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                current = await self.response(response_id)
                if not current.dissatisfied:
                    raise Conflict("id", "this response is not dissatisfied: nothing to resolve")
                raise Conflict("id", "this response was already resolved")
            await self._touches.record_in(
                tx,
                TouchInput(
                    source_key=f"survey-resolution:{response_id}",
                    kind="note",
                    direction="none",
                    started_at=now,
                    contact_id=row[0],
                    user_id=user_id,
                    channel="survey",
                    status="satisfied now" if satisfied else "still dissatisfied",
                    summary=summary,
                    payload={"survey_response_id": response_id},
                ),
            )
        return await self.response(response_id)

    # report figures ---------------------------------------------------------------------------

    async def report(
        self,
        survey_id: int,
        lo: str,
        hi: str,
        group: str,
        months: Sequence[tuple[str, str]] = (),
    ) -> tuple[list[dict[str, Any]], list[tuple[str, int]]]:
        """Per group key (agent, list, month, or '' for all): responses, unreachable, satisfied,
        scored, score sum, promoters (9-10), detractors (0-6); and the reasons ranked. `lo`/`hi`
        are UTC bounds; `months` = (YYYY-MM, its first instant as UTC text), ascending.

        Whole UTC days come from the rollup (survey_day_totals / survey_day_reasons, kept exact by
        triggers), the partial days at each range's edges from the responses themselves."""
        if group == "month" and months:
            ends = [start for _, start in months[1:]] + [hi]
            ranges = [(name, start, end) for (name, start), end in zip(months, ends, strict=True)]
        else:
            ranges = [("", lo, hi)]
        col = {"agent": "agent_id", "list": "list_id"}.get(group)
        g = col or "0"
        sums = (
            "SUM(responses), SUM(unreachable), SUM(satisfied), SUM(scored), SUM(score_sum), SUM(score_n),"
            " SUM(promoters), SUM(detractors)"
        )
        raw = (
            "SUM(status = 'completed'), SUM(status = 'unreachable'), SUM(satisfied = 1),"
            " SUM(satisfied IS NOT NULL), SUM(score), COUNT(score), SUM(score >= 9), SUM(score <= 6)"
        )
        parts: list[str] = []
        params: list[Any] = []
        reason_parts: list[str] = []
        reason_params: list[Any] = []
        for key, a, b in ranges:
            days, edges = _split_days(a, b)
            if days is not None:
                parts.append(
                    f"SELECT ?, {g}, {sums} FROM survey_day_totals WHERE survey_id = ? AND day >= ?"
                    f" AND day < ? GROUP BY 2"
                )
                params += [key, survey_id, *days]
            for ea, eb in edges:
                parts.append(
                    f"SELECT ?, COALESCE({g}, 0), {raw} FROM survey_responses WHERE survey_id = ?"
                    " AND answered_at >= ? AND answered_at < ? GROUP BY 2"
                )
                params += [key, survey_id, ea, eb]
        days, edges = _split_days(lo, hi)
        if days is not None:
            reason_parts.append(
                "SELECT reason, SUM(n) FROM survey_day_reasons WHERE survey_id = ? AND day >= ? AND day < ?"
                " GROUP BY reason"
            )
            reason_params += [survey_id, *days]
        edge_reasons: list[Any] = []
        for ea, eb in edges:
            # a partial day's few responses: their reasons are counted here (json_each is SQLite's only)
            edge_reasons += await self._db.fetchall(
                "SELECT reasons FROM survey_responses WHERE survey_id = ? AND answered_at >= ?"
                " AND answered_at < ? AND status = 'completed' AND reasons != '[]'",
                (survey_id, ea, eb),
            )
        rows = await self._db.fetchall(" UNION ALL ".join(parts), params) if parts else []
        names: dict[int, str] = {}
        ids = sorted({int(r[1]) for r in rows if r[1]})
        if col is not None and ids:
            table, name = ("users", "username") if col == "agent_id" else ("call_lists", "name")
            marks = ", ".join("?" for _ in ids)
            names = dict(
                await self._db.fetchall(f"SELECT id, {name} FROM {table} WHERE id IN ({marks})", ids)  # type: ignore[arg-type]
            )
        fields = (
            "responses",
            "unreachable",
            "satisfied",
            "scored",
            "score_sum",
            "score_n",
            "promoters",
            "detractors",
        )
        out: dict[str, dict[str, Any]] = {}
        for r in rows:
            key = names.get(int(r[1]), "") if col is not None else r[0]
            acc = out.setdefault(key, {"key": key} | {f: 0 for f in fields})
            for f, v in zip(fields, r[2:], strict=True):
                acc[f] += v or 0
        groups = [out[k] for k in sorted(out) if out[k]["responses"] + out[k]["unreachable"] > 0]
        for grp in groups:
            grp["score_sum"] = float(grp["score_sum"])
        counts: dict[str, int] = {}
        if reason_parts:
            for reason, n in await self._db.fetchall(" UNION ALL ".join(reason_parts), reason_params):
                counts[str(reason)] = counts.get(str(reason), 0) + int(n)
        for (doc,) in edge_reasons:
            for reason in json.loads(doc):
                counts[str(reason)] = counts.get(str(reason), 0) + 1
        reasons = sorted(((r, n) for r, n in counts.items() if n > 0), key=lambda rn: (-rn[1], rn[0]))
        return groups, reasons


def _split_days(a: str, b: str) -> tuple[tuple[str, str] | None, list[tuple[str, str]]]:
    """A UTC range [a, b) as whole UTC days [first, last) (None when it holds none) and the partial
    ranges left at its edges."""
    first = a[:10] if a[10:] == "T00:00:00.000000Z" else _next_day(a[:10])
    last = b[:10]
    if first >= last:
        return None, [(a, b)] if a < b else []
    edges = []
    if a < f"{first}T00:00:00.000000Z":
        edges.append((a, f"{first}T00:00:00.000000Z"))
    if f"{last}T00:00:00.000000Z" < b:
        edges.append((f"{last}T00:00:00.000000Z", b))
    return (first, last), edges


def _next_day(day: str) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()
