"""`switchboard call-lists show ID --watch`: a progress bar that follows a list until it is done."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crm_link.call_lists import ListSpec
from crm_link.store import Store
from tests.conftest import REPO
from tests.dialer.conftest import add_customers

NOW = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)


async def test_watch_follows_the_list_to_the_end(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    async with Store(str(db)) as store:
        ids = await add_customers(store, [f"+1212736{5000 + i}" for i in range(10)])
        cl, _ = await store.call_lists.create(ListSpec(name="w", mode="preview"), contact_ids=ids, now=NOW)
        await store.call_lists.set_state(cl.id, "running", NOW)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env |= {"SWITCHBOARD_STORE_URL": f"sqlite:///{db}", "PYTHONPATH": str(REPO)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "switchboard", "call-lists", "show", str(cl.id), "--watch", "--interval", "0.05",
            env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        progress: list[str] = []

        async def next_bar() -> str:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()  # type: ignore[union-attr]
            assert line.startswith(f"call list {cl.id} ["), line
            progress.append(line)
            return line

        assert " 0/10" in await next_bar()
        for k in range(10):  # an agent works through the list while the command watches, bar by bar
            entry = await store.call_lists.claim(
                cl.id, zones=["America/New_York"], now=NOW, owner="agent:1", lease=timedelta(minutes=5)
            )
            assert entry is not None
            await store.call_lists.skip(entry.id, "agent:1", "not interested", NOW)
            if k == 9:
                await store.call_lists.finish_if_empty(cl.id, NOW)
            assert f" {k + 1}/10" in await next_bar()
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert "done; 0 pending, 0 in progress, 0 done, 10 skipped of 10" in out.decode()
    # bad input: exit 2 naming the argument
    bad = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard", "call-lists", "show", "999", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await bad.communicate()
    assert bad.returncode == 2 and b"ID: no call list 999" in err
