"""A small progress bar for long CLI jobs (stderr; one line per 10% when not a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`label [#####.....] done/total rate/s`, redrawn in place on a terminal."""

    def __init__(self, label: str, *, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.started = time.monotonic()
        self._last_decile = -1
        self.tty = self.stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        frac = done / total if total else 1.0
        elapsed = max(time.monotonic() - self.started, 1e-9)
        filled = int(frac * self.width)
        line = f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {done / elapsed:,.0f}/s"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
            self.stream.flush()
        else:
            decile = int(frac * 10)
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(line + "\n")
                self.stream.flush()
