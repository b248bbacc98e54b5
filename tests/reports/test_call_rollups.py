"""The daily rollups are exact: on seeded random calls around both of Chicago's DST changes, with late
ends, corrected outcomes/agents/numbers, calls moved to another day and callbacks arriving days
later, the call report read from rollups (+ partial edge days from facts) equals the one counted from
the call facts alone, and both equal figures this test computes itself from the stored facts."""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crm_link.call_rollups import wait_step
from crm_link.reports import CALL_GROUPS, CallFigures, write_call_facts
from crm_link.store import Store
from crm_link.touches import TouchInput
from reports.calls import call_report, p90
from reports.periods import Period

CHI = "America/Chicago"
# a week around the spring change (2031-03-09) and one around the autumn change (2031-11-02)
WINDOWS = [(date(2031, 3, 6), date(2031, 3, 12)), (date(2031, 10, 30), date(2031, 11, 5))]
NUMBERS = [f"+1555010{i:04d}" for i in range(12)]  # few numbers: callbacks happen


def instant(rng: random.Random, zone: ZoneInfo) -> datetime:
    first, last = rng.choice(WINDOWS)
    day = first + timedelta(days=rng.randrange((last - first).days + 1))
    r = rng.random()
    if r < 0.15:  # close to local midnight, on either side
        t = datetime.combine(day, time(0), zone) + timedelta(seconds=rng.uniform(-90, 90))
    elif r < 0.25 and day == date(2031, 11, 2):  # the hour that happens twice
        t = datetime(2031, 11, 2, 6, 0, tzinfo=UTC) + timedelta(seconds=rng.uniform(0, 7200))
    else:
        t = datetime.combine(day, time(0), zone) + timedelta(seconds=rng.uniform(0, 86400))
    return t.astimezone(UTC)


def figures(rng: random.Random, direction: str) -> tuple[str, CallFigures, float]:
    if direction == "inbound":
        outcome = rng.choice(["answered", "answered", "missed", "abandoned"])
    else:
        outcome = rng.choice(["answered", "busy", "no_answer"])
    # waits on the p90's steps and just past them too: its bucket edges
    edge = rng.choice([5, 20, 30, 60, 120])
    drawn = rng.choice([float(edge), edge + 0.001, float(rng.randrange(0, 40)), rng.uniform(0, 200)])
    wait = drawn if direction == "inbound" else None
    talk = rng.uniform(1, 600) if outcome == "answered" else None
    queue = rng.choice(["sales", "service", None]) if direction == "inbound" else None
    length = (wait or 3) + (talk or 0)
    status = {"answered": "answered", "busy": "busy", "no_answer": "no answer"}.get(outcome, "missed")
    return status, CallFigures(outcome, queue, None, wait, talk), length


def call(key: str, started: datetime, direction: str, rng: random.Random, users: list[int]) -> TouchInput:
    status, fig, length = figures(rng, direction)
    user = rng.choice(users) if fig.outcome == "answered" or direction == "outbound" else None
    return TouchInput(
        source_key=key,
        kind="call",
        direction=direction,
        started_at=started,
        user_id=user,
        status=status,
        number=rng.choice(NUMBERS),
        ended_at=started + timedelta(seconds=length),
        call=fig,
    )


