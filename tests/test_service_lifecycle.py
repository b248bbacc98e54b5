"""The service as a real process: serves, stops cleanly on SIGTERM; the demo is safe to run twice."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["PYTHONPATH"] = str(REPO)
    env["SWITCHBOARD_STORE_URL"] = f"sqlite:///{tmp_path / 'svc.db'}"
    return env


def _wait_healthy(port: int, proc: subprocess.Popen[str], deadline_s: float = 60) -> dict[str, object]:
    import json

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(
                f"process exited early: {proc.returncode}\n{proc.stderr.read() if proc.stderr else ''}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                return json.loads(resp.read())
        except OSError:
            time.sleep(0.1)
    raise AssertionError("service did not become healthy")


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    env = _env(tmp_path) | {"SWITCHBOARD_SERVER_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchboard", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        health = _wait_healthy(port, proc)
        assert health["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "event=store_closed" in err  # cleanup ran, in order, before exit
    assert err.index("event=store_open") < err.index("event=store_closed")
    # the heap that exists once everything has started is frozen out of the cyclic GC's walks
    frozen = re.search(r"event=gc_frozen objects=(\d+)", err)
    assert frozen is not None and int(frozen[1]) > 0, err
    assert err.index("event=store_open") < frozen.start() < err.index("event=serve ")


def test_demo_twice_reuses_its_data(tmp_path: Path) -> None:
    outputs = []
    for _ in range(2):
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "switchboard", "demo", "--port", str(port)],
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_healthy(port, proc)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5) as resp:
                assert resp.status == 200
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        outputs.append(out)
    assert (
        "(new sample data)" in outputs[0]
        and "jsmith" in outputs[0]
        and "password 'switchboard'" in outputs[0]
    )
    assert "(existing sample data)" in outputs[1]
    assert (tmp_path / "demo-data" / "demo.db").exists()
