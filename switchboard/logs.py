"""Structured logging: one line per event, key=value, secrets never included."""

from __future__ import annotations

import logging
import sys
import time


class KeyValueFormatter(logging.Formatter):
    """`ts=… level=… logger=… event=… key=value …` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        msg = record.getMessage().replace("\n", "\\n")
        if "=" not in msg.split(" ", 1)[0]:
            msg = f'msg="{msg}"'
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} {msg}"
        if record.exc_info:
            line += " exc=" + self.formatException(record.exc_info).replace("\n", "\\n")
        return line


def setup_logging(level: str = "INFO") -> None:
    """Send every log record to stderr as key=value lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiosmtpd (the demo's mail sink) logs every SMTP command, and "Connection lost during
    # _handle_client()" at every normal end of a session, at INFO
    logging.getLogger("mail.log").setLevel(logging.WARNING)