async def seed(store: Store, seed: int) -> None:
    rng = random.Random(seed)
    zone = ZoneInfo(CHI)
    users = [(await store.users.add(f"agent{i}", role="rep", password="password-123")).id for i in range(4)]
    calls = [
        call(f"t:{i}", instant(rng, zone), rng.choice(["inbound", "inbound", "outbound"]), rng, users)
        for i in range(400)
    ]
    for start in range(0, len(calls), 37):  # batches of calls ending together
        await store.touches.record_many(calls[start : start + 37])
    # late events and corrections of the same calls: a later end, another outcome, agent, number
    for item in rng.sample(calls, 120):
        status, fig, length = figures(rng, item.direction)
        await store.touches.record(
            TouchInput(
                source_key=item.source_key,
                kind="call",
                direction=item.direction,
                started_at=item.started_at,
                user_id=rng.choice(users) if rng.random() < 0.5 else None,
                status=status,
                number=rng.choice(NUMBERS) if rng.random() < 0.3 else None,
                ended_at=item.started_at + timedelta(seconds=length + rng.uniform(0, 3600)),
                call=fig,
            )
        )
    # a correction that moves calls to another start (another day, hour, or across a DST change)
    rows = await store.db.fetchall("SELECT * FROM touches WHERE kind = 'call' ORDER BY id LIMIT 30")
    moved = []
    for r in rows:
        d = dict(r)
        shift = timedelta(hours=rng.choice([-30, -5, 1, 23, 49]))
        for col in ("started_at", "ended_at"):
            t = datetime.fromisoformat(d[col].replace("Z", "+00:00")) + shift
            d[col] = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        moved.append((d, figures(rng, d["direction"])[1]))
    async with store.db.transaction() as tx:
        await write_call_facts(tx, moved, CHI)
    # callbacks placed days later: earlier days' missed calls become called back
    later = [
        call(f"cb:{i}", instant(rng, zone) + timedelta(days=2), "outbound", rng, users) for i in range(40)
    ]
    await store.touches.record_many(later)


async def facts(store: Store) -> list[Any]:
    return list(await store.db.fetchall("SELECT * FROM call_facts"))


def expected_totals(rows: list[Any], lo: float, hi: float, cb_min: int) -> dict[str, Any]:
    """The 'all' figures from the facts by their definitions, callbacks looked up here."""
    inside = [f for f in rows if lo <= f["started_s"] < hi]
    answered = [f for f in inside if f["direction"] == "inbound" and f["outcome"] == "answered"]
    unanswered = [
        f for f in inside if f["direction"] == "inbound" and f["outcome"] in ("missed", "abandoned")
    ]
    in_time = 0
    for f in unanswered:
        later = [
            o["started_s"]
            for o in rows
            if o["number"] == f["number"] and o["direction"] == "outbound" and o["started_s"] >= f["ended_s"]
        ]
        if later and round((min(later) - f["ended_s"]) * 1000) <= cb_min * 60_000:
            in_time += 1
    return {
        "inbound": sum(f["direction"] == "inbound" for f in inside),
        "outbound": sum(f["direction"] == "outbound" for f in inside),
        "answered": len(answered),
        "unanswered": len(unanswered),
        "called_back_in_time": in_time,
        "p90": p90(
            {
                w: sum(math.ceil(f["wait_s"]) == w for f in answered)
                for w in {math.ceil(f["wait_s"]) for f in answered}
            }
        ),
    }


def p90_by_rank(whole: list[int]) -> int | None:
    """The 90th percentile by nearest rank, then put on the figure's steps."""
    if not whole:
        return None
    return wait_step(whole[math.ceil(0.9 * len(whole)) - 1])


def normal(data: dict[str, Any]) -> dict[str, Any]:
    """Counts as ints, waits on the p90's steps, empty keys dropped (a row every call left is gone)."""
    rows = {
        k: {n: int(v) for n, v in c.items()}
        for k, c in data["rows"].items()
        if c.get("inbound") or c.get("outbound")
    }
    waits: dict[Any, dict[int, int]] = {}
    for k, h in data["waits"].items():
        for w, n in h.items():
            if n:
                waits.setdefault(k, {})[wait_step(w)] = waits.get(k, {}).get(wait_step(w), 0) + n
    return {"rows": rows, "waits": {k: h for k, h in waits.items() if h}}


def bounds(first: date, last: date, zone: str) -> tuple[float, float]:
    p = Period(first, last, zone)
    return p.start.timestamp(), p.end.timestamp()


