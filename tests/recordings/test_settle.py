"""Recordings MixMonitor is still writing: left alone while the call is up, judged from the final
file once it has ended (a header-only WAV is `empty`), judged again if read early; one copy each.

Replays the recorded `ii-inbound-abandoned` (caller hangs up in the queue; MixMonitor option `b`
leaves a 44-byte header-only file) split before the caller's end.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from cti.ami.server import AmiTestServer
from switchboard.app import create_app
from switchboard.keys import ASTERISK, RECORDINGS, STORE
from tests.conftest import FIXTURES

AMI = FIXTURES / "ami"
CALL = "1795346804.60"
WAV = "1795346804.61.wav"


@pytest.fixture
async def app(aiohttp_server: Any, settings: Any, pbx: AmiTestServer) -> Any:
    settings.asterisk.enabled = True
    settings.asterisk.port = pbx.port
    settings.asterisk.secret.__init__("crm-secret")
    settings.interfaces = {"Local/agent1@agents/n": "jsmith", "Local/agent2@agents/n": "agarcia"}
    settings.recordings.poll_seconds = 3600  # the test drives the scans
    Path(settings.asterisk.recordings_dir).mkdir(parents=True)
    server = await aiohttp_server(create_app(settings))
    await server.app[ASTERISK].client.wait_connected(5)
    return server


async def _until(check: Any, timeout: float = 10) -> Any:
    async with asyncio.timeout(timeout):
        while not (out := await check()):
            await asyncio.sleep(0.02)
    return out


def _copies(storage: Path) -> list[Path]:
    return sorted(p for p in storage.rglob("*") if p.is_file())


async def test_a_recording_is_judged_from_its_final_file_once_its_call_ended(
    app: Any, pbx: AmiTestServer, settings: Any
) -> None:
    store, service = app.app[STORE], app.app[RECORDINGS]
    monitor, storage = Path(settings.asterisk.recordings_dir), Path(settings.recordings.storage_dir)
    transcript = (AMI / "ii-inbound-abandoned.ami").read_bytes()
    cut = transcript.index(b"Event: QueueCallerAbandon")
    await pbx.replay(transcript[:cut])  # the caller is waiting in the queue
    await _until(lambda: store.recordings.by_name("asterisk", WAV))
    final = (AMI / "recordings" / WAV).read_bytes()
    writing = final[:4] + b"\0\0\0\0" + final[8:40] + b"\0\0\0\0"  # sizes not yet written
    path = monitor / WAV
    path.write_bytes(writing)
    old = time.time() - 600  # quiet for a long while: option b writes nothing until bridged
    os.utime(path, (old, old))
    for _ in range(3):
        report = await service.scan_once()
    assert report.waiting == 1 and (await store.recordings.by_name("asterisk", WAV))["storage_path"] is None
    # a reindex takes the file as it is; what it sees is judged again later
    await service.scan_once(force=True)
    early = await store.recordings.by_name("asterisk", WAV)
    assert early["state"] == "truncated" and not early["settled"]
    # the caller gives up; MixMonitor closes the file: the same 44 bytes, header now written
    await pbx.replay(transcript[cut:])

    async def ended() -> Any:
        t = await store.touches.by_source_key(f"asterisk:{CALL}")
        return (
            t is not None
            and t.ended_at is not None
            and await store.recordings.call_has_ended(f"asterisk:{CALL}")
        )

    await _until(ended)
    path.write_bytes(final)
    os.utime(path, (old, old))
    assert len(final) == len(writing) == 44
    for _ in range(3):
        await service.scan_once()
    rec = await store.recordings.by_name("asterisk", WAV)
    assert (rec["state"], rec["duration_s"], rec["settled"]) == ("empty", 0.0, 1)
    assert rec["touch_id"] is not None
    # read twice, one copy: the final bytes under the name first given
    assert (
        _copies(storage) == [storage / rec["storage_path"]] and rec["storage_path"] == early["storage_path"]
    )
    assert (storage / rec["storage_path"]).read_bytes() == final
    # nothing changes any more: later scans leave it alone
    assert (await service.scan_once()).skipped == 1
