"""A manager reassigns a customer on the contact page: the open follow-ups go with them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from crm_link.contacts import validate_contact
from switchboard.app import create_app
from switchboard.keys import STORE
from tests.browser import login
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


async def test_manager_reassigns_a_customer_and_the_open_followups_follow(
    aiohttp_server: Any, settings: Any, browser: Any
) -> None:
    server = await aiohttp_server(create_app(settings))
    store = server.app[STORE]
    base = str(server.make_url("")).rstrip("/")
    await store.users.add("maria", role="manager", password=PASSWORD)
    jsmith = await store.users.add("jsmith", role="rep", password=PASSWORD, display_name="John Smith")
    await store.users.add("agarcia", role="rep", password=PASSWORD, display_name="Ana Garcia")
    jane = await store.contacts.create(
        validate_contact({"first_name": "Jane", "phones": ["+12125550100"], "owner": "jsmith"}, region="US")
    )
    await store.touches.add_followup(
        jane.id, store.clock() + timedelta(days=2), kind="followup", note="4-day call", assignee_id=jsmith.id
    )
    page = await browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await login(page, base, "maria", PASSWORD)
    await page.goto(f"{base}/contacts/{jane.id}")
    await page.set_viewport_size({"width": 390, "height": 800})
    await page.click("details.edit-contact summary")
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await page.fill("#contact-edit input[name=last_name]", "Doe")
    await page.select_option("#contact-edit select[name=owner]", "agarcia")
    await page.click("#contact-edit button[type=submit]")
    await page.wait_for_selector("#contact-edit-result >> text=1 open follow-up moved")
    updated = await store.contacts.get(jane.id)
    assert (updated.last_name, updated.owner_username) == ("Doe", "agarcia")
    (f,) = await store.touches.open_followups(jane.id)
    assert f.assignee_username == "agarcia"
    # a rep sees no such form
    rep_page = await browser.new_page()
    await login(rep_page, base, "agarcia", PASSWORD)
    await rep_page.goto(f"{base}/contacts/{jane.id}")
    assert await rep_page.locator("#contact-edit").count() == 0
    assert errors == []