@pytest.mark.parametrize("seed_n", [1, 2, 3])
async def test_rollups_equal_the_facts_across_dst_late_ends_and_corrections(
    store: Store, seed_n: int
) -> None:
    await seed(store, seed_n)
    assert await store.reports.rollup_zone() == CHI  # built at open, kept since
    rows = await facts(store)
    rng = random.Random(seed_n + 100)
    periods = [bounds(first, last, CHI) for first, last in WINDOWS]
    periods += [
        bounds(date(2031, 3, 9), date(2031, 3, 9), CHI),
        bounds(date(2031, 11, 2), date(2031, 11, 2), CHI),
    ]
    periods.append(bounds(date(2031, 3, 1), date(2031, 11, 30), CHI))
    # bounds off midnight: partial days at the edges come from the facts
    for _ in range(4):
        lo = rng.uniform(*periods[0]) if rng.random() < 0.5 else rng.uniform(*periods[1])
        periods.append((lo, lo + rng.uniform(3600, 6 * 86400)))
    for lo, hi in periods:
        for cb_min in (1, 30, 10080):
            for group in CALL_GROUPS:
                got = normal(await store.reports.calls(lo, hi, group, cb_min))
                assert got == normal(await store.reports.calls_from_facts(lo, hi, group, cb_min)), (
                    lo,
                    hi,
                    group,
                )
            total = (await store.reports.calls(lo, hi, "all", cb_min))["rows"].get("", {})
            want = expected_totals(rows, lo, hi, cb_min)
            for name in ("inbound", "outbound", "answered", "unanswered", "called_back_in_time"):
                assert int(total.get(name, 0)) == want[name], (name, lo, hi)
            waits = (await store.reports.calls(lo, hi, "all", cb_min))["waits"].get("", {})
            assert p90(waits) == want["p90"]
    # the call report a manager sees (whole days) matches too, per weekday × hour
    period = Period(WINDOWS[1][0], WINDOWS[1][1], CHI)
    report = await call_report(store, period, "weekday_hour")
    assert (
        sum(r["inbound"] for r in report["rows"])
        == expected_totals(rows, *bounds(*WINDOWS[1], CHI), 60)["inbound"]
    )

    # the rollups are what is read: a day's rollup taken away changes that day's report
    lo, hi = bounds(date(2031, 11, 2), date(2031, 11, 2), CHI)
    before = normal(await store.reports.calls(lo, hi, "all", 60))
    assert before["rows"]
    async with store.db.transaction() as tx:
        await tx.execute("DELETE FROM call_rollups WHERE local_day = '2031-11-02'")
    assert normal(await store.reports.calls(lo, hi, "all", 60)) != before
    # rebuilding restores them exactly
    await store.reports.rebuild_rollups()
    assert normal(await store.reports.calls(lo, hi, "all", 60)) == before


async def test_a_new_zone_rebuilds_local_days_and_rollups(store: Store) -> None:
    await seed(store, 7)
    berlin = "Europe/Berlin"
    store.reports.time_zone = berlin
    await store.reports.backfill()  # at start: the zone changed, so the facts' days and rollups follow
    assert await store.reports.rollup_zone() == berlin
    zone = ZoneInfo(berlin)
    for f in await facts(store):
        assert (
            f["local_day"] == datetime.fromtimestamp(f["started_s"], UTC).astimezone(zone).date().isoformat()
        )
    lo, hi = bounds(date(2031, 10, 25), date(2031, 11, 6), berlin)  # Berlin's change is 2031-10-26
    for group in CALL_GROUPS:
        assert normal(await store.reports.calls(lo, hi, group, 60)) == normal(
            await store.reports.calls_from_facts(lo, hi, group, 60)
        )
    # a Chicago period is not whole days in Berlin: it is read from rollups plus edge facts, still exact
    lo, hi = bounds(*WINDOWS[1], CHI)
    assert normal(await store.reports.calls(lo, hi, "day", 60)) == normal(
        await store.reports.calls_from_facts(lo, hi, "day", 60)
    )
