"""A salesperson in a real browser: log in, find a customer, log a note with a follow-up, see it on My Day."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crm_link.contacts import validate_contact
from switchboard.keys import STORE
from tests.browser import login
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


async def test_rep_logs_note_and_sees_followup_on_my_day(live_app: Any, browser: Any) -> None:
    store = live_app.app[STORE]
    await store.users.add("jsmith", role="rep", password=PASSWORD, display_name="John Smith")
    jane = await store.contacts.create(
        validate_contact(
            {
                "first_name": "Jane",
                "last_name": "Doe",
                "phones": ["+15551234567"],
                "owner": "jsmith",
                "attributes": {"vehicle": "2024 Civic"},
            },
            region="US",
        )
    )
    base = str(live_app.make_url("")).rstrip("/")
    page = await browser.new_page()
    await login(page, base, "jsmith", PASSWORD)

    await page.click("text=Contacts")
    await page.fill("input[name=q]", "(555) 123-4567")
    await page.press("input[name=q]", "Enter")
    await page.click("#results >> text=Jane Doe")
    await page.wait_for_url(f"{base}/contacts/{jane.id}")
    assert await page.text_content("#contact-card h1") == "Jane Doe"
    assert "2024 Civic" in await page.text_content("#contact-card")

    await page.fill("#log-touch textarea[name=summary]", "Asked for a trade-in estimate")
    await page.select_option("#log-touch select[name=kind]", "call")
    soon = (datetime.now(ZoneInfo("America/Chicago")) + timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M")
    await page.fill("#log-touch input[name=next_followup_at]", soon)
    await page.fill("#log-touch input[name=followup_note]", "Send the estimate")
    await page.click("#log-touch button[type=submit]")
    await page.wait_for_selector("#history >> text=Asked for a trade-in estimate")
    assert "Send the estimate" in await page.text_content("#followups")

    await page.click("text=My Day")
    item = page.locator("ul.due[data-kind=followup] li", has_text="Jane Doe")
    await item.wait_for()
    assert "Send the estimate" in await item.text_content()
    # and the touch really is in the store, once
    history = await store.touches.history(jane.id)
    assert [t.summary for t in history.items] == ["Asked for a trade-in estimate"]


async def test_unknown_search_offers_new_prospect(live_app: Any, browser: Any) -> None:
    store = live_app.app[STORE]
    await store.users.add("jsmith", role="rep", password=PASSWORD)
    base = str(live_app.make_url("")).rstrip("/")
    page = await browser.new_page()
    await login(page, base, "jsmith", PASSWORD)
    await page.goto(base + "/contacts?q=212-736-5000")
    await page.click("text=Add 212-736-5000 as a new prospect")
    assert await page.input_value("input[name=phone]") == "212-736-5000"
    await page.fill("input[name=first_name]", "Sam")
    await page.click("#new-prospect button[type=submit]")
    await page.wait_for_selector("#contact-card >> text=(212) 736-5000")
    found = await store.contacts.find_by_phone("2127365000")
    assert [c.first_name for c in found] == ["Sam"] and found[0].owner_username == "jsmith"
