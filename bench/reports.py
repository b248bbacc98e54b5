"""Reports over many touches, and the agent board's update latency with many agents.

    python bench/reports.py [--touches 1000000] [--agents 1000] [--watchers 5] [--followups-only]

Builds a store with N call touches (with their call facts, 70% inbound, spread over 90 days, 50 agents,
4 queues) plus 10% as many SMS outbox rows (5% replied to) and as many follow-ups (10,000 customers, 5
cadences, 4 call lists), then times each report (p50/p95 of 20 runs over one week, 8 over the whole 90
days). Then starts the real app on loopback with `--agents` agents,
`--watchers` managers' board sockets open, feeds call events through the board, and times each update
from the event to its arrival at every watcher (p50/p99). `--followups-only` builds only the
follow-ups (touches/10 of them, with their customers, reps, cadences and lists) and times only the
follow-up report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp.test_utils import TestServer

from crm_link.store import Store
from cti.events import CallAnswered, CallEnded, CallRinging
from reports.calls import call_report
from reports.followups import followup_report
from reports.messaging import messaging_report
from reports.periods import Period

ZONE = "America/Chicago"
END = datetime(2031, 6, 30, tzinfo=ZoneInfo(ZONE))


def build(path: str, n: int, followups_only: bool = False) -> None:
    """Write the rows straight with sqlite3 (building them through the store would take the bench's time)."""
    rng = random.Random(1)
    db = sqlite3.connect(path)
    now = "2031-06-30T00:00:00.000000Z"
    db.executemany(
        "INSERT INTO users (id, username, role, password_hash, created_at) VALUES (?, ?, 'rep', 'x', ?)",
        [(i, f"agent{i}", now) for i in range(1, 51)],
    )
    zone = ZoneInfo(ZONE)
    start = END - timedelta(days=90)
    if followups_only:
        build_followups(db, rng, n // 10, start, now)
        db.commit()
        db.execute("ANALYZE")
        db.close()
        return
    touches, facts = [], []
    for i in range(1, n + 1):
        t = start + timedelta(seconds=rng.random() * 90 * 86400)
        inbound = rng.random() < 0.7
        r = rng.random()
        outcome = "answered" if r < 0.75 else ("abandoned" if r < 0.9 else "missed")
        if not inbound:
            outcome = "answered" if r < 0.6 else ("busy" if r < 0.7 else "no_answer")
        wait = rng.expovariate(1 / 20) if inbound else None
        talk = rng.expovariate(1 / 180) if outcome == "answered" else None
        end = t + timedelta(seconds=(wait or 5) + (talk or 0))
        number = f"+1555{rng.randrange(10**6, 10**7)}"
        user = rng.randint(1, 50) if outcome == "answered" or not inbound else None
        ts = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        te = end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        touches.append(
            (i, f"bench:{i}", user, "inbound" if inbound else "outbound", "answered", number, ts, te)
        )
        local = t.astimezone(zone)
        facts.append(
            (
                i,
                "inbound" if inbound else "outbound",
                outcome,
                user,
                rng.choice(["sales", "service", "parts", "bdc"]),
                number,
                t.timestamp(),
                t.timestamp() + (wait or 0) if outcome == "answered" else None,
                end.timestamp(),
                wait,
                talk,
                local.date().isoformat(),
                local.hour,
                local.isoweekday() % 7,
            )
        )
        if len(touches) == 50_000:
            flush(db, touches, facts, now)
    flush(db, touches, facts, now)
    outbox, replies = [], []
    for i in range(1, n // 10 + 1):
        t = start + timedelta(seconds=rng.random() * 90 * 86400)
        ts = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        number = f"+1556{i:07d}"  # one message per number (the outbox keeps one per blast run and number)
        state = rng.choice(["delivered", "delivered", "sent", "failed"])
        outbox.append((i, 1 + i % 20, number, state, ts, now))
        if rng.random() < 0.05:
            rt = (t + timedelta(hours=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            kw = '{"keyword": "stop"}' if rng.random() < 0.3 else "{}"
            replies.append((f"bench-sms:{i}", number, rt, kw, now, now))
    db.executemany(
        "INSERT INTO sms_blasts (id, name, text, channel, audience, state, created_at)"
        " VALUES (?, ?, 'hi', 'fake', '{}', 'done', ?)",
        [(b, f"blast {b}", now) for b in range(1, 21)],
    )
    db.executemany(
        "INSERT INTO sms_outbox (id, blast_id, to_e164, text, channel, state, not_before, created_at, updated_at,"
        " sent_at) VALUES (?, ?, ?, 'hi', 'fake', ?, ?, ?, ?, ?)",
        [(i, b, num, st, ts, ts, now, ts) for i, b, num, st, ts, now in outbox],
    )
    db.executemany(
        "INSERT INTO touches (source_key, kind, direction, status, number, started_at, payload, created_at,"
        " updated_at) VALUES (?, 'sms', 'inbound', 'received', ?, ?, ?, ?, ?)",
        replies,
    )
    build_followups(db, rng, n // 10, start, now)
    db.commit()
    db.execute("ANALYZE")
    db.close()


def build_followups(db: sqlite3.Connection, rng: random.Random, n: int, start: datetime, now: str) -> None:
    """n follow-ups over the 90 days for 10,000 customers: 50 reps and a pool, 5 cadences, 4 call
    lists holding a third of the customers; 60% done (with a result), 35% open, 5% cancelled."""
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    db.executemany(
        "INSERT INTO contacts (id, first_name, created_at, updated_at) VALUES (?, ?, ?, ?)",
        [(c, f"c{c}", now, now) for c in range(1, 10_001)],
    )
    db.executemany(
        "INSERT INTO cadences (id, name, date_field, steps, starts_on, created_at, updated_at)"
        " VALUES (?, ?, 'delivery_date', '[]', '2031-01-01', ?, ?)",
        [(k, f"cadence {k}", now, now) for k in range(1, 6)],
    )
    db.executemany(
        "INSERT INTO call_lists (id, name, mode, state, created_at, updated_at) VALUES (?, ?, 'preview', 'running', ?, ?)",
        [(k, f"list {k}", now, now) for k in range(1, 5)],
    )
    db.executemany(
        "INSERT INTO call_list_entries (list_id, contact_id, number, time_zone, state, next_at, updated_at)"
        " VALUES (?, ?, ?, 'America/Chicago', 'pending', ?, ?)",
        [(1 + c % 4, c, f"+1557{c:07d}", now, now) for c in range(1, 10_001, 3)],
    )
    rows = []
    results = ["reached", "appointment set", "left message", "voicemail", "no answer", "sold"]
    for i in range(1, n + 1):
        created = start + timedelta(seconds=rng.random() * 90 * 86400)
        due = created + timedelta(days=rng.uniform(0, 14))
        r = rng.random()
        status = "done" if r < 0.6 else ("open" if r < 0.95 else "cancelled")
        closed = (due + timedelta(hours=rng.uniform(-24, 72))) if status != "open" else None
        pool = rng.random() < 0.1
        rows.append(
            (
                rng.randint(1, 10_000),
                None if pool else rng.randint(1, 50),
                "bdc" if pool else None,
                due.astimezone(UTC).strftime(fmt),
                status,
                created.astimezone(UTC).strftime(fmt),
                closed.astimezone(UTC).strftime(fmt) if closed else None,
                rng.choice([None, 1, 2, 3, 4, 5]),
                rng.choice(results) if status == "done" else None,
                f"bench-fu:{i}",
            )
        )
    db.executemany(
        "INSERT INTO followups (contact_id, assignee_id, pool, due_at, status, created_at, closed_at, cadence_id,"
        " result, source_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def flush(db: sqlite3.Connection, touches: list, facts: list, now: str) -> None:
    db.executemany(
        "INSERT INTO touches (id, source_key, user_id, kind, direction, status, number, started_at, ended_at,"
        f" created_at, updated_at) VALUES (?, ?, ?, 'call', ?, ?, ?, ?, ?, '{now}', '{now}')",
        touches,
    )
    db.executemany(
        "INSERT INTO call_facts (touch_id, direction, outcome, user_id, queue, number, started_s, answered_s,"
        " ended_s, wait_s, talk_s, local_day, local_hour, weekday) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        facts,
    )
    touches.clear()
    facts.clear()


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def bench_followups(path: str) -> None:
    """Only the follow-up report (each group, with its previous period), as `bench_reports` times it."""
    store = Store(path, time_zone=ZONE)
    await store.open()
    try:
        for label, days in (("90 days", 90), ("7 days", 7)):
            period = Period(END.date() - timedelta(days=days), END.date() - timedelta(days=1), ZONE)
            for g in ("assignee", "rule", "list"):
                times = []
                for _ in range(20 if days == 7 else 8):
                    t0 = time.perf_counter()
                    await followup_report(store, period, g, now=END)
                    times.append((time.perf_counter() - t0) * 1000)
                print(
                    f"{label:8} followups group={g:9}  p50 {statistics.median(times):7.1f} ms"
                    f"  p95 {pct(times, 95):7.1f} ms",
                    flush=True,
                )
    finally:
        await store.close()


async def bench_reports(path: str) -> list[str]:
    store = Store(path, time_zone=ZONE)
    await store.open()
    lines = []
    try:
        # the facts were written straight into the table: build their daily rollups (what a store
        # does once after the migration or a change of zone; written calls keep them up to date)
        t0 = time.perf_counter()
        await store.reports.rebuild_rollups()
        lines.append(f"rollups rebuilt from every call fact in {time.perf_counter() - t0:.1f} s")
        print(lines[-1], flush=True)
        # the SMS rows went in through the triggers; a rebuild is what a change of zone costs
        t0 = time.perf_counter()
        await store.reports.rebuild_message_rollups()
        lines.append(f"messaging rollups rebuilt from every outbox row in {time.perf_counter() - t0:.1f} s")
        print(lines[-1], flush=True)
        for label, days in (("90 days", 90), ("7 days", 7)):
            period = Period(END.date() - timedelta(days=days), END.date() - timedelta(days=1), ZONE)
            for name, fn in [
                *[
                    (f"calls group={g}", lambda g=g, period=period: call_report(store, period, g))
                    for g in ("agent", "day", "hour", "queue", "weekday_hour")
                ],
                *[
                    (f"messaging group={g}", lambda g=g, period=period: messaging_report(store, period, g))
                    for g in ("blast", "template", "month")
                ],
                *[
                    (
                        f"followups group={g}",
                        lambda g=g, period=period: followup_report(store, period, g, now=END),
                    )
                    for g in ("assignee", "rule", "list")
                ],
            ]:
                times = []
                for _ in range(20 if days == 7 else 8):
                    t0 = time.perf_counter()
                    await fn()
                    times.append((time.perf_counter() - t0) * 1000)
                lines.append(
                    f"{label:8} {name:26} p50 {statistics.median(times):7.1f} ms  p95 {pct(times, 95):7.1f} ms"
                )
                print(lines[-1], flush=True)
        # what the rollups cost a call's end: one call recorded with its figures, as telephony does
        from crm_link.reports import CallFigures
        from crm_link.touches import TouchInput

        rng, times = random.Random(2), []
        for i in range(300):
            t = END - timedelta(days=rng.random() * 90)
            number = f"+1555{rng.randrange(10**6, 10**7)}"
            item = TouchInput(
                source_key=f"bench-end:{i}",
                kind="call",
                direction="inbound",
                started_at=t,
                user_id=rng.randint(1, 50),
                status="answered",
                number=number,
                ended_at=t + timedelta(seconds=200),
                call=CallFigures("answered", "sales", None, rng.uniform(0, 60), 180.0),
            )
            t0 = time.perf_counter()
            await store.touches.record(item)
            times.append((time.perf_counter() - t0) * 1000)
        lines.append(
            f"a call's end recorded with its facts and rollups: p50 {statistics.median(times):.2f} ms"
            f"  p95 {pct(times, 95):.2f} ms"
        )
        print(lines[-1], flush=True)
        lines.append(await bench_sms_writes(store))
        print(lines[-1], flush=True)
    finally:
        await store.close()
    return lines


async def bench_sms_writes(store: Store) -> str:
    """What the messaging rollups cost the sender: windows of 100 SMS settled sent, then each
    delivery report, each with the triggers keeping the rollups (timed through the store)."""
    from crm_link.sms import OutboxRow

    bid = await store.sms.create_blast(
        name="bench writes",
        text="hi",
        channel="bench",
        audience={},
        created_by=None,
        send_at=None,
        cron=None,
        time_zone=ZONE,
        rate_per_second=None,
        next_run_at=END,
    )
    run = await store.sms.claim_run(await store.sms.blast(bid), next_run_at=None, lease=timedelta(minutes=5))
    assert run is not None
    at = END - timedelta(days=1)
    await store.sms.materialize(
        bid, run, [OutboxRow(f"+1558{i:07d}", "hi", "bench", at) for i in range(3000)]
    )
    settles, reports = [], []
    while claimed := await store.sms.claim("bench", END, 100):
        t0 = time.perf_counter()
        await store.sms.settle([(m, "sent", f"b{m.id}", None, None) for m in claimed])
        settles.append((time.perf_counter() - t0) * 1000)
        for m in claimed[:10]:
            t0 = time.perf_counter()
            await store.sms.apply_report(
                "bench",
                message_id=m.id,
                provider_id=None,
                status="delivered",
                error_code=None,
                error_text=None,
            )
            reports.append((time.perf_counter() - t0) * 1000)
    return (
        f"SMS settled sent, windows of 100 with touches and rollups: p50 {statistics.median(settles):.1f} ms"
        f"  p95 {pct(settles, 95):.1f} ms; a delivery report: p50 {statistics.median(reports):.2f} ms"
        f"  p95 {pct(reports, 95):.2f} ms"
    )


async def bench_board(agents: int, watchers: int, events: int) -> str:
    from switchboard.app import create_app
    from switchboard.keys import BOARD, STORE
    from switchboard.settings import load_settings

    tmp = tempfile.mkdtemp()
    s = load_settings(env={})
    s.store.url = f"sqlite:///{tmp}/board.db"
    s.server.time_zone = ZONE
    app = create_app(s)
    server = TestServer(app)
    await server.start_server()
    try:
        store = app[STORE]
        users = [await store.users.add(f"a{i}", role="rep", password="password-123") for i in range(agents)]
        boss = await store.users.add("boss", role="manager", password="password-123")
        token = await store.users.create_token(boss.id, "bench")
        board = app[BOARD]
        board.load(users)
        url = str(server.make_url("/ws/agent")) + f"?board=1&token={token}"
        async with aiohttp.ClientSession() as http:
            sockets = [await http.ws_connect(url) for _ in range(watchers)]
            for ws in sockets:
                while (json.loads((await ws.receive()).data))["type"] != "board":
                    pass
            lat: list[float] = []
            for k in range(events):
                u = users[k % agents]
                at = datetime.now(UTC)
                ev = (
                    CallRinging(f"c{k}", "inbound", "+15550001111", None, "x", "sales", at)
                    if k % 3 == 0
                    else CallAnswered(f"c{k - 1}", "x", at)
                    if k % 3 == 1
                    else CallEnded(
                        f"c{k - 2}",
                        "inbound",
                        "+15550001111",
                        None,
                        True,
                        "x",
                        "sales",
                        at,
                        at,
                        at,
                        1.0,
                        1.0,
                        16,
                        None,
                        None,
                    )
                )
                t0 = time.perf_counter()
                await board.call_event(ev, u)
                for ws in sockets:
                    while True:
                        msg = json.loads((await ws.receive()).data)
                        if msg["type"] == "agent":
                            break
                lat.append((time.perf_counter() - t0) * 1000)
            for ws in sockets:
                await ws.close()
        return (
            f"board: {agents} agents, {watchers} watching managers, {events} events: event to every "
            f"watcher p50 {statistics.median(lat):.2f} ms  p99 {pct(lat, 99):.2f} ms"
        )
    finally:
        await server.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--touches", type=int, default=1_000_000)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--watchers", type=int, default=5)
    ap.add_argument("--followups-only", action="store_true", help="build and time only the follow-up report")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/reports.db"
        s = Store(path, time_zone=ZONE)
        await s.open()
        await s.close()
        t0 = time.perf_counter()
        if args.followups_only:
            build(path, args.touches, followups_only=True)
            print(f"built {args.touches // 10:,} follow-ups in {time.perf_counter() - t0:.0f} s", flush=True)
            await bench_followups(path)
            return
        build(path, args.touches)
        print(
            f"built {args.touches:,} call touches + facts, {args.touches // 10:,} SMS,"
            f" {args.touches // 10:,} follow-ups in "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        await bench_reports(path)
    print(await bench_board(args.agents, args.watchers, 900), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
