"""The daily cadence sweep over N contacts (goal: 1M in <= 60 s; a second run makes nothing), and
My Day's p99 for a rep with 500 due follow-ups.

    python bench/followups_sweep.py [contacts]   (default 1,000,000)
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import pct, report

from crm_link.clock import ManualClock
from crm_link.store import Store
from followups.service import FollowupService, LoopSettings

NOW = datetime(2026, 6, 15, 14, 0, tzinfo=UTC)


async def build(store: Store, n: int) -> None:
    await store.users.add("ann", role="rep", password="password-1")
    rnd = random.Random(7)
    today = NOW.date()
    rows = []
    for i in range(1, n + 1):
        attrs = {
            "delivery_date": (today - timedelta(days=rnd.randrange(0, 5 * 365))).isoformat(),
            "last_service_date": (today - timedelta(days=rnd.randrange(0, 2 * 365))).isoformat(),
            "service_visits": rnd.randrange(0, 12),
            "insurance_expiry": (today + timedelta(days=rnd.randrange(0, 365))).isoformat(),
        }
        rows.append(
            (i, f"F{i}", f"L{i}", 1 if i % 3 else None, json.dumps(attrs), "2026-01-01T00:00:00.000000Z")
        )
    for start in range(0, n, 50_000):
        await store.db.execute_many(
            "INSERT INTO contacts (id, first_name, last_name, owner_id, attributes, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?6)",
            rows[start : start + 50_000],
        )


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    clock = ManualClock(NOW)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        async with Store(str(Path(tmp) / "b.db"), time_zone="America/Chicago", clock=clock) as store:
            t = time.perf_counter()
            await build(store, n)
            build_s = time.perf_counter() - t
            svc = FollowupService(store, clock, LoopSettings(time_zone="America/Chicago"))
            # the rules exist since long ago, so every step in the window is due work
            await svc.ensure_defaults()
            await store.db.execute_many("UPDATE cadences SET starts_on = ?", [("2000-01-01",)])
            t = time.perf_counter()
            first = await svc.sweep()
            first_s = time.perf_counter() - t
            t = time.perf_counter()
            again = await svc.sweep(restart=True)
            again_s = time.perf_counter() - t
            lines.append(
                f"followups_sweep contacts={n} build_s={build_s:.1f} first_s={first_s:.1f} created={first.created}"
                f" second_s={again_s:.1f} second_created={again.created}"
            )
            # My Day: a rep with 500 due follow-ups
            user = await store.users.by_username("ann")
            assert user is not None
            await store.db.execute_many(
                "UPDATE followups SET assignee_id = NULL WHERE assignee_id = ?", [(user.id,)]
            )
            ids = [r[0] for r in await store.db.fetchall("SELECT id FROM followups LIMIT 500")]
            await store.db.execute_many(
                "UPDATE followups SET assignee_id = ?, due_at = ? WHERE id = ?",
                [(user.id, "2026-06-15T12:00:00.000000Z", i) for i in ids],
            )
            samples = []
            for _ in range(200):
                t = time.perf_counter()
                items = await svc.my_day(user)
                samples.append(time.perf_counter() - t)
            assert len(items) == 500, len(items)
            lines.append(
                f"my_day_500_due n=200 p50_ms={pct(samples, 50) * 1e3:.1f} p99_ms={pct(samples, 99) * 1e3:.1f}"
                f" (store query + rows; the page adds rendering)"
            )
    report(lines)


if __name__ == "__main__":
    asyncio.run(main())
