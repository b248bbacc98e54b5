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
