"""Shared helpers for benchmarks: percentiles, a cached 1M-contact store, appending to BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
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
