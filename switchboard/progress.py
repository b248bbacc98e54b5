"""A small progress bar for long CLI jobs (stderr; one line per 10% when not a terminal)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class ProgressBar:
    """`label [#####.....] done/total rate/s`, redrawn in place on a terminal.

    The rate is what moved since the first draw over the time that really passed since then: the
    first draw shows none (a watched job may already be half done), a job where nothing moves
    shows 0/s."""

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.clock = clock
        self._first: tuple[float, int] | None = None
        self._last_decile = -1
        self.tty = self.stream.isatty()

    def rate(self, done: int) -> float | None:
        """Items per second since the first draw; None before there is an interval to measure."""
        now = self.clock()
        if self._first is None:
            self._first = (now, done)
            return None
        t0, d0 = self._first
        if now <= t0:
            return None
        return max(0, done - d0) / (now - t0)

    def __call__(self, done: int, total: int) -> None:
        frac = done / total if total else 1.0
        filled = int(frac * self.width)
        rate = self.rate(done)
        line = f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}"
        if rate is not None:
            line += f" {rate:,.0f}/s"
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K" + ("\n" if done >= total else ""))
            self.stream.flush()
        else:
            decile = int(frac * 10)
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(line + "\n")
                self.stream.flush()
