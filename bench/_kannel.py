"""Debian's real Kannel (bearerbox + smsbox + fakesmsc) on free loopback ports, as tests/sms starts it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from _common import ROOT, free_port

BINARIES = ("/usr/sbin/bearerbox", "/usr/sbin/smsbox", "/usr/lib/kannel/test/fakesmsc")


def _wait(check: object, what: str, seconds: float = 20) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise RuntimeError(f"Kannel did not start: {what}")


def _status_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return "Status: running" in resp.read().decode(errors="replace")
    except OSError:
        return False


def _listens(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def real_kannel() -> Iterator[str]:
    """Start Kannel; yields its sendsms URL (user `tester`, password `secret`)."""
    missing = [b for b in BINARIES if not os.path.exists(b)]
    if missing:
        raise SystemExit(
            f"Kannel is not installed ({', '.join(missing)}): apt-get install kannel kannel-extras"
        )
    admin, box, smsc, sendsms = (free_port() for _ in range(4))
    with tempfile.TemporaryDirectory(prefix="bench-kannel-") as tmp:
        conf = (ROOT / "tests" / "fixtures" / "kannel" / "kannel.conf").read_text().replace("LOGDIR", tmp)
        for line, port in (("admin-port = 13000", admin), ("smsbox-port = 13001", box), ("port = 10000", smsc),
                           ("bearerbox-port = 13001", box), ("sendsms-port = 13013", sendsms)):  # fmt: skip
            conf = conf.replace(line, line.split("=")[0] + f"= {port}")
        path = Path(tmp) / "kannel.conf"
        path.write_text(conf)
        procs: list[subprocess.Popen[bytes]] = []
        quiet = {"cwd": tmp, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        try:
            procs.append(subprocess.Popen([BINARIES[0], str(path)], **quiet))  # type: ignore[call-overload]
            _wait(lambda: _status_ok(f"http://127.0.0.1:{admin}/status.txt?password=adminpw"), "bearerbox")
            procs.append(subprocess.Popen([BINARIES[1], str(path)], **quiet))  # type: ignore[call-overload]
            _wait(lambda: _listens(sendsms), "smsbox")
            procs.append(
                subprocess.Popen([BINARIES[2], "-r", str(smsc), "-m", "0", "1 2 text x"], **quiet)  # type: ignore[call-overload]
            )
            time.sleep(1.0)  # fakesmsc connects to bearerbox
            yield f"http://127.0.0.1:{sendsms}/cgi-bin/sendsms"
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in reversed(procs):
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
