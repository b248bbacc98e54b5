"""Recordings: a real Asterisk transcript and its MixMonitor WAV → indexed, linked, searchable, playable."""

from __future__ import annotations

import asyncio
import io
import shutil
import struct
import wave
import zipfile
from pathlib import Path
from typing import Any

import pytest

from crm_link.contacts import validate_contact
from cti.ami.server import AmiTestServer
from switchboard.app import create_app
from switchboard.keys import SERVICES, STORE
from tests.browser import login
from tests.conftest import FIXTURES, PASSWORD, make_api

AMI = FIXTURES / "ami"


def make_wav(path: Path, seconds: float = 2.0) -> bytes:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", (i * 37) % 2000 - 1000) for i in range(int(8000 * seconds))))
    return path.read_bytes()


@pytest.fixture
async def rec_app(aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer) -> Any:
    settings.asterisk.enabled = True
    settings.asterisk.port = pbx.port
    settings.asterisk.secret.__init__("crm-secret")  # type: ignore[misc]
    settings.interfaces = {"Local/agent1@agents/n": "jsmith", "Local/agent2@agents/n": "agarcia"}
    settings.recordings.poll_seconds = 0.05
    Path(settings.asterisk.recordings_dir).mkdir(parents=True)
    server = await aiohttp_server(create_app(settings))
    client = await aiohttp_client(server)
    await server.app[SERVICES]["asterisk"].client.wait_connected(5)
    client.settings = settings
    return client


async def _until(check: Any, timeout: float = 10) -> Any:
    async with asyncio.timeout(timeout):
        while not (out := await check()):
            await asyncio.sleep(0.03)
    return out


async def _replay_fixture(client: Any, pbx: AmiTestServer, name: str, wav: str) -> None:
    shutil.copy(AMI / "recordings" / wav, Path(client.settings.asterisk.recordings_dir) / wav)
    await pbx.replay((AMI / f"{name}.ami").read_bytes())


async def test_fixture_call_recording_indexed_linked_found_and_played(
    rec_app: Any, pbx: AmiTestServer
) -> None:
    store = rec_app.server.app[STORE]
    manager = await make_api(rec_app, "maria", "manager")
    await make_api(rec_app, "jsmith", "rep", extension="1001")
    jane = await store.contacts.create(
        validate_contact(
            {"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"], "owner": "jsmith"},
            region="US",
        )
    )
    await _replay_fixture(rec_app, pbx, "i-inbound-answered", "1795346245.1.wav")

    async def found() -> Any:
        resp = await manager.get(
            "/api/v1/recordings",
            params={
                "extension": "1001",
                "since": "2026-11-22",
                "until": "2026-11-22",
                "direction": "inbound",
            },
        )
        items = (await resp.json())["items"]
        return items if items and items[0]["state"] == "indexed" and items[0]["touch_id"] else None

    (rec,) = await _until(found)
    touch = await store.touches.by_source_key("asterisk:1795346245.0")
    assert rec["touch_id"] == touch.id and rec["contact_id"] == jane.id and rec["agent"] == "jsmith"
    assert rec["from"] == "+15551234567" and rec["call_id"] == "1795346245.0"
    original = (AMI / "recordings" / "1795346245.1.wav").read_bytes()
    assert rec["size"] == len(original) and rec["duration_s"] == pytest.approx(
        (len(original) - 44) / 16000, abs=0.1
    )
    # play: a Range request gets 206 and exactly those bytes
    resp = await manager.client.get(
        rec["audio_url"], headers={"Authorization": f"Bearer {manager.token}", "Range": "bytes=100-199"}
    )
    assert resp.status == 206 and await resp.read() == original[100:200]
    assert resp.headers["Content-Range"] == f"bytes 100-199/{len(original)}"
    full = await manager.get(rec["audio_url"])
    assert full.status == 200 and await full.read() == original
    audit = await store.audit.recent(action="recording.play")
    assert audit and audit[0]["user"] == "maria"
    # the number in another format and free text over the customer's name find it too
    for params in (
        {"number": "(555) 123-4567"},
        {"q": "jane"},
        {"contact_id": str(jane.id)},
        {"min_duration": "1"},
    ):
        items = (await (await manager.get("/api/v1/recordings", params=params)).json())["items"]
        assert [i["id"] for i in items] == [rec["id"]], params
    assert (await (await manager.get("/api/v1/recordings", params={"min_duration": "600"})).json())[
        "items"
    ] == []
    # storage path is ours, not the PBX's file name
    row = await store.recordings.get(rec["id"])
    assert "1795346245" not in row["_storage_path"] and row["_storage_path"].endswith(".wav")


