"""Store benchmarks: caller-ID lookup on 1M contacts (2M phones), touch write-back, CSV import.

python bench/store.py [--contacts 1000000] [--touches 20000] [--import-rows 100000] [--store postgres]

--store postgres runs the same figures on a throwaway PostgreSQL cluster (tests/pg_cluster.py, with
PostgreSQL's default durability) instead of SQLite files; its contacts are built every run.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime

from _common import CACHE, ROOT, BenchStore, describe_us, report

from crm_link.contacts import ContactFields
from crm_link.db import to_db_time
from crm_link.store import Store
from crm_link.touches import TouchInput

ZONES = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"]


def number(i: int) -> str:
    # +1 area (201..999) exchange 2xx-9xx: valid-looking North American numbers, unique per i
    area = 201 + (i // 10_000_000) % 700
    return f"+1{area}{2000000 + i % 8000000:07d}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# One INSERT … SELECT per chunk, the rows generated inside SQLite (a recursive CTE), so a 10M-contact
# store builds without a Python object per contact; the same names, zones and numbers as `number`
# (mobile at 2i, landline at 2i + 1), and the store's triggers (the CRM event per contact) fire as
# they do for any insert.
_SEED_CONTACTS = """
WITH RECURSIVE k(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?)
INSERT INTO contacts (id, first_name, last_name, time_zone, attributes, created_at, updated_at)
SELECT i + 1, 'F' || i, 'L' || i,
       CASE i % 4 WHEN 0 THEN 'America/New_York' WHEN 1 THEN 'America/Chicago'
                  WHEN 2 THEN 'America/Denver' ELSE 'America/Los_Angeles' END,
       '{}', ?, ? FROM k
"""
_SEED_PHONES = """
WITH RECURSIVE k(j) AS (SELECT ? UNION ALL SELECT j + 1 FROM k WHERE j + 1 < ?),
     n(j, e164) AS (SELECT j, '+1' || (201 + (j / 10000000) % 700) || printf('%07d', 2000000 + j % 8000000) FROM k)
