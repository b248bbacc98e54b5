"""Daily call rollups, exact: what each call fact adds to its day, kept in the fact's transaction.

A fact contributes to four rows of its local day: (day, ''), (agent, user id), (queue, name) and
(hour, 0-23). Every column is an integer (sums in milliseconds), and waits and callback delays are
kept as histograms with the boundaries their figure is defined on: a wait on the steps of
WAIT_STEPS (the p90 is the smallest step that 9 in 10 waits stay within, one column per step), a
callback delay in whole minutes rounded up (the callback window is whole minutes). So a report summed
from rollups equals one counted from the facts, whatever order rows were added in.

When a fact is written, the rows it touches (the fact itself, and the unanswered inbound calls to
its old and new numbers, whose callback may change) are read before and after the write; the
difference is added to the rollups. A late end, a corrected outcome, agent or time, all move the
counts from the old day/agent/queue/hour to the new ones.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

# the p90 wait's scale in seconds: fine where waits usually are, coarser beyond (a row per day and
# key holds one column per step, so a quarter's report reads a few thousand rows, not every call)
WAIT_STEPS: tuple[int, ...] = (
    0,
    5,
    10,
    15,
    20,
    25,
    30,
    40,
    50,
    60,
    75,
    90,
    120,
    150,
    180,
    240,
    300,
    450,
    600,
    900,
)
WAIT_STEPS += (1200, 1800, 3600, 86400)
WAIT_COLUMNS = tuple(f"wait_le_{s}" for s in WAIT_STEPS)
COUNTS = (
    "inbound",
    "outbound",
    "answered",
    "missed",
    "abandoned",
    "outbound_answered",
    "wait_ms",
    "wait_n",
    "talk_ms",
    "unanswered",
    "called_back",
    "callback_ms",
    *WAIT_COLUMNS,
)
CALLBACK_CAP_MIN = 10_080  # the longest callback window the API takes; longer delays share one bucket
FACT_COLUMNS = (
    "touch_id, direction, outcome, user_id, queue, number, started_s, ended_s, wait_s, wait_ms,"
    " talk_ms, callback_s, callback_ms, local_day, local_hour, line"
)
UNANSWERED = "direction = 'inbound' AND outcome IN ('missed', 'abandoned')"

Key = tuple[str, str, str]  # dim, local_day, dim_key


def ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def wait_step(wait_s: float) -> int:
    """The smallest step of WAIT_STEPS a wait (rounded up to the whole second) is within; the last
    step for anything longer."""
    whole = math.ceil(wait_s)
    return WAIT_STEPS[min(bisect_left(WAIT_STEPS, whole), len(WAIT_STEPS) - 1)]


def callback_bucket(callback_ms: int) -> int:
    """A callback delay in whole minutes, rounded up: delay <= N minutes exactly when bucket <= N."""
    return min(-(-callback_ms // 60_000), CALLBACK_CAP_MIN + 1)


def local_parts(started_s: float, zone: ZoneInfo) -> tuple[str, int, int]:
    """(local day, hour, weekday 0 = Sunday) of a start in the zone."""
    local = datetime.fromtimestamp(started_s, UTC).astimezone(zone)
    return local.date().isoformat(), local.hour, local.isoweekday() % 7


class Delta:
    """Additions to rollup rows and histogram buckets (negative to take a fact's old figures away)."""

    def __init__(self) -> None:
        self.rows: dict[Key, list[int]] = defaultdict(lambda: [0] * len(COUNTS))
        self.callbacks: dict[tuple[str, str, str, int], int] = defaultdict(int)

    def add(self, f: Any, sign: int) -> None:
        inbound = f["direction"] == "inbound"
        outbound = f["direction"] == "outbound"
        answered_in = inbound and f["outcome"] == "answered"
        unanswered = inbound and f["outcome"] in ("missed", "abandoned")
        called_back = unanswered and f["callback_s"] is not None
        counts: tuple[int, ...] = (
            int(inbound),
            int(outbound),
            int(answered_in),
            int(f["outcome"] == "missed"),
            int(f["outcome"] == "abandoned"),
            int(outbound and f["outcome"] == "answered"),
            (f["wait_ms"] or 0) if answered_in else 0,
            int(answered_in and f["wait_ms"] is not None),
            f["talk_ms"] or 0,
            int(unanswered),
            int(called_back),
            (f["callback_ms"] or 0) if called_back else 0,
        )
        waited = answered_in and f["wait_s"] is not None
        step = WAIT_STEPS.index(wait_step(f["wait_s"])) if waited else -1
        counts += tuple(int(i == step) for i in range(len(WAIT_STEPS)))
        day = f["local_day"]
        uid = "" if f["user_id"] is None else str(f["user_id"])
        dims = (
            ("day", ""),
            ("agent", uid),
            ("queue", f["queue"]),
            ("line", f["line"] or ""),
            ("hour", str(f["local_hour"])),
        )
        for dim, key in dims:
            row = self.rows[(dim, day, key)]
            for i, v in enumerate(counts):
                row[i] += sign * v
            if called_back:
                self.callbacks[(dim, day, key, callback_bucket(f["callback_ms"] or 0))] += sign

    async def apply(self, tx: Any) -> None:
        cols = ", ".join(COUNTS)
        changed = [k for k, v in self.rows.items() if any(v)]
        if changed:
            await tx.executemany(
                f"INSERT INTO call_rollups (dim, local_day, dim_key, weekday, {cols})"
                f" VALUES (?, ?, ?, ?, {', '.join('?' * len(COUNTS))}) ON CONFLICT (dim, local_day, dim_key)"
                " DO UPDATE SET " + ", ".join(f"{c} = call_rollups.{c} + excluded.{c}" for c in COUNTS),
                [(*k, date.fromisoformat(k[1]).isoweekday() % 7, *self.rows[k]) for k in changed],
            )
            # a row every fact has left (no call counts in it any more) goes
            await tx.executemany(
                "DELETE FROM call_rollups WHERE dim = ? AND local_day = ? AND dim_key = ?"
                " AND inbound = 0 AND outbound = 0",
                changed,
            )
        moved = [k for k, n in self.callbacks.items() if n]
        if moved:
            await tx.executemany(
                "INSERT INTO call_rollup_callbacks (dim, local_day, dim_key, weekday, minutes, n)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (dim, local_day, dim_key, minutes) DO UPDATE SET n = call_rollup_callbacks.n + excluded.n",
                [(*k[:3], date.fromisoformat(k[1]).isoweekday() % 7, k[3], self.callbacks[k]) for k in moved],
            )
            await tx.executemany(
                "DELETE FROM call_rollup_callbacks WHERE dim = ? AND local_day = ? AND dim_key = ?"
                " AND minutes = ? AND n = 0",
                moved,
            )


async def _rows(tx: Any, where: str, values: list[Any]) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        async with tx.execute(
            f"SELECT {FACT_COLUMNS} FROM call_facts WHERE {where.format(','.join('?' * len(chunk)))}",
            chunk,
        ) as cur:
            out.update((r["touch_id"], r) for r in await cur.fetchall())
    return out


async def _affected(tx: Any, ids: list[int], numbers: list[str]) -> dict[int, Any]:
    rows = await _rows(tx, "touch_id IN ({})", ids)
    rows.update(await _rows(tx, f"{UNANSWERED} AND number IN ({{}})", numbers))
    return rows


async def set_callbacks(tx: Any, numbers: list[str] | None) -> None:
    """Recompute the callback of unanswered inbound calls to `numbers` (None: every call)."""
    first = (
        "(SELECT MIN(o.started_s) FROM call_facts o WHERE o.number = call_facts.number"
        " AND o.direction = 'outbound' AND o.started_s >= call_facts.ended_s)"
    )
    delay = "CASE WHEN callback_s IS NULL THEN NULL ELSE CAST(ROUND((callback_s - ended_s) * 1000) AS INTEGER) END"
    chunks: Iterable[list[str] | None] = (
        [None] if numbers is None else [numbers[i : i + 500] for i in range(0, len(numbers), 500)]
    )
    for chunk in chunks:
        where = UNANSWERED + ("" if chunk is None else f" AND number IN ({','.join('?' * len(chunk))})")
        await tx.execute(f"UPDATE call_facts SET callback_s = {first} WHERE {where}", chunk or [])
        await tx.execute(f"UPDATE call_facts SET callback_ms = {delay} WHERE {where}", chunk or [])


async def write_with_rollups(tx: Any, params: list[tuple[Any, ...]], upsert: str) -> None:
    """Run `upsert` over the facts' `params` (touch id first, number sixth) and keep the rollups exact."""
    ids = [p[0] for p in params]
    old = await _rows(tx, "touch_id IN ({})", ids)
    numbers = sorted({p[5] for p in params if p[5]} | {r["number"] for r in old.values() if r["number"]})
    before = await _affected(tx, ids, numbers)
    await tx.executemany(upsert, params)
    # callbacks of the written calls that are not unanswered calls with a number
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        await tx.execute(
            "UPDATE call_facts SET callback_s = NULL, callback_ms = NULL WHERE touch_id IN"
            f" ({','.join('?' * len(chunk))}) AND (number IS NULL OR NOT ({UNANSWERED}))",
            chunk,
        )
    await set_callbacks(tx, numbers)
    after = await _affected(tx, ids, numbers)
    delta = Delta()
    for r in before.values():
        delta.add(r, -1)
    for r in after.values():
        delta.add(r, 1)
    await delta.apply(tx)


async def rebuild(tx: Any, zone_name: str) -> int:
    """Recompute every fact's local day, hour and weekday in `zone_name`, its milliseconds and
    callback, and the rollups from scratch (a new store, or the dealership's zone changed)."""
    zone = ZoneInfo(zone_name)
    last, n = -1, 0
    while True:
        async with tx.execute(
            "SELECT touch_id, started_s, wait_s, talk_s FROM call_facts WHERE touch_id > ? ORDER BY touch_id LIMIT 5000",
            (last,),
        ) as cur:
            batch = list(await cur.fetchall())
        if not batch:
            break
        await tx.executemany(
            "UPDATE call_facts SET local_day = ?, local_hour = ?, weekday = ?, wait_ms = ?, talk_ms = ?"
            " WHERE touch_id = ?",
            [
                (*local_parts(r["started_s"], zone), ms(r["wait_s"]), ms(r["talk_s"]), r["touch_id"])
                for r in batch
            ],
        )
        last, n = batch[-1]["touch_id"], n + len(batch)
    await tx.execute("UPDATE call_facts SET callback_s = NULL, callback_ms = NULL")
    await set_callbacks(tx, None)
    await tx.execute("DELETE FROM call_rollups")
    await tx.execute("DELETE FROM call_rollup_callbacks")
    delta = Delta()
    async with tx.execute(f"SELECT {FACT_COLUMNS} FROM call_facts") as cur:
        async for r in cur:
            delta.add(r, 1)
    await delta.apply(tx)
    await tx.execute("DELETE FROM call_rollup_zone")
    await tx.execute("INSERT INTO call_rollup_zone (zone) VALUES (?)", (zone_name,))
    return n
