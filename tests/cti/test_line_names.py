"""Line names (`[lines] "+13125550100" = "Sales"`): the number a customer dialled, named on the pop
and on the call report's rows per line (`vii-inbound-did`, recorded from a real Asterisk)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cti.ami.server import AmiTestServer
from switchboard.keys import ASTERISK, STORE
from switchboard.settings import SettingsError, load_settings
from tests.browser import login
from tests.conftest import PASSWORD, make_api
from tests.cti.conftest import start_pbx_app
from tests.cti.test_inbound_did import RAW, SALES, SALES_CALL, SERVICE, SERVICE_CALL

AGENTS = {"Local/agent1@agents/n": "jsmith", "Local/agent2@agents/n": "agarcia"}
SHOTS = Path("/tmp/shots/asterisk2")


def test_lines_are_read_in_any_format_and_bad_ones_named(tmp_path: Path) -> None:
    cfg = tmp_path / "sb.toml"
    cfg.write_text('[lines]\n"(312) 555-0100" = "Sales"\n"+1 312 555 0200" = " Service "\n')
    assert load_settings(cfg, env={}).lines == {SALES: "Sales", SERVICE: "Service"}
    for toml, key in (
        ('[lines]\n"sales" = "Sales"\n', "lines.sales"),
        ('[lines]\n"3125550100" = ""\n', "lines.3125550100"),
        ('[lines]\n"3125550100" = "A"\n"+13125550100" = "B"\n', "lines.+13125550100"),
        ('lines = "Sales"\n', "lines"),
    ):
        cfg.write_text(toml)
        with pytest.raises(SettingsError) as err:
            load_settings(cfg, env={})
        assert err.value.key == key, toml


async def _touch(store: Any, call_id: str) -> Any:
    async with asyncio.timeout(10):
        while (t := await store.touches.by_source_key(f"asterisk:{call_id}")) is None or t.ended_at is None:
            await asyncio.sleep(0.02)
    return t


async def test_the_pop_and_the_report_name_the_line(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer
) -> None:
    settings.lines = {SALES: "Sales"}  # the service line has no name: its number stands
    app = await start_pbx_app(aiohttp_server, settings, pbx, AGENTS)
    client = await aiohttp_client(app)
    jsmith = await make_api(client, "jsmith", "rep", extension="1001")
    agarcia = await make_api(client, "agarcia", "rep", extension="1002")
    await app.app[ASTERISK].directory.reload()
    sockets = []
    for api in (jsmith, agarcia):
        ws = await client.ws_connect(f"/ws/agent?token={api.token}")
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
        sockets.append(ws)
    await pbx.replay(RAW)
    pops = {}
    for ws, call in zip(sockets, (SALES_CALL, SERVICE_CALL), strict=True):
        async with asyncio.timeout(10):
            while (msg := json.loads((await ws.receive()).data))["type"] != "screen_pop":
                pass
        assert msg["call"]["id"] == call
        pops[call] = msg["call"]
    assert (pops[SALES_CALL]["to"], pops[SALES_CALL]["line"]) == (SALES, "Sales")
    assert (pops[SERVICE_CALL]["to"], pops[SERVICE_CALL]["line"]) == (SERVICE, None)
    await _touch(app.app[STORE], SALES_CALL)
    t = await _touch(app.app[STORE], SERVICE_CALL)
    boss = await make_api(client, "boss", "manager")
    day = t.started_at.astimezone(ZoneInfo(settings.server.time_zone)).date().isoformat()
    resp = await boss.get(f"/api/v1/reports/calls?from={day}&to={day}&group=line")
    assert resp.status == 200, await resp.text()
    rows = {r["key"]: r for r in (await resp.json())["rows"]}
    assert (rows[SALES]["name"], rows[SALES]["answered"]) == ("Sales", 1)
    assert (rows[SERVICE]["name"], rows[SERVICE]["missed"]) == (None, 1)
    resp = await boss.get(f"/api/v1/reports/calls?from={day}&to={day}&group=line&format=csv")
    table = list(csv.DictReader(io.StringIO(await resp.text())))
    assert list(table[0])[:6] == ["key", "inbound", "outbound", "answered", "missed", "abandoned"]
    assert list(table[0])[-1] == "name"  # a new column goes last: old readers keep their positions
    assert {(r["key"], r["name"]) for r in table} == {(SALES, "Sales"), (SERVICE, ""), ("total", "")}
    # other groupings are as they were
    resp = await boss.get(f"/api/v1/reports/calls?from={day}&to={day}&group=queue")
    assert all("name" not in r for r in (await resp.json())["rows"])
    for ws in sockets:
        await ws.close()


@pytest.mark.browser
async def test_the_rep_and_the_manager_see_the_line_name(
    aiohttp_server: Any, settings: Any, pbx: AmiTestServer, browser: Any
) -> None:
    settings.lines = {SALES: "Sales", SERVICE: "Service"}
    app = await start_pbx_app(aiohttp_server, settings, pbx, AGENTS)
    store = app.app[STORE]
    await store.users.add(
        "jsmith", role="rep", password=PASSWORD, extension="1001", display_name="John Smith"
    )
    await store.users.add("agarcia", role="rep", password=PASSWORD, extension="1002")
    await store.users.add("boss", role="manager", password=PASSWORD, display_name="Maria Boss")
    await app.app[ASTERISK].directory.reload()
    base = str(app.make_url("")).rstrip("/")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await login(page, base, "jsmith", PASSWORD)
    await page.wait_for_selector("#ws-state.ok")
    await pbx.replay(RAW)
    number = page.locator(".pop .pop-number")
    await number.wait_for(timeout=10_000)
    await page.wait_for_function(
        "document.querySelector('.pop .pop-number').textContent.includes('to Sales')", timeout=10_000
    )
    assert "queue sales" in await number.inner_text()
    await page.screenshot(path=str(SHOTS / "pop-line-1280.png"), full_page=True)
    await page.set_viewport_size({"width": 390, "height": 800})
    await page.screenshot(path=str(SHOTS / "pop-line-390.png"), full_page=True)
    t = await _touch(store, SERVICE_CALL)
    day = t.started_at.astimezone(ZoneInfo(settings.server.time_zone)).date().isoformat()
    await page.context.clear_cookies()
    await page.set_viewport_size({"width": 1280, "height": 800})
    await login(page, base, "boss", PASSWORD)
    await page.goto(f"{base}/reports?from={day}&to={day}")
    table = page.locator("#calls-line")
    await table.wait_for()
    firsts = [await tr.locator("td").nth(0).inner_text() for tr in await table.locator("tbody tr").all()]
    assert sorted(firsts) == [f"Sales\n{SALES}", f"Service\n{SERVICE}"], firsts
    await table.scroll_into_view_if_needed()
    await page.screenshot(path=str(SHOTS / "reports-line-names-1280.png"))
    await page.set_viewport_size({"width": 390, "height": 800})
    await table.scroll_into_view_if_needed()
    await page.screenshot(path=str(SHOTS / "reports-line-names-390.png"))
    await page.close()
