"""What a newcomer meets on the command line: honest progress rates, the demo's own store."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crm_link.sms import OutboxRow
from crm_link.store import Store
from tests.conftest import REPO


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    return env | {"PYTHONPATH": str(REPO)} | extra


async def _stalled_blast(db: Path) -> int:
    """A running blast, 1 of 5 sent, that no sender is working on."""
    now = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
    async with Store(str(db)) as store:
        blast_id = await store.sms.create_blast(
            name="Stalled", text="Hi", channel="main", audience={"tag": "t"}, created_by=None, send_at=None,
            cron=None, time_zone="UTC", rate_per_second=None, next_run_at=None, claim_lease=timedelta(minutes=10),
        )  # fmt: skip
        rows = [
            OutboxRow(to_e164=f"+1212736{5000 + i}", text="Hi", channel="main", not_before=now)
            for i in range(5)
        ]
        await store.sms.materialize(blast_id, 1, rows)
        (msg,) = await store.sms.claim("main", now, 1)
        await store.sms.settle([(msg, "sent", "P1", None, None)])
    return blast_id


async def _set_state(db: Path, blast_id: int, state: str) -> None:
    async with Store(str(db)) as store:
        await store.sms.set_blast_state(blast_id, state)


def test_watch_shows_no_rate_when_nothing_moves(tmp_path: Path) -> None:
    """`sms show --watch` on a terminal, on a blast where nothing moves: the rate is 0/s (or not
    shown on the first draw), never the count divided by a few microseconds."""
    db = tmp_path / "cli.db"
    blast_id = asyncio.run(_stalled_blast(db))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchboard", "sms", "show", str(blast_id), "--watch", "--interval", "0.05"],
        cwd=tmp_path,
        env=_env(SWITCHBOARD_STORE_URL=f"sqlite:///{db}"),
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    screen = b""
    try:
        deadline = time.monotonic() + 60
        while screen.count(b"\r") < 4:  # four redraws of the bar
            assert time.monotonic() < deadline, screen
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                screen += os.read(master, 4096)
        asyncio.run(_set_state(db, blast_id, "paused"))
        out, _ = proc.communicate(timeout=60)
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 0
    assert f"blast {blast_id}: paused" in out
    draws = [d.strip() for d in screen.decode().replace("\x1b[K", "").split("\r") if "[" in d]
    assert len(draws) >= 4, draws
    for draw in draws:
        m = re.fullmatch(rf"blast {blast_id} \[[#.]+\] 1/5( (?P<rate>[\d,]+)/s)?", draw)
        assert m is not None, draw
        assert m["rate"] in (None, "0"), draw


def _cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchboard", *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_show_in_the_demo_folder_reads_the_demos_store(tmp_path: Path) -> None:
    """Run where `switchboard demo` keeps its data, `sms show` / `call-lists show` read the demo's
    store (and say so) instead of creating an empty ./switchboard.db."""
    (tmp_path / "demo-data").mkdir()
    blast_id = asyncio.run(_stalled_blast(tmp_path / "demo-data" / "demo.db"))
    proc = _cli(tmp_path, "sms", "show", str(blast_id))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"blast {blast_id}: running; 4 queued, 0 sending, 1 sent")
    assert "using the demo's store demo-data/demo.db" in proc.stderr
    proc = _cli(tmp_path, "call-lists", "show", "1")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == "switchboard: error: ID: no call list 1 in demo-data/demo.db"
    assert not (tmp_path / "switchboard.db").exists()
    # a store that is configured is the one used, demo folder or not
    other = tmp_path / "other.db"
    proc = _cli(tmp_path, "sms", "show", str(blast_id), SWITCHBOARD_STORE_URL=f"sqlite:///{other}")
    assert proc.returncode == 2 and "using the demo" not in proc.stderr
    assert not other.exists()


def test_read_only_commands_never_create_a_store(tmp_path: Path) -> None:
    for args in (("sms", "show", "1"), ("call-lists", "show", "1"), ("sms", "show", "1", "--watch")):
        proc = _cli(tmp_path, *args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.splitlines() == [
            "switchboard: error: store: no store at switchboard.db (store.url = 'sqlite:///switchboard.db'); "
            "run `switchboard init` or `switchboard demo` first, or pass --config"
        ]
    assert list(tmp_path.iterdir()) == []
