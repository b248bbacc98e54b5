"""A `switchboard serve` process killed with SIGKILL mid-delivery loses no event: restarted, it sends
what was not acknowledged; the receiver, deduplicating by event id, holds every event exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from crm_link.contacts import validate_contact
from crm_link.store import Store
from switchboard.sim.crm_standin import CrmStandIn
from tests.conftest import REPO, free_port
from tests.webhooks.conftest import SECRET, until

N = 400


async def _serve(config: Path, cwd: Path) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")} | {
        "PYTHONPATH": str(REPO)
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard", "serve", "--config", str(config),
        cwd=cwd, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_sigkill_mid_delivery_loses_nothing(tmp_path: Path, crm: CrmStandIn) -> None:
    db = tmp_path / "svc.db"
    config = tmp_path / "switchboard.toml"
    config.write_text(
        f'[server]\nport = {free_port()}\n[store]\nurl = "sqlite:///{db}"\n'
        "[crm]\nretry_first_seconds = 0.05\nretry_max_seconds = 0.5\npoll_seconds = 0.05\nlease_seconds = 2\n"
        f'[[crm.webhooks]]\nname = "dms"\nurl = "{crm.url}/hooks/switchboard"\nsecret = "{SECRET}"\n'
        'events = ["contact.*"]\nconnections = 8\n'
    )
    async with Store(str(db)) as store:
        await store.contacts.bulk_insert(
            [validate_contact({"first_name": f"C{i}", "external_id": f"X{i}"}, region="US") for i in range(N)]
        )
        uids = {e.uid for e in await store.crm_events.events_since(0, limit=10 * N)}
    assert len(uids) == N
    crm.delay_s = 0.02  # a slow CRM: the kill lands while requests are in flight
    proc = await _serve(config, tmp_path)
    try:
        await until(lambda: _at_least(crm, 60), timeout=60)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    got_before = len(crm.events)
    assert got_before < N, "the kill came too late to test anything"
    async with Store(str(db)) as store:
        counts = await store.crm_events.counts()
    assert counts["subscribers"]["dms"]["delivered"] + counts["backlog"] + counts["unfanned"] == N
    crm.delay_s = 0.0
    proc = await _serve(config, tmp_path)
    try:
        await until(lambda: _at_least(crm, N), timeout=60)
        async with Store(str(db)) as store:
            await until(lambda: _drained(store), timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    # every event arrived; none is held twice; redeliveries were only of requests in flight at the kill
    assert set(crm.events) == uids and len(crm.order) == len(set(crm.order)) == N
    assert crm.duplicates <= 8 and crm.refused == []
    # the CLI sees the drained outbox
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard", "crm", "deliveries", "--config", str(config),
        cwd=tmp_path, env={k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        | {"PYTHONPATH": str(REPO)}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await cli.communicate()
    assert cli.returncode == 0, err
    assert (
        f"crm deliveries: drained; backlog 0, 0 not yet fanned out; dms: 0 queued, 0 sending, {N} delivered, 0 dead"
        in out.decode()
    )


async def _at_least(crm: CrmStandIn, n: int) -> bool:
    return len(crm.events) >= n


async def _drained(store: Store) -> bool:
    counts = await store.crm_events.counts()
    return counts["backlog"] == 0 and counts["unfanned"] == 0
