"""`switchboard serve` / `demo` that cannot start: one line naming why, a non-zero exit, no
traceback, no hang; what had started is closed again."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

KANNEL = (
    'type = "kannel"\nsendsms_url = "http://127.0.0.1:9/x"\nusername = "u"\npassword = "p"\nsecret = "s"\n'
)


def _run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    base["PYTHONPATH"] = str(REPO)
    base["SWITCHBOARD_STORE_URL"] = f"sqlite:///{tmp_path / 'svc.db'}"
    return subprocess.run(
        [sys.executable, "-m", "switchboard", *args],
        cwd=tmp_path,
        env=base | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,  # a hang fails the test
    )


def _error_lines(stderr: str) -> list[str]:
    """What stderr says besides the structured log lines."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("ts=")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("table", "setting"),
    [
        # found only when the channel is built, after the store and the dialer have started
        ('type = "kannel"\nusername = "u"\npassword = "p"\nsecret = "s"\n', "sms.channels.main.sendsms_url"),
        (KANNEL + 'unknown_policy = "maybe"\n', "sms.channels.main.unknown_policy"),
        ('type = "modem"\nport = "/dev/null"\nbaudrate = "fast"\n', "sms.channels.main.baudrate"),
    ],
)
def test_bad_channel_setting_exits_2_with_one_line(tmp_path: Path, table: str, setting: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[sms.channels.main]\n" + table)
    proc = _run(tmp_path, "serve", "--config", str(cfg), env={"SWITCHBOARD_SERVER_PORT": str(_free_port())})
    assert proc.returncode == 2, proc.stderr
    assert _error_lines(proc.stderr) == [
        line
        for line in _error_lines(proc.stderr)
        if line.startswith(f"switchboard: error: setting {setting}:")
    ]
    assert len(_error_lines(proc.stderr)) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr
    # what had started (the store first) was closed again, in order
    assert proc.stderr.index("event=store_open") < proc.stderr.index("event=store_closed")


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_port_in_use_is_one_line(tmp_path: Path, command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["demo", "--port", str(port)] if command == "demo" else ["serve"]
        proc = _run(tmp_path, *args, env={"SWITCHBOARD_SERVER_PORT": str(port)})
    assert proc.returncode == 2, proc.stderr
    assert _error_lines(proc.stderr) == [
        f"switchboard: error: setting server.port: 127.0.0.1:{port} is already in use"
    ], proc.stderr
    assert "at http://" not in proc.stdout  # no banner for a service that is not there
    assert proc.stderr.index("event=store_open") < proc.stderr.index("event=store_closed")
