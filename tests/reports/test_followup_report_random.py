"""The follow-up report's figures against a straightforward count: seeded random follow-ups (reps,
a pool, a deleted rep, rules, customers on none, one or two call lists; open, done and cancelled;
times on the period's and the cut-off's edges) counted here row by row from their definitions, for
each group, the totals and the previous period, over HTTP."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crm_link.clock import ManualClock
from crm_link.reports import NOT_REACHED
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.settings import Settings
from tests.conftest import make_api

FMT = "%Y-%m-%dT%H:%M:%S.%fZ"
# Chicago in June is UTC-5: 2026-06-08..14 runs 05:00Z on the 8th to 05:00Z on the 15th
P_START = datetime(2026, 6, 8, 5, 0, tzinfo=UTC)
P_END = datetime(2026, 6, 15, 5, 0, tzinfo=UTC)
PREV_START = datetime(2026, 6, 1, 5, 0, tzinfo=UTC)
RESULTS = ["sold", "appointment set", "No Answer", "busy", "voicemail", "left message", None, "reached"]


def instant(rng: random.Random, edges: list[datetime]) -> datetime:
    """A time in late May..late June, often exactly on (or a microsecond off) an edge."""
    if rng.random() < 0.25:
        return rng.choice(edges) + timedelta(microseconds=rng.choice([-1, 0, 1]))
    return datetime(2026, 5, 25, tzinfo=UTC) + timedelta(seconds=rng.uniform(0, 30 * 86400))


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    "now", [datetime(2026, 6, 20, 15, 0, tzinfo=UTC), datetime(2026, 6, 11, 9, 30, tzinfo=UTC)]
)
async def test_figures_equal_a_count_of_the_rows(
    aiohttp_client: Any, settings: Settings, seed: int, now: datetime
) -> None:
    rng = random.Random(seed)
    clock = ManualClock(now)
    client = await aiohttp_client(create_app(settings, clock=clock))
    store = client.app[STORE]
    boss = await make_api(client, "maria", "manager")
    reps = [(await make_api(client, f"rep{i}", "rep")).user for i in range(4)]
    stamp = now.strftime(FMT)
    async with store.db.transaction() as tx:
        for c in range(1001, 1031):
            await tx.execute(
                "INSERT INTO contacts (id, first_name, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (c, f"c{c}", stamp, stamp),
            )
        for k in (101, 102):
            await tx.execute(
                "INSERT INTO cadences (id, name, date_field, steps, starts_on, created_at, updated_at)"
                " VALUES (?, ?, 'delivery_date', '[]', '2026-01-01', ?, ?)",
                (k, f"rule {k}", stamp, stamp),
            )
        lists: dict[int, set[int]] = {}
        for lid in (101, 102, 103):
            await tx.execute(
                "INSERT INTO call_lists (id, name, mode, state, created_at, updated_at)"
                " VALUES (?, ?, 'preview', 'running', ?, ?)",
                (lid, f"list {lid}", stamp, stamp),
            )
            for c in rng.sample(range(1001, 1031), 12):  # some customers on two or three lists, some on none
                lists.setdefault(c, set()).add(lid)
                await tx.execute(
                    "INSERT INTO call_list_entries (list_id, contact_id, number, time_zone, state, next_at,"
                    " updated_at) VALUES (?, ?, ?, 'America/Chicago', 'pending', ?, ?)",
                    (lid, c, f"+155500{c:05d}", stamp, stamp),
                )
        edges = [PREV_START, P_START, P_END, now]
        seeds: list[dict[str, Any]] = []
        for i in range(400):
            created = instant(rng, edges)
            due = (
                created + timedelta(hours=rng.uniform(-24, 24 * 6))
                if rng.random() > 0.2
                else instant(rng, edges)
            )
            status = rng.choice(["open", "open", "done", "done", "done", "cancelled"])
            closed = instant(rng, edges) if status != "open" else None
            if status == "open" and rng.random() < 0.1:  # reopened: its old closing time is kept
                closed = instant(rng, edges)
            pool = rng.random() < 0.15
            who = None if pool else rng.choice([*reps, None])
            f: dict[str, Any] = {
                "contact": rng.randint(1001, 1030),
                "user": who,
                "pool": "bdc" if pool else None,
                "due": due,
                "status": status,
                "created": created,
                "closed": closed,
                "rule": rng.choice([None, 101, 102]),
                "result": rng.choice(RESULTS) if status == "done" else None,
            }
            seeds.append(f)
            await tx.execute(
                "INSERT INTO followups (contact_id, assignee_id, pool, due_at, status, created_at, closed_at,"
                " cadence_id, result, source_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    f["contact"],
                    who.id if who else None,
                    f["pool"],
                    due.strftime(FMT),
                    status,
                    created.strftime(FMT),
                    closed.strftime(FMT) if closed else None,
                    f["rule"],
                    f["result"],
                    f"rand:{i}",
                ),
            )
    # a rep deleted since: their follow-ups fall to their pool or to no one
    gone = reps[3]
    async with store.db.transaction() as tx:
        await tx.execute("DELETE FROM api_tokens WHERE user_id = ?", (gone.id,))
        await tx.execute("DELETE FROM users WHERE id = ?", (gone.id,))
    for f in seeds:
        if f["user"] is gone:
            f["user"] = None

    def keys(f: dict[str, Any], group: str) -> list[str]:
        if group == "assignee":
            return [f["user"].username if f["user"] else (f"pool: {f['pool']}" if f["pool"] else "")]
        if group == "rule":
            return [f"rule {f['rule']}" if f["rule"] else ""]
        if group == "list":
            return [f"list {lid} #{lid}" for lid in sorted(lists.get(f["contact"], ()))]
        return ["total"]

    def expected(lo: datetime, hi: datetime, group: str) -> dict[str, dict[str, Any]]:
        cut = min(hi, now)
        out: dict[str, dict[str, Any]] = {}
        for f in seeds:
            due = lo <= f["due"] < hi
            done = f["status"] == "done" and lo <= f["closed"] < hi
            past = f["created"] < cut and f["due"] < cut and (f["status"] == "open" or f["closed"] >= cut)
            # a group has a row when any of its follow-ups is due, past due or closed in the period
            touched = due or past or (f["closed"] is not None and lo <= f["closed"] < hi)
            if not touched:
                continue
            reached = done and (f["result"] or "").lower() not in NOT_REACHED
            for k in keys(f, group):
                row = out.setdefault(k, {"due": 0, "done": 0, "past_due": 0, "attempted": 0, "reached": 0})
                row["due"] += due
                row["done"] += done
                row["attempted"] += done
                row["past_due"] += past
                row["reached"] += reached
        for row in out.values():
            row["success_rate"] = round(row["reached"] / row["attempted"], 4) if row["attempted"] else None
        return out

    def strip(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k != "key"}

    for group in ("assignee", "rule", "list"):
        resp = await boss.get(f"/api/v1/reports/followups?from=2026-06-08&to=2026-06-14&group={group}")
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        for (lo, hi), got in (((P_START, P_END), data), ((PREV_START, P_START), data["previous"])):
            assert {r["key"]: strip(r) for r in got["rows"]} == expected(lo, hi, group), (group, lo)
            total = expected(lo, hi, "all").get("total")
            assert total is not None and strip(got["totals"]) == total
