"""Recordings: a real Asterisk transcript and its MixMonitor WAV → indexed, linked, searchable, playable."""

from __future__ import annotations

import asyncio
import io
import shutil
import struct
import wave
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from crm_link.contacts import validate_contact
from crm_link.recordings import RecordingFilter
from cti.ami.server import AmiTestServer
from switchboard.app import create_app
from switchboard.keys import ASTERISK, RECORDINGS, SETTINGS, STORE
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
    settings.asterisk.secret.__init__("crm-secret")
    settings.interfaces = {"Local/agent1@agents/n": "jsmith", "Local/agent2@agents/n": "agarcia"}
    settings.recordings.poll_seconds = 0.05
    Path(settings.asterisk.recordings_dir).mkdir(parents=True)
    server = await aiohttp_server(create_app(settings))
    client = await aiohttp_client(server)
    await server.app[ASTERISK].client.wait_connected(5)
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
    service = rec_app.server.app[RECORDINGS]
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
    service = rec_app.server.app[RECORDINGS]
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


async def test_retention_deletes_old_audio(store: Any, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from recordings.service import RecordingService

    monitor = tmp_path / "pbx"
    monitor.mkdir()
    make_wav(monitor / "a.wav", 1.0)
    service = RecordingService(store, watch_dir=monitor, storage_dir=tmp_path / "store")
    await service.scan_once(force=True)
    (rec,) = (await store.recordings.search(RecordingFilter())).items
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


async def test_manifest_cells_that_look_like_formulas_are_escaped(client: Any) -> None:
    """A customer's name or a note a spreadsheet would run as a formula is exported as text."""
    import csv

    manager = await make_api(client, "maria", "manager")
    store = client.server.app[STORE]
    service = client.server.app[RECORDINGS]
    contact = await store.contacts.create(
        validate_contact({"first_name": '=HYPERLINK("http://evil.example")', "last_name": "X"}, region="US")
    )
    await service.announce("c9", "c9.wav")
    await service.call_finished(
        "c9",
        touch_id=None,
        contact_id=contact.id,
        extension="@SUM(1+1)",
        agent_user_id=None,
        direction="inbound",
        from_number="+15550001234",
        to_number="-2+3",
        started_at=None,
        duration_s=2.0,
    )
    pbx = Path(client.server.app[SETTINGS].asterisk.recordings_dir)
    pbx.mkdir(parents=True)
    make_wav(pbx / "c9.wav", 0.5)
    rid = await service.ingest(pbx / "c9.wav")
    assert (
        await manager.patch(f"/api/v1/recordings/{rid}", json={"notes": "\tcmd|' /C calc'!A0"})
    ).status == 200
    resp = await manager.post("/api/v1/recordings/export", json={"ids": [rid]})
    assert resp.status == 200
    zf = zipfile.ZipFile(io.BytesIO(await resp.read()))
    header, row = list(csv.reader(io.StringIO(zf.read("manifest.csv").decode())))
    cells = dict(zip(header, row, strict=True))
    assert cells["contact"] == '\'=HYPERLINK("http://evil.example") X'
    assert cells["extension"] == "'@SUM(1+1)" and cells["to"] == "'-2+3"
    assert cells["from"] == "'+15550001234" and cells["notes"] == "'\tcmd|' /C calc'!A0"
    assert (
        cells["file"] == f"recording-{rid}.wav"
        and cells["id"] == str(rid)
        and cells["direction"] == "inbound"
    )


async def test_exporting_many_recordings_never_stalls_the_loop(client: Any, settings: Any) -> None:
    """A zip of 200 recordings (100 MB) is built off the event loop; what arrives is complete."""
    import hashlib

    from tests.loop_lag import LoopLag

    manager = await make_api(client, "maria", "manager")
    store = client.server.app[STORE]
    storage = Path(settings.recordings.storage_dir)
    (storage / "bulk").mkdir(parents=True)
    audio = make_wav(storage / "bulk" / "0.wav", 32.0)  # 512 KB
    ids = []
    for i in range(200):
        path = storage / "bulk" / f"{i}.wav"
        path.write_bytes(audio[:-4] + i.to_bytes(4, "big"))  # each file its own bytes
        ids.append(
            await store.recordings.store_file(
                "asterisk",
                f"{i}.wav",
                storage_path=f"bulk/{i}.wav",
                size=len(audio),
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                fmt="wav",
                duration_s=32.0,
                state="indexed",
                mtime=datetime.now(UTC),
            )
        )
    async with LoopLag() as lag:
        resp = await manager.post("/api/v1/recordings/export", json={"ids": ids})
        body = await resp.read()
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(body))
    assert len(zf.namelist()) == 201
    assert zf.read(f"recording-{ids[7]}.wav") == audio[:-4] + (7).to_bytes(4, "big")
    assert lag.ticks > 3 and lag.max_busy < 0.25, f"the loop was held {lag.max_busy_ms:.0f} ms"


