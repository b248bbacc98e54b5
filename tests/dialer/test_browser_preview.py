"""Headless Chromium: a rep in preview mode gets the next customer with the pop, dials, sets a
disposition with a call-back and finds the call-back on My Day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crm_link.call_lists import ListSpec
from crm_link.contacts import validate_contact
from cti.ami.server import AmiTestServer
from switchboard.app import create_app
from switchboard.keys import ASTERISK, DIALER, STORE
from tests.browser import login
from tests.conftest import PASSWORD
from tests.dialer.conftest import add_customers, until
from tests.test_browser_pages import SHOTS


@pytest.mark.browser
async def test_rep_works_a_preview_list_in_the_browser(
    aiohttp_server: Any, settings: Any, pbx: AmiTestServer, browser: Any
) -> None:
    settings.asterisk.enabled = True
    settings.asterisk.port = pbx.port
    settings.asterisk.secret.__init__("crm-secret")
    settings.calling_hours.start, settings.calling_hours.end = "00:00", "23:59"  # real clock here
    settings.dialer.tick_seconds = 0.1
    server = await aiohttp_server(create_app(settings))
    app = server.app
    await app[ASTERISK].client.wait_connected(5)
    store = app[STORE]
    await store.users.add(
        "jsmith", role="rep", password=PASSWORD, extension="1001", display_name="John Smith"
    )
    await app[ASTERISK].directory.reload()
    jane = (
        await store.contacts.create(
            validate_contact(
                {"first_name": "Jane", "last_name": "Doe", "phones": ["+12127365001"], "owner": "jsmith"},
                region="US",
            )
        )
    ).id
    (other,) = await add_customers(store, ["+12127365002"], owner="jsmith")
    dialer = app[DIALER]

    cl, _ = await store.call_lists.create(
        ListSpec(name="After-sale 4 days", mode="preview"), contact_ids=[jane, other], now=dialer.clock()
    )
    await store.call_lists.set_state(cl.id, "running", dialer.clock())

    base = str(server.make_url("")).rstrip("/")
    page = await browser.new_page()
    await login(page, base, "jsmith", PASSWORD)
    await page.click("text=Call lists")
    await page.wait_for_selector("#lists tr[data-list-id] >> text=After-sale 4 days")
    await page.click("#next-call")
    await page.wait_for_selector("#preview .pop-name:text('Jane Doe')")
    assert "(212) 736-5001" in await page.text_content("#preview .pop-number")
    await page.click("#dial")
    await page.wait_for_selector("#disposition:not([hidden])")
    # the PBX rings the rep's phone, then the customer, who answers; the page hears the end
    await page.wait_for_selector("#call-state:text('ended: answered')", timeout=15_000)
    originate = next(a for a in pbx.actions if a.name == "Originate")
    assert originate.get("Channel") == "PJSIP/1001" and originate.get("Exten") == "+12127365001"
    await page.select_option("#disposition select[name=disposition]", "call back")
    # the rep types wall time in the dealership's zone (what the page reads it as), whatever the
    # zone of the machine the browser runs on
    callback_local = (
        (dialer.clock() + timedelta(minutes=3))
        .astimezone(ZoneInfo(settings.server.time_zone))
        .strftime("%Y-%m-%dT%H:%M")
    )
    await page.fill("#disposition input[name=callback_at]", callback_local)
    await page.fill("#disposition textarea[name=note]", "wants to talk about the trade-in")
    await page.click("#disposition button[type=submit]")
    await page.wait_for_selector("#disposition-saved:text('Saved.')")
    # the next customer is offered at once, and the keyboard is already on it
    await page.wait_for_selector("#offer-next #take-next:focus")
    for label, width in (("desk", 1280), ("phone", 390)):
        await page.set_viewport_size({"width": width, "height": 844})
        await page.screenshot(path=str(SHOTS / f"rep_preview_offer_next-{label}.png"), full_page=True)
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"{label}: the page scrolls sideways ({scroll} > {inner})"
    await page.set_viewport_size({"width": 1280, "height": 800})
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#preview .pop-name:not(:text('Jane Doe'))")
    assert await page.locator("#offer-next").is_hidden()
    assert await page.locator("#preview .pop-actions #dial").is_visible()

    attempts = await store.call_lists.attempts_of(list_id=cl.id)
    assert [(a.state, a.disposition) for a in attempts] == [("answered", "call back")]
    touch = await store.touches.get(attempts[0].touch_id)
    assert touch.summary == "wants to talk about the trade-in" and touch.contact_id == jane

    async def list_shows_it() -> bool:
        return "2 pending · 0 in progress" in (await page.text_content("#lists tbody") or "")

    await until(list_shows_it)
    await page.click("text=My Day")
    callbacks = page.locator("ul.due[data-kind=callback] li", has_text="Jane Doe")
    await callbacks.wait_for()
    assert "trade-in" in (await callbacks.text_content() or "")
    lists = page.locator("ul.due[data-kind=call_list] li", has_text="After-sale 4 days")
    assert "1 to call" in (await lists.text_content() or "")  # the other is on the rep's screen
    assert datetime.now(UTC) < (await store.call_lists.entry(attempts[0].entry_id)).next_at


@pytest.mark.browser
async def test_manager_builds_a_segment_and_a_list_from_it(
    aiohttp_server: Any, settings: Any, browser: Any
) -> None:
    server = await aiohttp_server(create_app(settings))
    store = server.app[STORE]
    await store.users.add("maria", role="manager", password=PASSWORD, display_name="Maria Lopez")
    await store.users.add("jsmith", role="rep", password=PASSWORD, extension="1001")
    for i, (visits, days) in enumerate(((4, 200), (5, 400), (1, 300), (6, 30))):
        last = (datetime.now(UTC) - timedelta(days=days)).date().isoformat()
        await store.contacts.create(
            validate_contact(
                {
                    "first_name": f"Owner{i}",
                    "last_name": "Test",
                    "phones": [f"+1212736{5200 + i}"],
                    "attributes": {"service_visits": visits, "last_service_date": last},
                },
                region="US",
            )
        )
    base = str(server.make_url("")).rstrip("/")
    page = await browser.new_page()
    await login(page, base, "maria", PASSWORD)
    await page.goto(base + "/call-lists")
    await page.fill("#segment-form input[name=name]", "Lost service customers")
    # the builder's starting rows: no visit in 180 days after 3 or more; counted live
    await page.wait_for_selector("#segment-builder .count:text('2 customers today')")
    assert "Owner0 Test" in (await page.text_content("#segment-builder .segment-count") or "")
    await page.click("#segment-advanced summary")  # the JSON, for what the rows cannot say
    await page.fill(
        "#segment-form textarea[name=filter]", '{"field": "password_hash", "op": "eq", "value": 1}'
    )
    await page.click("#segment-preview")
    await page.wait_for_selector("#segment-builder .segment-count .error:has-text('filter.field')")
    await page.fill(
        "#segment-form textarea[name=filter]",
        '{"all": [{"field": "attributes.last_service_date", "op": "older_than_days", "value": 180},'
        ' {"field": "attributes.service_visits", "op": "gte", "value": 3}]}',
    )
    await page.click("#segment-form button[type=submit]")
    await page.wait_for_selector("#segment-result:has-text('2 customers today')")
    await page.fill("#list-form input[name=name]", "Win them back")
    await page.select_option("#list-form select[name=mode]", "progressive")
    await page.select_option("#list-form select[name=segment]", label="Lost service customers")
    await page.click("#list-form button[type=submit]")
    await page.wait_for_selector("#build-summary:has-text('Added 2 entries')")
    row = page.locator("#lists tr", has_text="Win them back")
    await row.locator(".state:text('running')").wait_for()
    await row.locator("button:text('pause')").click()
    await row.locator(".state:text('paused')").wait_for()
    (cl,) = await store.call_lists.all()
    assert (
        cl.source["segment"] == (await store.segments.get("Lost service customers")).id
        and cl.state == "paused"
    )
