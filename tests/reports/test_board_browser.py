"""The live agent board in a real browser: a manager watches a rep go ringing → talking → wrap-up →
ready as a scripted call plays on the AMI test PBX; the rep sets themselves ready in their own tab.
Also screenshots of /agents and /reports at 1280 and 390 px (into /tmp/shots/reports)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cti.ami.server import AmiTestServer
from switchboard.keys import ASTERISK, STORE
from tests.browser import login
from tests.conftest import PASSWORD
from tests.cti.conftest import start_pbx_app

pytestmark = pytest.mark.browser
SHOTS = Path("/tmp/shots/reports")

WATCH = """() => {
  window.seen = [];
  const row = () => document.querySelector('#board tr[data-user="agent1"]');
  const note = () => { const r = row(); const s = r && r.dataset.state;
    if (s && window.seen[window.seen.length - 1] !== s) window.seen.push(s); };
  new MutationObserver(note).observe(document.getElementById('board'), {subtree: true, attributes: true, childList: true});
  note();
}"""


async def test_manager_sees_a_rep_ring_talk_wrap_up_and_get_ready(
    aiohttp_server: Any, settings: Any, pbx: AmiTestServer, browser: Any
) -> None:
    server = await start_pbx_app(aiohttp_server, settings, pbx, {"Local/agent1@agents/n": "agent1"})
    store = server.app[STORE]
    await store.users.add("agent1", role="rep", password=PASSWORD, display_name="Agent One", extension="1001")
    await store.users.add("boss", role="manager", password=PASSWORD, display_name="Maria Boss")
    await server.app[ASTERISK].directory.reload()
    base = str(server.make_url("")).rstrip("/")

    rep_ctx = await browser.new_context(viewport={"width": 390, "height": 800})
    rep = await rep_ctx.new_page()
    await login(rep, base, "agent1", PASSWORD)
    await rep.goto(base + "/agents")

    boss_ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
    boss = await boss_ctx.new_page()
    await login(boss, base, "boss", PASSWORD)
    await boss.goto(base + "/agents")
    await boss.wait_for_selector("#board-conn:text('live')")
    # the rep's tab is open: ready
    await boss.wait_for_selector('#board tr[data-user="agent1"][data-state="ready"]', timeout=10_000)
    await boss.evaluate(WATCH)

    pbx.speed = 0.3  # rings and talks for a few tenths of a second each
    call = asyncio.create_task(
        pbx.inbound_call(
            "+15551230000",
            agents=["Local/agent1@agents/n"],
            answer="Local/agent1@agents/n",
            ring_seconds=2.0,
            talk_seconds=2.0,
        )
    )
    await boss.wait_for_selector('#board tr[data-user="agent1"][data-state="talking"]', timeout=10_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    await boss.screenshot(path=str(SHOTS / "agents-talking-1280.png"), full_page=True)
    await call
    await boss.wait_for_selector('#board tr[data-user="agent1"][data-state="wrap_up"]', timeout=10_000)
    await rep.wait_for_selector("#my-state-name.s-wrap_up", timeout=10_000)
    await rep.screenshot(path=str(SHOTS / "agents-rep-390.png"), full_page=True)
    await rep.click("#set-ready")
    await boss.wait_for_selector('#board tr[data-user="agent1"][data-state="ready"]', timeout=10_000)
    seen = await boss.evaluate("window.seen")
    assert seen == ["ready", "ringing", "talking", "wrap_up", "ready"], seen
    row = boss.locator('#board tr[data-user="agent1"]')
    assert await row.locator(".answered").inner_text() == "1"

    # the rep pauses; the API says so too
    await rep.click("#set-paused")
    await boss.wait_for_selector('#board tr[data-user="agent1"][data-state="paused"]', timeout=10_000)

    # the reports page with this call on it, at both widths
    await boss.goto(base + "/reports")
    await boss.wait_for_selector("svg.chart")
    assert await boss.locator("#calls-agent tbody tr").count() >= 1
    # the headline figures: this call, against nothing the day before
    inbound = await boss.locator("#calls-summary .tile").first.inner_text()
    assert inbound.split("\n")[:3] == ["Inbound", "1", "+1 · was 0"], inbound
    assert await boss.locator("nav.tabs a").all_inner_texts() == [
        "Calls",
        "Messaging",
        "Follow-ups",
        "Surveys",
    ]
    await boss.screenshot(path=str(SHOTS / "reports-1280.png"), full_page=True)
    await boss.click("#calls-hour thead th:nth-child(2)")  # sort by inbound, most first
    first = await boss.locator("#calls-hour tbody tr").first.locator("td").nth(1).inner_text()
    assert first == "1"
    await boss.set_viewport_size({"width": 390, "height": 800})
    await boss.screenshot(path=str(SHOTS / "reports-390.png"), full_page=True)
    # on a phone the page does not scroll sideways (wide tables scroll inside their own box)
    assert await boss.evaluate("document.documentElement.scrollWidth") <= 390
    await boss.goto(base + "/agents")
    await boss.screenshot(path=str(SHOTS / "agents-390.png"), full_page=True)
    await rep_ctx.close()
    await boss_ctx.close()
