"""Call buttons wherever a rep sees a customer's number: one click from the contacts list rings the
rep's desk phone through the AMI test PBX; My Day's items carry the same button."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from crm_link.contacts import validate_contact
from cti.ami.server import AmiTestServer
from switchboard.keys import STORE
from tests.browser import login
from tests.conftest import PASSWORD
from tests.cti.conftest import start_pbx_app
from tests.test_browser_pages import SHOTS, WIDTHS, _watch

pytestmark = pytest.mark.browser


async def test_one_click_from_the_contacts_list_places_the_call(
    aiohttp_server: Any, settings: Any, pbx: AmiTestServer, browser: Any
) -> None:
    server = await start_pbx_app(aiohttp_server, settings, pbx, {})
    store = server.app[STORE]
    rep = await store.users.add(
        "jsmith", role="rep", password=PASSWORD, display_name="John Smith", extension="1001"
    )
    pat = await store.contacts.create(
        validate_contact(
            {"first_name": "Pat", "last_name": "Taylor", "phones": ["+13125550142"], "owner": "jsmith"},
            region="US",
        )
    )
    await store.followups.create(
        pat.id, store.db.now() - timedelta(hours=1), note="Quote", assignee_id=rep.id
    )
    base = str(server.make_url("")).rstrip("/")
    page = await browser.new_page()
    errors = _watch(page)
    await login(page, base, "jsmith", PASSWORD)
    for label, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        for path in ("/contacts?q=Pat", "/"):
            await page.goto(base + path)
            button = page.get_by_role("button", name="Call Pat Taylor on (312) 555-0142")
            assert await button.count() == 1, path
            scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            name = "rep_call_buttons" + path.replace("/", "_").replace("?", "_") + "-" + label
            await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
            assert scroll <= inner, f"{name}: the page scrolls sideways ({scroll} > {inner})"
    # one click in the contacts list: the PBX is asked to ring the rep's phone, then the customer
    await page.goto(base + "/contacts?q=Pat")
    await page.get_by_role("button", name="Call Pat Taylor on (312) 555-0142").click()
    await page.locator("#call-status:has-text('Your phone is ringing')").wait_for()
    async with asyncio.timeout(10):
        while not any(a.name == "Originate" for a in pbx.actions):
            await asyncio.sleep(0.02)
    originate = next(a for a in pbx.actions if a.name == "Originate")
    assert originate.get("Channel") == "PJSIP/1001"
    assert "+13125550142" in (originate.get("CallerID") or "") or originate.get("Exten") == "+13125550142"
    await page.screenshot(path=str(SHOTS / "rep_call_buttons_placed-desk.png"))
    assert errors == [], errors


async def test_a_rep_without_a_desk_phone_gets_tel_links(
    aiohttp_server: Any, settings: Any, browser: Any
) -> None:
    from switchboard.app import create_app

    server = await aiohttp_server(create_app(settings))
    store = server.app[STORE]
    await store.users.add("jsmith", role="rep", password=PASSWORD, extension="1001")
    await store.contacts.create(
        validate_contact({"first_name": "Pat", "phones": ["+13125550142"], "owner": "jsmith"}, region="US")
    )
    base = str(server.make_url("")).rstrip("/")
    page = await browser.new_page()
    await login(page, base, "jsmith", PASSWORD)
    await page.goto(base + "/contacts?q=Pat")
    link = page.get_by_role("link", name="Call Pat on (312) 555-0142")
    assert await link.get_attribute("href") == "tel:+13125550142"
    assert await page.locator("button.call-btn").count() == 0


async def _originates(pbx: AmiTestServer, n: int) -> Any:
    """The n-th Originate the test PBX received (1-based), once it has arrived."""
    async with asyncio.timeout(10):
        while len(found := [a for a in pbx.actions if a.name == "Originate"]) < n:
            await asyncio.sleep(0.02)
    return found[n - 1]


async def test_call_back_on_a_missed_and_an_ended_pop_rings_the_reps_phone(
    aiohttp_server: Any, settings: Any, pbx: AmiTestServer, browser: Any
) -> None:
    from switchboard.keys import ASTERISK

    server = await start_pbx_app(aiohttp_server, settings, pbx, {"Local/agent1@agents/n": "jsmith"})
    store = server.app[STORE]
    await store.users.add(
        "jsmith", role="rep", password=PASSWORD, display_name="John Smith", extension="1001"
    )
    await store.contacts.create(
        validate_contact(
            {"first_name": "Pat", "last_name": "Taylor", "phones": ["+13125550142"], "owner": "jsmith"},
            region="US",
        )
    )
    await server.app[ASTERISK].directory.reload()
    base = str(server.make_url("")).rstrip("/")
    page = await browser.new_page()
    errors = _watch(page)
    await login(page, base, "jsmith", PASSWORD)
    await page.wait_for_selector("#ws-state.ok")
    # Pat rings and nobody answers: the missed pop offers "Call back"
    call = asyncio.create_task(
        pbx.inbound_call("+13125550142", agents=["Local/agent1@agents/n"], answer=None, ring_seconds=1)
    )
    pop = page.locator(".pop", has_text="Pat Taylor")
    await pop.locator(".pop-state:text('missed')").wait_for(timeout=15_000)
    back = pop.get_by_role("button", name="Call Pat Taylor on (312) 555-0142")
    assert await back.inner_text() == "Call back" and await back.is_visible()
    await call
    before = len([a for a in pbx.actions if a.name == "Originate"])
    for label, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        await page.screenshot(path=str(SHOTS / f"rep_pop_call_back-missed-{label}.png"), full_page=True)
        assert scroll <= inner, f"{label}: the page scrolls sideways ({scroll} > {inner})"
    await back.click()
    await page.locator("#call-status:has-text('Your phone is ringing')").wait_for()
    originate = await _originates(pbx, before + 1)
    assert originate.get("Channel") == "PJSIP/1001"
    assert "+13125550142" in (originate.get("CallerID") or "") or originate.get("Exten") == "+13125550142"

    # an unknown caller who was answered: the ended pop (wrap-up) offers "Call back" to the number
    await page.goto(base + "/")
    await page.wait_for_selector("#ws-state.ok")
    call = asyncio.create_task(
        pbx.inbound_call(
            "+12125550147",
            agents=["Local/agent1@agents/n"],
            answer="Local/agent1@agents/n",
            ring_seconds=1,
            talk_seconds=1,
        )
    )
    pop = page.locator(".pop", has_text="(212) 555-0147")
    await pop.locator(".pop-state:text('wrap-up')").wait_for(timeout=15_000)
    back = pop.get_by_role("button", name="Call +12125550147 on (212) 555-0147")
    assert await back.inner_text() == "Call back"
    await call
    await page.screenshot(path=str(SHOTS / "rep_pop_call_back-ended-desk.png"), full_page=True)
    await back.click()
    originate = await _originates(pbx, before + 2)
    assert originate.get("Channel") == "PJSIP/1001"
    assert "+12125550147" in (originate.get("CallerID") or "") or originate.get("Exten") == "+12125550147"
    assert errors == [], errors


async def test_the_call_button_on_a_recordings_row_rings_the_reps_phone(
    aiohttp_server: Any, settings: Any, pbx: AmiTestServer, browser: Any
) -> None:
    server = await start_pbx_app(aiohttp_server, settings, pbx, {})
    store = server.app[STORE]
    rep = await store.users.add(
        "jsmith", role="rep", password=PASSWORD, display_name="John Smith", extension="1001"
    )
    pat = await store.contacts.create(
        validate_contact(
            {"first_name": "Pat", "last_name": "Taylor", "phones": ["+13125550142"], "owner": "jsmith"},
            region="US",
        )
    )
    await store.recordings.bulk_load(
        [
            {
                "source": "asterisk",
                "pbx_name": "in-1.wav",
                "call_key": "asterisk:1700000000.1",
                "contact_id": pat.id,
                "user_id": rep.id,
                "extension": "1001",
                "direction": "inbound",
                "from_number": "+13125550142",
                "to_number": "+13125550100",
                "started_at": "2026-12-01T15:00:00.000000Z",
                "duration_s": 42.0,
                "format": "wav",
                "state": "indexed",
                "notes": "",
            }
        ]
    )
    base = str(server.make_url("")).rstrip("/")
    page = await browser.new_page()
    errors = _watch(page)
    await login(page, base, "jsmith", PASSWORD)
    for label, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        await page.goto(base + "/recordings")
        button = page.get_by_role("button", name="Call Pat Taylor on (312) 555-0142")
        await button.wait_for()
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        await page.screenshot(path=str(SHOTS / f"rep_recordings_call-{label}.png"), full_page=True)
        assert scroll <= inner, f"{label}: the page scrolls sideways ({scroll} > {inner})"
    await button.click()
    await page.locator("#call-status:has-text('Your phone is ringing')").wait_for()
    originate = await _originates(pbx, 1)
    assert originate.get("Channel") == "PJSIP/1001"
    assert "+13125550142" in (originate.get("CallerID") or "") or originate.get("Exten") == "+13125550142"
    assert errors == [], errors