async def test_links_in_the_pbx_directory_are_never_followed(store: Any, tmp_path: Path) -> None:
    """`ln -s /etc/passwd monitor/x.wav` must not become a playable recording, nor a link to audio elsewhere."""
    from recordings.service import RecordingService

    monitor = tmp_path / "monitor"
    monitor.mkdir()
    make_wav(tmp_path / "elsewhere.wav", 1.0)
    (monitor / "passwd.wav").symlink_to("/etc/passwd")
    (monitor / "outside.wav").symlink_to(tmp_path / "elsewhere.wav")
    (monitor / "sub.wav").mkdir()
    make_wav(monitor / "real.wav", 1.0)
    service = RecordingService(store, watch_dir=monitor, storage_dir=tmp_path / "store", settle_seconds=0)
    first = await service.scan_once()  # the watcher: a file is taken once its size held for one poll
    second = await service.scan_once()
    rows = await store.db.fetchall("SELECT pbx_name FROM recordings")
    assert [r[0] for r in rows] == ["real.wav"]
    assert (first.waiting, second.indexed, second.refused) == (1, 1, 3)
    again = await service.scan_once(force=True)  # a reindex takes every file as it is: still no link
    assert (again.skipped, again.indexed, again.refused) == (1, 0, 3)
    assert sorted(e.split(":")[0] for e in again.errors) == ["outside.wav", "passwd.wav", "sub.wav"]
    rows = await store.db.fetchall("SELECT pbx_name FROM recordings")
    assert [r[0] for r in rows] == ["real.wav"]
    # a file swapped for a link between the listing and the copy is refused when opened
    with pytest.raises(OSError, match="symbolic link"):
        await service.ingest(monitor / "passwd.wav")
    stored = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert len(stored) == 1 and stored[0].read_bytes() == (monitor / "real.wav").read_bytes()


async def test_recordings_of_a_line_are_found_by_the_number_dialled(rec_app: Any, pbx: AmiTestServer) -> None:
    """`vii-inbound-did` (recorded): the sales line's call and the service line's are each found by
    their line's number, in any format; `to` is the line in E.164."""
    manager = await make_api(rec_app, "maria", "manager")
    for wav in ("1796228398.1.wav", "1796228407.5.wav"):
        shutil.copy(AMI / "recordings" / wav, Path(rec_app.settings.asterisk.recordings_dir) / wav)
    await pbx.replay((AMI / "vii-inbound-did.ami").read_bytes())

    def by_line(number: str) -> Any:
        async def check() -> Any:
            resp = await manager.get("/api/v1/recordings", params={"number": number})
            items = (await resp.json())["items"]
            return items if items and all(i["touch_id"] for i in items) else None

        return check

    (sales,) = await _until(by_line("(312) 555-0100"))
    (service,) = await _until(by_line("3125550200"))
    assert (sales["call_id"], sales["from"], sales["to"]) == ("1796228398.0", "+15550002001", "+13125550100")
    assert (service["call_id"], service["from"], service["to"]) == (
        "1796228407.4",
        "+15550002002",
        "+13125550200",
    )
