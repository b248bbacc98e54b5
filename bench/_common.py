"""Shared helpers for benchmarks: percentiles, a cached 1M-contact store, appending to BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = Path("/tmp/switchboard-bench")


def pct(samples: list[float], p: float) -> float:
    """The p-th percentile (0-100) of samples."""
    ordered = sorted(samples)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def describe_us(name: str, samples_s: list[float], **extra: object) -> str:
    us = [s * 1e6 for s in samples_s]
    fields = " ".join(f"{k}={v}" for k, v in extra.items())
    return (
        f"{name} n={len(us)} p50_us={pct(us, 50):.1f} p99_us={pct(us, 99):.1f} max_us={max(us):.1f}"
        f" mean_us={statistics.fmean(us):.1f} {fields}"
    ).rstrip()


def machine() -> str:
    return f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores"


def report(lines: list[str]) -> None:
    """Print the figures (BENCHMARKS.md is edited by hand from these, with the command)."""
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {machine()}")
    for line in lines:
        print(line)


class SmtpCountingSink:
    """An aiosmtpd handler that accepts every message and counts them."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.count += 1
        return "250 OK"


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BenchStore:
    """Where a benchmark's store lives: a SQLite file under CACHE, or a database on a throwaway
    PostgreSQL cluster (tests/pg_cluster.py: initdb + pg_ctl in a temp dir, loopback) started on entry
    and removed on exit. `url(name)` is what `Store(...)` takes.

    The tests' cluster runs with fsync, synchronous_commit and full_page_writes off; a benchmark's runs
    with PostgreSQL's defaults (every commit flushed to disk), as a production server would, unless
    `durable` is False."""

    def __init__(self, kind: str, *, durable: bool = True) -> None:
        if kind not in ("sqlite", "postgres"):
            raise ValueError(f"--store: sqlite or postgres, got {kind!r}")
        self.kind = kind
        self.durable = durable
        self._dir: Path | None = None
        self._admin = ""

    def __enter__(self) -> BenchStore:
        if self.kind == "postgres":
            import tempfile

            from tests.pg_cluster import restart, start, stop

            self._dir = Path(tempfile.mkdtemp(prefix="switchboard-bench-pg-"))
            self._admin = start(self._dir)
            if self.durable:  # command-line settings beat ALTER SYSTEM: restart with the defaults
                stop(self._dir)
                opts = self._dir / "opts"
                kept = [o for o in opts.read_text().split(" -c ") if o.split("=")[0] not in _UNSAFE]
                opts.write_text(" -c ".join(kept))
                restart(self._dir)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._dir is not None:
            import shutil

            from tests.pg_cluster import stop

            stop(self._dir)
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def fresh(self, name: str) -> str:
        """An empty store called `name` (its SQLite file and WAL removed, or a new database)."""
        if self.kind == "sqlite":
            path = CACHE / f"{name}.db"
            for p in CACHE.glob(f"{name}.db*"):
                p.unlink()
            return str(path)
        import psycopg

        name = name.replace("-", "_")
        with psycopg.connect(self._admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())
            conn.execute(f"CREATE DATABASE {name}".encode())
        return self.url(name)

    def url(self, name: str) -> str:
        if self.kind == "sqlite":
            return str(CACHE / f"{name}.db")
        return self._admin.rsplit("/", 1)[0] + "/" + name.replace("-", "_")

    def exists(self, name: str) -> bool:
        """Whether a store built earlier can be reused (SQLite files are cached across runs)."""
        return self.kind == "sqlite" and (CACHE / f"{name}.db").exists()

    def describe(self) -> str:
        if self.kind == "sqlite":
            return "store=sqlite journal=wal synchronous=normal"
        import psycopg

        with psycopg.connect(self._admin) as conn:
            got = [conn.execute(f"SHOW {name}".encode()).fetchone() for name in ("server_version", *_UNSAFE)]
        values = " ".join(f"{k}={r[0] if r else '?'}" for k, r in zip(("server", *_UNSAFE), got, strict=True))
        return f"store=postgres {values}"


_UNSAFE = ("fsync", "synchronous_commit", "full_page_writes")
