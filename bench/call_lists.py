"""Call-list scheduling cost: build a list of 100k entries across time zones, pick the next due entry.

python bench/call_lists.py [--entries 100000] [--picks 3000]

Prints: time to build (entries/s), next-entry pick latency (p50/p99) with some zones closed and a
share of entries waiting on retries, a pick when everything open is taken, and peak memory.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from datetime import UTC, datetime, timedelta

from _common import CACHE, describe_us, report

from campaigns.dialer.hours import CallingHours
from crm_link.call_lists import ListSpec
from crm_link.contacts import ContactFields
from crm_link.phones import Phone
from crm_link.store import Store

ZONES = [
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "America/Puerto_Rico",
]


def number(i: int) -> str:
    return f"+1{201 + i // 5_000_000}{2000000 + i % 5_000_000:07d}"


async def main(entries: int, picks: int) -> list[str]:
    path = CACHE / "call_lists.db"
    CACHE.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        p = path.with_name(path.name + suffix)
        if p.exists():
            p.unlink()
    lines = []
    async with Store(str(path)) as store:
        batch = []
        for i in range(entries):
            batch.append(
                ContactFields(
                    present={"first_name", "phones"},
                    first_name=f"C{i}",
                    time_zone=ZONES[i % len(ZONES)],
                    phones=[Phone(number(i), number(i), True, "mobile")],
                )
            )
            if len(batch) == 50_000:
                await store.contacts.bulk_insert(batch)
                batch = []
        if batch:
            await store.contacts.bulk_insert(batch)
        ids = [r[0] for r in await store.db.fetchall("SELECT id FROM contacts ORDER BY id")]
        # 16:00 UTC: 11:00 New York … 06:00 Honolulu: Honolulu and Anchorage are closed
        now = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
        hours = CallingHours.of("08:00", "21:00")
        started = time.perf_counter()
        cl, summary = await store.call_lists.create(
            ListSpec(name="bench", mode="progressive"), contact_ids=ids, now=now
        )
        build_s = time.perf_counter() - started
        lines.append(
            f"build entries={summary['added']} seconds={build_s:.2f} entries_per_s={summary['added'] / build_s:,.0f}"
        )
        # a third of the entries wait on a retry later today
        await store.db.execute_many(
            "UPDATE call_list_entries SET next_at = ? WHERE id = ?",
            [("2026-11-23T20:00:00.000000Z", i) for i in range(1, entries + 1, 3)],
        )
        samples = []
        for k in range(picks):
            t = time.perf_counter()
            zones = hours.open_zones(await store.call_lists.zones(cl.id), now)
            entry = await store.call_lists.claim(
                cl.id, zones=zones, now=now, owner="bench", lease=timedelta(seconds=120), agent_id=1 + k % 50
            )
            samples.append(time.perf_counter() - t)
            assert entry is not None and entry.time_zone in zones
        lines.append(
            describe_us("next_entry", samples, open_zones=len(zones), of_zones=len(ZONES), entries=entries)
        )
        # the empty case: every zone closed but one whose entries are all waiting on retries
        t = time.perf_counter()
        nothing = await store.call_lists.claim(
            cl.id,
            zones=["Pacific/Honolulu"],
            now=now - timedelta(days=1),
            owner="bench",
            lease=timedelta(seconds=120),
        )
        lines.append(
            f"next_entry_none_due us={(time.perf_counter() - t) * 1e6:.0f} found={nothing is not None}"
        )
        stats_t = time.perf_counter()
        await store.call_lists.stats(cl.id)
        lines.append(f"list_stats ms={(time.perf_counter() - stats_t) * 1e3:.1f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines.append(f"peak_rss_mb={rss:.0f} db_mb={path.stat().st_size / 1e6:.0f}")
    return lines


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--picks", type=int, default=3000)
    args = ap.parse_args()
    report(asyncio.run(main(args.entries, args.picks)))