INSERT INTO contact_phones (contact_id, raw, e164, valid, kind, position)
SELECT j / 2 + 1, e164, e164, 1, CASE j % 2 WHEN 0 THEN 'mobile' ELSE 'landline' END, j % 2 FROM n
"""


async def build(path: str, n: int, chunk: int = 250_000) -> float:
    started = time.perf_counter()
    async with Store(path) as store:
        now = to_db_time(datetime.now(UTC))
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            async with store.db.transaction() as tx:
                await tx.execute(_SEED_CONTACTS, (lo, hi, now, now))
                await tx.execute(_SEED_PHONES, (2 * lo, 2 * hi))
        await store.db.execute_many("ANALYZE", [()])
        rows = await store.db.fetchall(
            "SELECT (SELECT count(*) FROM contacts), (SELECT e164 FROM contact_phones WHERE id = 2)"
        )
        assert rows[0][0] == n and (n < 1 or rows[0][1] == number(1)), tuple(rows[0])
    return time.perf_counter() - started


async def lookups(path: str, n: int, samples: int, *, with_writes: bool) -> list[str]:
    rng = random.Random(1)
    out = []
    async with Store(path) as store:
        await store.touches.start_batching()
        stop = asyncio.Event()
        written = 0

        async def writer() -> None:
            nonlocal written
            k = 0
            while not stop.is_set():
                await asyncio.gather(
                    *(
                        store.touches.record(
                            TouchInput(
                                source_key=f"bench-bg:{time.time_ns()}:{j}",
                                kind="call",
                                direction="inbound",
                                started_at=datetime.now(UTC),
                                contact_id=rng.randint(1, n),
                            )
                        )
                        for j in range(20)
                    )
                )
                written += 20
                k += 1
                await asyncio.sleep(0.01)  # ~2,000 touches/s in the background

        bg = asyncio.create_task(writer()) if with_writes else None
        for label, fn in (
            ("ids_by_phone", store.contacts.ids_by_phone),
            ("find_by_phone", store.contacts.find_by_phone),
        ):
            times = []
            for _ in range(samples):
                e164 = number(rng.randrange(2 * n))
                t = time.perf_counter()
                found = await fn(e164)
                times.append(time.perf_counter() - t)
                assert found, e164
            out.append(
                describe_us(
                    f"caller_id_{label}",
                    times,
                    contacts=n,
                    phones=2 * n,
                    concurrent_touch_writes="yes" if with_writes else "no",
                )
            )
        stop.set()
        if bg:
            await bg
        await store.touches.stop_batching()
    return out


async def touch_writes(path: str, count: int) -> list[str]:
    out = []
    async with Store(path) as store:
        # one transaction per touch, sequential callers
        t = time.perf_counter()
        for i in range(count // 4):
            await store.touches.record(
                TouchInput(
                    source_key=f"seq:{i}",
                    kind="sms",
                    direction="outbound",
                    started_at=datetime.now(UTC),
                    contact_id=1 + i % 1000,
                )
            )
        dt = time.perf_counter() - t
        out.append(f"touch_write_one_tx_per_touch n={count // 4} touches_per_s={count / 4 / dt:,.0f}")
        # group commit: 200 concurrent writers; 30% of keys are updates of earlier touches
        await store.touches.start_batching()
        acked: list[str] = []

        async def one(i: int) -> None:
            key = f"grp:{i if i % 10 >= 3 else i // 2}"
            await store.touches.record(
                TouchInput(
                    source_key=key,
                    kind="call",
                    direction="inbound",
                    started_at=datetime.now(UTC),
                    contact_id=1 + i % 1000,
                    status="answered",
                )
            )
            acked.append(key)

        t = time.perf_counter()
        for start in range(0, count, 200):
            await asyncio.gather(*(one(i) for i in range(start, min(count, start + 200))))
        dt = time.perf_counter() - t
        await store.touches.stop_batching()
        rows = await store.db.fetchall("SELECT source_key FROM touches WHERE source_key LIKE 'grp:%'")
        missing = set(acked) - {r[0] for r in rows}
        assert not missing, f"acknowledged touches missing: {sorted(missing)[:5]}"
        out.append(
            f"touch_write_group_commit n={count} touches_per_s={count / dt:,.0f} acked_all_present=yes"
            f" distinct_keys={len(set(acked))}"
        )
    return out


def import_bench(rows: int, store_url: str) -> list[str]:
    work = CACHE / "import"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    path = work / "contacts.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["First Name", "Last Name", "Mobile", "Email", "Vehicle", "Purchase Date", "Tags"])
        for i in range(rows):
            phone = "12" if i % 1000 == 999 else number(i)
            w.writerow([f"F{i}", f"L{i}", phone, f"p{i}@example.com", "2024 Civic", "2026-11-18", "customer"])
    env = {
        "SWITCHBOARD_STORE_URL": store_url,
        "PYTHONPATH": str(ROOT),
        "PATH": "/usr/bin:/bin",
    }
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "switchboard", "import", "contacts", str(path)],
        env=env,
        cwd=ROOT,  # not bench/: its reports.py would hide the reports package
        capture_output=True,
        text=True,
    )
    dt = time.perf_counter() - t
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SystemExit(f"switchboard import failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    summary = proc.stdout.strip().splitlines()[-1]
    return [
        f'import_contacts_cli rows={rows} seconds={dt:.1f} rows_per_s={rows / dt:,.0f} result="{summary}"'
    ]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contacts", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--touches", type=int, default=20_000)
    ap.add_argument("--import-rows", type=int, default=100_000)
    ap.add_argument("--lookup-only", action="store_true", help="build if needed, time idle lookups, stop")
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    with BenchStore(args.store) as where:
        lines = [where.describe(), f"load_average={' '.join(f'{x:.2f}' for x in os.getloadavg())}"]
        name = f"contacts-{args.contacts}"
        db = where.url(name)
        if not where.exists(name):
            took = await build(where.fresh(name), args.contacts)
            lines.append(
                f"build_store contacts={args.contacts} phones={2 * args.contacts} seconds={took:.1f}"
                f" peak_rss_mb={peak_rss_mb():.0f}"
            )
        lines += await lookups(db, args.contacts, args.samples, with_writes=False)
        if args.lookup_only:
            if args.store == "sqlite":
                lines.append(f"db_mb={os.path.getsize(db) / 2**20:.0f}")  # noqa: ASYNC240 (after the measured part)
            lines.append(f"peak_rss_mb={peak_rss_mb():.0f}")
            report(lines)
            return
        lines += await lookups(db, args.contacts, args.samples // 4, with_writes=True)
        tdb = where.fresh("touches")
        async with Store(tdb) as store:
            await store.contacts.bulk_insert([ContactFields(first_name=f"T{i}") for i in range(1000)])
        lines += await touch_writes(tdb, args.touches)
        if args.import_rows:
            imp = where.fresh("import_bench")
            lines += import_bench(args.import_rows, imp if args.store == "postgres" else f"sqlite:///{imp}")
        lines.append(f"load_average={' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    report(lines)


if __name__ == "__main__":
    asyncio.run(main())
