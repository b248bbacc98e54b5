"""The number a customer dialled (`vii-inbound-did`, recorded from a live Asterisk whose trunk context
sets `__SB_DID` and whose manager.conf has `channelvars = SB_DID`): the sales line 3125550100
answered by agent1, then the service line 3125550200 missed in queue `service`. Each call's `to` is
its line in E.164, on the pop, the touch and the call's end; without SB_DID it is what it was."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crm_link.contacts import validate_contact
from cti.ami.protocol import AmiParser, Event
from cti.ami.server import AmiTestServer
from cti.events import CallEnded, CallRinging
from cti.tracker import CallTracker
from switchboard.keys import ASTERISK, STORE
from tests.browser import login
from tests.conftest import PASSWORD, make_api
from tests.cti.conftest import AMI, is_agent, start_pbx_app

RAW = (AMI / "vii-inbound-did.ami").read_bytes()
SALES, SERVICE = "+13125550100", "+13125550200"
SHOTS = Path("/tmp/shots/asterisk")


def _linkedid(raw: bytes, channel_prefix: bytes) -> str:
    m = re.search(
        rb"Channel: " + re.escape(channel_prefix) + rb"[^\r]*\r\n(?:[^\r]+\r\n)*?Linkedid: ([0-9.]+)", raw
    )
    assert m is not None, channel_prefix
    return m.group(1).decode()


SALES_CALL = _linkedid(RAW, b"Local/3125550100@from-trunk-")
SERVICE_CALL = _linkedid(RAW, b"Local/3125550200@from-trunk-")


def _fold(raw: bytes, region: str = "US") -> list[Any]:
    tracker = CallTracker(is_agent, region=region)
    return [d for m in AmiParser().feed(raw) if isinstance(m, Event) for d in tracker.feed(m)]


def _without(raw: bytes, *, chanvars: bool = False, varsets: bool = False) -> bytes:
    """The recording with SB_DID's ChanVariable headers and/or its VarSet events taken out."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    packets = body.split(b"\r\n\r\n")
    if varsets:
        packets = [p for p in packets if not (b"Event: VarSet" in p and b"Variable: __SB_DID" in p)]
    if chanvars:
        # ChanVariable, DestChanVariable, LocalOneChanVariable, `ChanVariable(<channel>)` (Cdr) …
        packets = [
            re.sub(rb"\r\n[A-Za-z]*ChanVariable(?:\([^)]*\))?: SB_DID=[^\r]*", b"", p) for p in packets
        ]
    return head + sep + b"\r\n\r\n".join(packets)


def _ends(out: list[Any]) -> dict[str, CallEnded]:
    return {e.call_id: e for e in out if isinstance(e, CallEnded)}


def test_the_recording_carries_sb_did_both_ways() -> None:
    # what the tests below rely on is really in the recording
    assert b"ChanVariable: SB_DID=3125550100" in RAW and b"ChanVariable: SB_DID=3125550200" in RAW
    assert b"Variable: __SB_DID" in RAW


def test_each_call_is_to_the_line_dialled_in_e164() -> None:
    out = _fold(RAW)
    rings = [(e.call_id, e.interface, e.to_number) for e in out if isinstance(e, CallRinging)]
    assert (SALES_CALL, "Local/agent1@agents", SALES) in rings
    assert (SERVICE_CALL, "Local/agent2@agents", SERVICE) in rings
    assert all(to == (SALES if c == SALES_CALL else SERVICE) for c, _, to in rings)
    ends = _ends(out)
    sales, service = ends[SALES_CALL], ends[SERVICE_CALL]
    assert (sales.direction, sales.from_number, sales.to_number) == ("inbound", "+15550002001", SALES)
    assert sales.answered and sales.answered_by == "Local/agent1@agents" and sales.queue == "sales"
    assert (service.direction, service.from_number, service.to_number) == ("inbound", "+15550002002", SERVICE)
    assert not service.answered and not service.abandoned and service.queue == "service"


def test_either_source_of_the_variable_is_enough() -> None:
    for raw in (_without(RAW, chanvars=True), _without(RAW, varsets=True)):
        ends = _ends(_fold(raw))
        assert (ends[SALES_CALL].to_number, ends[SERVICE_CALL].to_number) == (SALES, SERVICE)


def test_without_sb_did_the_to_is_the_extension_as_before() -> None:
    bare = _without(RAW, chanvars=True, varsets=True)
    assert not re.search(rb"ChanVariable[^:\r]*: SB_DID|Variable: __SB_DID", bare)
    ends = _ends(_fold(bare))
    assert (ends[SALES_CALL].to_number, ends[SERVICE_CALL].to_number) == ("3125550100", "3125550200")


def test_a_did_is_read_in_the_default_region_and_a_non_number_kept() -> None:
    # the same national digits read as a UK number; a label that is no number stays as set
    ends = _ends(_fold(RAW, region="GB"))
    assert ends[SALES_CALL].to_number != SALES
    labelled = RAW.replace(b"SB_DID=3125550100", b"SB_DID=sales").replace(
        b"Value: 3125550100", b"Value: sales"
    )
    ends = _ends(_fold(_without(labelled, varsets=True)))
    assert ends[SALES_CALL].to_number == "sales"


