"""Two reps on the same pool, each with My Day open in a real Chromium: a missed call from a number
nobody has (played by the AMI test PBX) appears on both pages live; one claims it, it leaves the
other's page without a reload and shows as the claimer's own. Screenshots at a desk and a phone."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from cti.ami.server import AmiTestServer
from switchboard.keys import ASTERISK, HUB, STORE
from tests.browser import login
from tests.conftest import PASSWORD, make_api
from tests.cti.conftest import start_pbx_app

pytestmark = pytest.mark.browser
SHOTS = Path(os.environ.get("SB_SHOTS", "/tmp/shots/followups2"))
AGENT = "Local/agent1@agents/n"
WIDTHS = {"desk": (1280, 800), "phone": (390, 844)}


def _watch(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


async def _open_day(browser: Any, base: str, app: Any, username: str) -> tuple[Any, Any, list[str]]:
    """A rep's own browser (own cookies) with My Day open and connected to the hub."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    errors = _watch(page)
    await login(page, base, username, PASSWORD)
    user = await app[STORE].users.by_username(username)
    async with asyncio.timeout(10):
        while app[HUB].tabs(user.id) < 2:  # the pop socket and My Day's own
            await asyncio.sleep(0.05)
    await page.evaluate("window.__sameDocument = true")  # gone after any reload
    return context, page, errors


async def _shots(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        await page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
        assert scroll <= inner, f"{name}-{label}: the page scrolls sideways ({scroll} > {inner})"


async def test_a_claimed_pool_call_leaves_the_other_reps_page_live_and_is_the_claimers(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer, browser: Any
) -> None:
    settings.followups.pools = {"bdc": ["ann", "bob"]}
    settings.followups.unowned_pool = "bdc"
    server = await start_pbx_app(aiohttp_server, settings, pbx, {AGENT: "carl"})
    client = await aiohttp_client(server)
    app = server.app
    await make_api(client, "ann", "rep", extension="1001", display_name="Ann Lee")
    bob_api = await make_api(client, "bob", "rep", extension="1002", display_name="Bob Ray")
    await make_api(client, "carl", "rep", extension="1003")  # answers the queue; not in the pool
    await app[ASTERISK].directory.reload()
    base = str(server.make_url("")).rstrip("/")

    ann_ctx, ann, ann_errors = await _open_day(browser, base, app, "ann")
    bob_ctx, bob, bob_errors = await _open_day(browser, base, app, "bob")
    item = "#day ul[data-kind=missed_call] li.followup"
    assert await ann.locator(item).count() == 0 and await bob.locator(item).count() == 0

    # a number nobody has calls, nobody answers: a prospect whose missed call is on the pool
    await pbx.inbound_call("+13125550177", agents=[AGENT], answer=None, ring_seconds=1)
    for page in (ann, bob):
        await page.locator(item).first.wait_for(timeout=15000)
        text = await page.locator(item).inner_text()
        assert "+13125550177" in text and "pool bdc" in text
        assert await page.locator(f"{item} .fu-claim").count() == 1
    await _shots(bob, "bob-pool-call")

    # Ann claims it: gone from Bob's page without a reload, with a toast saying who took it
    await ann.set_viewport_size({"width": 1280, "height": 800})
    await ann.locator(f"{item} .fu-claim").click()
    await bob.locator(item).wait_for(state="detached", timeout=10000)
    await bob.locator("#toasts .toast", has_text="ann took a pool follow-up").wait_for(timeout=10000)
    assert await bob.evaluate("window.__sameDocument === true")
    assert await bob.locator("#day ul[data-kind=missed_call]").count() == 0
    # ... and on Ann's page it is hers: no Claim button, marked as hers, its actions still there
    mine = ann.locator(f"{item} .badge.mine")
    await mine.wait_for(timeout=10000)
    assert await mine.inner_text() == "yours, from pool bdc"
    assert await ann.locator(f"{item} .fu-claim").count() == 0
    assert await ann.locator(f"{item} .badge.pool").count() == 0
    assert await ann.evaluate("window.__sameDocument === true")
    await _shots(ann, "ann-claimed")
    await _shots(bob, "bob-after-claim")

    # the store agrees, and Bob can no longer take it over the API
    day = await (await bob_api.get("/api/v1/me/day")).json()
    assert day["missed_calls"] == []
    fid = int(await ann.locator(item).get_attribute("data-id"))
    f = await app[STORE].followups.get(fid)
    assert (f.assignee_username, f.status) == ("ann", "open")
    resp = await bob_api.post(f"/api/v1/followups/{fid}/claim", json={})
    assert resp.status in (403, 409)

    # Ann hands it to Bob with a note from her page: gone from hers; on Bob's, live, with a toast
    await ann.locator(f"{item} .fu-to").fill("user:bob")
    await ann.locator(f"{item} .fu-note").fill("caller speaks Spanish")
    await ann.locator(f"{item} .fu-handoff").click()
    await ann.locator(item).wait_for(state="detached", timeout=10000)
    await bob.locator("#toasts .toast", has_text="ann handed you").wait_for(timeout=10000)
    assert (
        "caller speaks Spanish" in await bob.locator("#toasts .toast", has_text="ann handed you").inner_text()
    )
    await bob.locator(f"{item}[data-id='{fid}']").wait_for(timeout=10000)
    assert await bob.evaluate("window.__sameDocument === true")
    await _shots(bob, "bob-handed-off")
    f = await app[STORE].followups.get(fid)
    assert (f.assignee_username, f.status) == ("bob", "open")
    # Bob closes it from his page
    await bob.set_viewport_size({"width": 1280, "height": 800})
    await bob.locator(f"{item} .fu-done").click()
    await bob.locator(item).wait_for(state="detached", timeout=10000)
    assert (await app[STORE].followups.get(fid)).status == "done"
    assert ann_errors == [] and bob_errors == []
    await ann_ctx.close()
    await bob_ctx.close()