async def test_abandoned_call_header_only_recording_is_flagged_empty(
    rec_app: Any, pbx: AmiTestServer
) -> None:
    manager = await make_api(rec_app, "maria", "manager")
    await _replay_fixture(rec_app, pbx, "ii-inbound-abandoned", "1795346804.61.wav")

    async def found() -> Any:
        items = (await (await manager.get("/api/v1/recordings")).json())["items"]
        return items if items and items[0]["call_id"] else None

    (rec,) = await _until(found)
    assert rec["state"] == "empty" and rec["duration_s"] == 0


async def test_file_before_or_without_its_call_and_truncated(rec_app: Any, settings: Any) -> None:
    manager = await make_api(rec_app, "maria", "manager")
    service = rec_app.server.app[SERVICES]["recordings"]
    monitor = Path(settings.asterisk.recordings_dir)
    make_wav(monitor / "orphan.wav", 1.0)
    data = make_wav(monitor / "cut.wav", 2.0)
    (monitor / "cut.wav").write_bytes(data[: len(data) // 2])  # the header still claims two seconds

    async def two() -> Any:
        items = (await (await manager.get("/api/v1/recordings")).json())["items"]
        return items if len(items) == 2 else None

    items = {i["state"] for i in await _until(two)}
    assert items == {"unlinked", "truncated"}
    # the call is announced later: the orphan gets linked, indexed once
    await service.announce("9999.1", "/var/spool/asterisk/monitor/orphan.wav")
    await service.call_finished(
        "9999.1",
        touch_id=None,
        contact_id=None,
        extension="1001",
        agent_user_id=None,
        direction="inbound",
        from_number="+15550009999",
        to_number="7000",
        started_at=None,
        duration_s=1.0,
    )
    items = (await (await manager.get("/api/v1/recordings", params={"extension": "1001"})).json())["items"]
    assert [(i["state"], i["from"]) for i in items] == [("indexed", "+15550009999")]
    # a PBX file name is only ever compared, never used as a path
    await service.announce("x", "../../etc/passwd")
    assert (await rec_app.server.app[STORE].recordings.by_name("asterisk", "passwd"))["storage_path"] is None


async def test_bad_filters_and_access(rec_app: Any) -> None:
    manager = await make_api(rec_app, "maria", "manager")
    rep = await make_api(rec_app, "jsmith", "rep", extension="1001")
    other = await make_api(rec_app, "agarcia", "rep", extension="1002")
    mkt = await make_api(rec_app, "kim", "marketing")
    for params, field in (
        ({"since": "yesterday"}, "since"),
        ({"number": "12"}, "number"),
        ({"direction": "sideways"}, "direction"),
        ({"agent": "ghost"}, "agent"),
        ({"colour": "red"}, "colour"),
    ):
        resp = await manager.get("/api/v1/recordings", params=params)
        assert resp.status == 400 and (await resp.json())["error"]["field"] == field
    assert (await mkt.get("/api/v1/recordings")).status == 403
    store = rec_app.server.app[STORE]
    service = rec_app.server.app[SERVICES]["recordings"]
    monitor = Path(rec_app.settings.asterisk.recordings_dir)
    make_wav(monitor / "c1.wav")
    await service.announce("c1", "c1.wav")
    await service.call_finished(
        "c1",
        touch_id=None,
        contact_id=None,
        extension="1001",
        agent_user_id=rep.user.id,
        direction="inbound",
        from_number="+15550001234",
        to_number="7000",
        started_at=None,
        duration_s=2.0,
    )
    rec = await _until(lambda: _first(manager))
    assert (await rep.get(f"/api/v1/recordings/{rec['id']}")).status == 200
    assert (await other.get(f"/api/v1/recordings/{rec['id']}")).status == 403
    assert (await other.get(f"/api/v1/recordings/{rec['id']}/audio")).status == 403
    assert (await (await other.get("/api/v1/recordings")).json())["items"] == []
    # export: a zip with the audio and a manifest, audited
    resp = await manager.post("/api/v1/recordings/export", json={"ids": [rec["id"]]})
    assert resp.status == 200
    zf = zipfile.ZipFile(io.BytesIO(await resp.read()))
    assert sorted(zf.namelist()) == ["manifest.csv", f"recording-{rec['id']}.wav"]
    assert "+15550001234" in zf.read("manifest.csv").decode()
    assert (await store.audit.recent(action="recording.export"))[0]["user"] == "maria"
    assert (await rep.post("/api/v1/recordings/export", json={"ids": [rec["id"]]})).status == 403


async def _first(api: Any) -> Any:
    items = (await (await api.get("/api/v1/recordings")).json())["items"]
    return items[0] if items and items[0]["state"] == "indexed" else None


@pytest.mark.browser
async def test_manager_filters_and_plays_in_the_browser(
    rec_app: Any, pbx: AmiTestServer, browser: Any
) -> None:
    store = rec_app.server.app[STORE]
    await store.users.add("maria", role="manager", password=PASSWORD)
    await store.users.add("jsmith", role="rep", password=PASSWORD, extension="1001")
    await store.contacts.create(
        validate_contact(
            {"first_name": "Jane", "last_name": "Doe", "phones": ["+15551234567"], "owner": "jsmith"},
            region="US",
        )
    )
    await _replay_fixture(rec_app, pbx, "i-inbound-answered", "1795346245.1.wav")
    manager = await make_api(rec_app, "boss", "admin")
    await _until(lambda: _first(manager))
    base = str(rec_app.make_url("")).rstrip("/")
    page = await browser.new_page()
    await login(page, base, "maria", PASSWORD)
    await page.goto(base + "/recordings")
    await page.fill("#rec-filters input[name=extension]", "1001")
    await page.select_option("#rec-filters select[name=direction]", "inbound")
    await page.click("#rec-filters button[type=submit]")
    row = page.locator("#rec-results tbody tr", has_text="Jane Doe")
    await row.wait_for()
    await row.locator("button.play").click()
    # a function, not an expression string: Playwright would eval a string, which the page's CSP refuses
    await page.wait_for_function(
        "() => document.getElementById('rec-player').readyState >= 1", timeout=10_000
    )
    assert await page.evaluate("document.getElementById('rec-player').duration") > 1


async def test_transcriber_and_retention(store: Any, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from crm_link.recordings import RecordingFilter
    from recordings.service import RecordingService

    class Words:
        async def transcribe(self, path: Path) -> str:
            return "the customer asked about a trade-in"

    monitor = tmp_path / "pbx"
    monitor.mkdir()
    make_wav(monitor / "a.wav", 1.0)
    service = RecordingService(store, watch_dir=monitor, storage_dir=tmp_path / "store", transcriber=Words())
    await service.scan_once(force=True)
    (rec,) = (await store.recordings.search(RecordingFilter(q="trade"))).items
    stored = tmp_path / "store" / (await store.recordings.get(rec["id"]))["_storage_path"]
    assert stored.exists()
    later = RecordingService(
        store,
        watch_dir=monitor,
        storage_dir=tmp_path / "store",
        clock=lambda: datetime.now(UTC) + timedelta(days=91),
    )
    assert await later.apply_retention(90) == 1
    assert not stored.exists()
    after = await store.recordings.get(rec["id"])
    assert after["state"] == "deleted" and after["audio_url"] is None
    assert (await store.audit.recent(action="recording.retention_delete"))[0]["object_id"] == str(rec["id"])