async def _ws_until(ws: Any, call_id: str, state: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(15):
        while not any(m["call"]["id"] == call_id and m["call"]["state"] == state for m in seen):
            msg = json.loads((await ws.receive()).data)
            if msg.get("type") in ("screen_pop", "call_update"):
                seen.append(msg)
    return seen


async def test_pops_and_touches_show_the_line_called(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer
) -> None:
    app = await start_pbx_app(
        aiohttp_server,
        settings,
        pbx,
        {"Local/agent1@agents/n": "jsmith", "Local/agent2@agents/n": "agarcia"},
    )
    client = await aiohttp_client(app)
    jsmith = await make_api(client, "jsmith", "rep", extension="1001", display_name="John Smith")
    agarcia = await make_api(client, "agarcia", "rep", extension="1002", display_name="Ana Garcia")
    store = app.app[STORE]
    kim, raj = [
        await store.contacts.create(
            validate_contact({"first_name": f, "last_name": la, "phones": [n], "owner": o}, region="US")
        )
        for f, la, n, o in (
            ("Kim", "Lee", "+15550002001", "jsmith"),
            ("Raj", "Patel", "+15550002002", "agarcia"),
        )
    ]
    await app.app[ASTERISK].directory.reload()
    ws1 = await client.ws_connect(f"/ws/agent?token={jsmith.token}")
    ws2 = await client.ws_connect(f"/ws/agent?token={agarcia.token}")
    for ws in (ws1, ws2):
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
    await pbx.replay(RAW, chunking="random", seed=7)

    sales_msgs = await _ws_until(ws1, SALES_CALL, "ended")
    assert sales_msgs[0]["type"] == "screen_pop" and sales_msgs[0]["contact"]["name"] == "Kim Lee"
    assert {(m["call"]["from"], m["call"]["to"]) for m in sales_msgs} == {("+15550002001", SALES)}
    service_msgs = await _ws_until(ws2, SERVICE_CALL, "missed")
    service_msgs = [m for m in service_msgs if m["call"]["id"] == SERVICE_CALL]
    assert service_msgs[0]["type"] == "screen_pop" and service_msgs[0]["contact"]["name"] == "Raj Patel"
    assert {(m["call"]["to"], m["call"]["queue"]) for m in service_msgs} == {(SERVICE, "service")}

    for contact, call, to, status in (
        (kim, SALES_CALL, SALES, "answered"),
        (raj, SERVICE_CALL, SERVICE, "missed"),
    ):
        async with asyncio.timeout(10):
            while (t := await store.touches.by_source_key(f"asterisk:{call}")) is None or t.ended_at is None:
                await asyncio.sleep(0.02)
        assert (t.contact_id, t.status, t.payload["to"], t.direction) == (contact.id, status, to, "inbound")
        assert "abandoned" not in t.payload  # the queue gave up on Raj; he did not hang up
        # what the rep reads on the customer's page (GET the history over HTTP)
        resp = await (jsmith if contact is kim else agarcia).get(f"/api/v1/contacts/{contact.id}/touches")
        assert resp.status == 200, await resp.text()
        (item,) = [i for i in (await resp.json())["items"] if i.get("kind") == "call"]
        assert item["payload"]["to"] == to
    # the call report, per line called: one answered call on sales, one missed on service
    boss = await make_api(client, "boss", "manager")
    day = t.started_at.astimezone(ZoneInfo(settings.server.time_zone)).date().isoformat()
    resp = await boss.get(f"/api/v1/reports/calls?from={day}&to={day}&group=line")
    assert resp.status == 200, await resp.text()
    rows = {r["key"]: r for r in (await resp.json())["rows"]}
    assert set(rows) == {SALES, SERVICE}
    assert (rows[SALES]["inbound"], rows[SALES]["answered"], rows[SALES]["missed"]) == (1, 1, 0)
    assert (rows[SERVICE]["inbound"], rows[SERVICE]["missed"], rows[SERVICE]["abandoned"]) == (1, 1, 0)
    csv_text = await (
        await boss.get(f"/api/v1/reports/calls?from={day}&to={day}&group=line&format=csv")
    ).text()
    assert f"{SALES},1,0,1,0,0" in csv_text and f"{SERVICE},1,0,0,1,0" in csv_text
    await ws1.close()
    await ws2.close()


@pytest.mark.browser
async def test_the_reports_page_has_calls_per_line(
    aiohttp_server: Any, settings: Any, pbx: AmiTestServer, browser: Any
) -> None:
    app = await start_pbx_app(
        aiohttp_server, settings, pbx, {"Local/agent1@agents/n": "jsmith", "Local/agent2@agents/n": "agarcia"}
    )
    store = app.app[STORE]
    await store.users.add("jsmith", role="rep", password=PASSWORD, extension="1001")
    await store.users.add("agarcia", role="rep", password=PASSWORD, extension="1002")
    await store.users.add("boss", role="manager", password=PASSWORD, display_name="Maria Boss")
    await app.app[ASTERISK].directory.reload()
    await pbx.replay(RAW)
    async with asyncio.timeout(10):
        while (
            t := await store.touches.by_source_key(f"asterisk:{SERVICE_CALL}")
        ) is None or t.ended_at is None:
            await asyncio.sleep(0.02)
    day = t.started_at.astimezone(ZoneInfo(settings.server.time_zone)).date().isoformat()
    base = str(app.make_url("")).rstrip("/")
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await login(page, base, "boss", PASSWORD)
    await page.goto(f"{base}/reports?from={day}&to={day}")
    table = page.locator("#calls-line")
    await table.wait_for()
    rows = {
        (await tr.locator("td").nth(0).inner_text()): [
            await td.inner_text() for td in await tr.locator("td").all()
        ]
        for tr in await table.locator("tbody tr").all()
    }
    assert set(rows) == {SALES, SERVICE}, rows
    assert rows[SALES][1:6] == ["1", "0", "1", "0", "0"] and rows[SERVICE][1:6] == ["1", "0", "0", "1", "0"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    await table.scroll_into_view_if_needed()
    await page.screenshot(path=str(SHOTS / "reports-line-1280.png"), full_page=True)
    await page.set_viewport_size({"width": 390, "height": 800})
    await page.screenshot(path=str(SHOTS / "reports-line-390.png"), full_page=True)
    await page.close()
