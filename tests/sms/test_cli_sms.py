"""`switchboard sms show ID [--watch]`: a blast's progress on the command line."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crm_link.sms import OutboxRow
from crm_link.store import Store
from tests.conftest import REPO


async def _run(tmp_path: Path, db: Path, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env |= {"SWITCHBOARD_STORE_URL": f"sqlite:///{db}", "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard", *args, env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_sms_show_and_watch(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    now = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
    async with Store(str(db)) as store:
        blast_id = await store.sms.create_blast(
            name="Saturday", text="Hi", channel="main", audience={"tag": "t"}, created_by=None, send_at=None,
            cron=None, time_zone="UTC", rate_per_second=None, next_run_at=None,
            claim_lease=timedelta(minutes=10),
        )  # fmt: skip
        rows = [
            OutboxRow(to_e164=f"+1212736{5000 + i}", text="Hi", channel="main", not_before=now)
            for i in range(4)
        ]
        rows.append(
            OutboxRow(
                to_e164="+12127365099",
                text="Hi",
                channel="main",
                not_before=now,
                state="skipped",
                reason="opted out of SMS",
            )
        )
        await store.sms.materialize(blast_id, 1, rows)
    code, out, _ = await _run(tmp_path, db, "sms", "show", str(blast_id))
    assert (
        code == 0
        and out.startswith(f"blast {blast_id}: running; 4 queued, 0 sending, 0 sent")
        and "1 skipped" in out
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env |= {"SWITCHBOARD_STORE_URL": f"sqlite:///{db}", "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard", "sms", "show", str(blast_id), "--watch", "--interval", "0.05",
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None and proc.stdout is not None
    stderr = proc.stderr
    bars: list[str] = []

    async def next_bar() -> str:
        line = (await asyncio.wait_for(stderr.readline(), 60)).decode()
        assert line.startswith(f"blast {blast_id} ["), line
        bars.append(line)
        return line

    assert " 1/5" in await next_bar()  # the skipped one is already final
    async with Store(str(db)) as store:
        for k in range(4):  # the sender works through the blast while the command watches
            (msg,) = await store.sms.claim("main", now, 1)
            await store.sms.settle([(msg, "sent", "P1", None, None)])
            if k == 3:
                await store.sms.finish_blasts()
            assert f" {k + 2}/5" in await next_bar()
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, err
    assert "done; 0 queued, 0 sending, 4 sent" in out
    code, _, err = await _run(tmp_path, db, "sms", "show", "999")
    assert code == 2 and "ID: no blast 999" in err
