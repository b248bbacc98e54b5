"""The sign-in limiter on the store: what a login costs now that failures are counted in the database.

python bench/login_limiter.py [--backlog 50000] [--n 2000] [--store postgres]

The store first holds `--backlog` failures spread over the last day (1,000 addresses spraying 5,000
account names), as after a day of guessing; then, per figure, `--n` operations one after another:
`check` (the limiter's retry_after: an address's last minute, an account's count, its known
addresses), `failed` (one failure recorded, old ones pruned) and `succeeded` (a sign-in clearing its
account). The store's clock is a ManualClock moved 10 ms per operation, so the windows hold the same
rows on every run.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta

from _common import BenchStore, describe_us, report

from crm_link.clock import ManualClock
from crm_link.store import Store
from switchboard.web.auth import LoginLimiter


async def run(path: str, backlog: int, n: int) -> list[str]:
    clock = ManualClock(datetime(2031, 3, 4, 15, 0, tzinfo=UTC))
    async with Store(path, clock=clock) as store:
        limiter = LoginLimiter(lambda: store.logins, 10)
        step = timedelta(days=1) / max(backlog, 1)
        started = time.perf_counter()
        for i in range(backlog):
            await store.logins.failed(f"10.{i % 1000 // 250}.{i % 250}.1", f"user{i % 5000}")
            clock.advance(step)
        fill = time.perf_counter() - started
        lines = [f"backlog rows={backlog} fill_s={fill:.1f} ({backlog / fill:.0f} failures/s)"]
        figures: dict[str, list[float]] = {"check": [], "failed": [], "succeeded": []}
        for i in range(n):
            address, account = f"10.{i % 1000 // 250}.{i % 250}.1", f"user{i % 5000}"
            for name, op in (
                ("check", limiter.retry_after),
                ("failed", limiter.failed),
                ("succeeded", limiter.succeeded),
            ):
                t = time.perf_counter()
                await op(address, account)
                figures[name].append(time.perf_counter() - t)
            clock.advance(milliseconds=10)
        rows = await store.db.fetchone("SELECT COUNT(*) AS n FROM login_failures")
        lines += [describe_us(name, samples) for name, samples in figures.items()]
        lines.append(f"rows_after={rows['n'] if rows else '?'}")
        return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backlog", type=int, default=50_000)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    with BenchStore(args.store) as where:
        path = where.fresh("login-limiter")
        lines = asyncio.run(run(path, args.backlog, args.n))
        report([where.describe(), *lines])


if __name__ == "__main__":
    main()
