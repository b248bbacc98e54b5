"""Recording search on 1M indexed recordings: p50/p99 of the managers' common filters; reindex rate.

python bench/recordings_search.py [--recordings 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import struct
import time
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import CACHE, describe_us, report

from crm_link.contacts import ContactFields
from crm_link.phones import Phone
from crm_link.recordings import RecordingFilter
from crm_link.store import Store
from recordings.service import RecordingService

NOW = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)


def number(i: int) -> str:
    return f"+1212{2000000 + i % 8000000:07d}"


async def build(path: Path, n: int) -> float:
    t = time.perf_counter()
    rng = random.Random(5)
    async with Store(str(path)) as store:
        await store.users.add_many(
            [(f"agent{i}", "rep", str(1000 + i)) for i in range(200)], password="bench-pass"
        )
        await store.contacts.bulk_insert(
            [
                ContactFields(
                    first_name=f"F{i}",
                    last_name=rng.choice(["Doe", "Smith", "Lee", "Garcia", "Brown"]),
                    phones=[Phone(number(i), number(i), True, "mobile")],
                )
                for i in range(100_000)
            ]
        )
        batch = []
        for i in range(n):
            agent = rng.randrange(200)
            contact = rng.randrange(100_000)
            started = NOW - timedelta(seconds=rng.randrange(365 * 86400))
            inbound = rng.random() < 0.6
            batch.append(
                {
                    "source": "asterisk",
                    "pbx_name": f"{i}.wav",
                    "call_key": f"asterisk:{i}",
                    "contact_id": contact + 1,
                    "user_id": agent + 1,
                    "extension": str(1000 + agent),
                    "direction": "inbound" if inbound else "outbound",
                    "from_number": number(contact) if inbound else str(1000 + agent),
                    "to_number": "7000" if inbound else number(contact),
                    "started_at": started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "duration_s": float(rng.randint(5, 900)),
                    "format": "wav",
                    "size": 100_000,
                    "storage_path": f"x/{i}.wav",
                    "state": "indexed",
                    "notes": "customer complained" if rng.random() < 0.01 else "",
                }
            )
            if len(batch) == 50_000:
                await store.recordings.bulk_load(batch)
                batch = []
        if batch:
            await store.recordings.bulk_load(batch)
        await store.db.execute_many("ANALYZE", [()])
    return time.perf_counter() - t


async def searches(path: Path, samples: int) -> list[str]:
    rng = random.Random(9)
    out = []
    async with Store(str(path)) as store:

        def day() -> tuple[datetime, datetime]:
            start = NOW - timedelta(days=rng.randrange(365))
            return start, start + timedelta(days=1)

        cases = {
            "extension+day+direction": lambda: RecordingFilter(
                extension=str(1000 + rng.randrange(200)),
                direction="inbound",
                since=day()[0],
                until=day()[0] + timedelta(days=1),
            ),
            "agent+week": lambda: RecordingFilter(
                user_id=rng.randrange(200) + 1, since=NOW - timedelta(days=7)
            ),
            "number": lambda: RecordingFilter(number=number(rng.randrange(100_000))),
            "contact": lambda: RecordingFilter(contact_id=rng.randrange(100_000) + 1),
            "day+min_duration": lambda: RecordingFilter(
                since=day()[0], until=day()[0] + timedelta(days=1), min_duration=300
            ),
            "free_text": lambda: RecordingFilter(q="complained " + rng.choice(["Doe", "Smith", "Lee"])),
            "newest_page": lambda: RecordingFilter(),
        }
        for name, make in cases.items():
            times = []
            for _ in range(samples):
                f = make()
                t = time.perf_counter()
                await store.recordings.search(f, limit=50)
                times.append(time.perf_counter() - t)
            out.append(describe_us(f"recordings_search_{name}", times, recordings=await count(store)))
    return out


async def count(store: Store) -> int:
    rows = await store.db.fetchall("SELECT count(*) FROM recordings")
    return int(rows[0][0])


async def reindex_rate(files: int) -> str:
    work = CACHE / "reindex"
    shutil.rmtree(work, ignore_errors=True)
    monitor = work / "monitor"
    monitor.mkdir(parents=True)
    frames = b"".join(struct.pack("<h", i % 3000) for i in range(8000 * 5))
    for i in range(files):
        with wave.open(str(monitor / f"{i}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(frames)
    async with Store(str(work / "r.db")) as store:
        service = RecordingService(store, watch_dir=monitor, storage_dir=work / "storage")
        t = time.perf_counter()
        rep = await service.scan_once(force=True)
        dt = time.perf_counter() - t
    return f"recordings_reindex files={rep.indexed} file_kb=78 seconds={dt:.1f} files_per_s={rep.indexed / dt:,.0f}"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recordings", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--reindex-files", type=int, default=2000)
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    db = CACHE / f"recordings-{args.recordings}.db"
    lines = []
    if not db.exists():
        lines.append(f"build_recordings n={args.recordings} seconds={await build(db, args.recordings):.1f}")
    lines += await searches(db, args.samples)
    lines.append(await reindex_rate(args.reindex_files))
    report(lines)


if __name__ == "__main__":
    asyncio.run(main())
