"""The contact page's consent-to-texts control in Chromium: a rep records how their customer agreed,
the text form opens, and the consent can be withdrawn; at desk and phone widths."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from campaigns.sms.kannel_standin import KannelStandIn
from crm_link.contacts import validate_contact
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.settings import SmsChannelSettings
from tests.browser import login
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser
SHOTS = Path(os.environ.get("SB_SHOTS", "/tmp/shots/pages2"))


@pytest.fixture
async def kannel() -> AsyncIterator[KannelStandIn]:
    async with KannelStandIn() as k:
        yield k


async def test_rep_records_and_withdraws_consent_on_the_contact_page(
    aiohttp_server: Any, settings: Any, browser: Any, kannel: KannelStandIn
) -> None:
    settings.sms.require_consent = True
    settings.sms.channels["main"] = SmsChannelSettings(
        name="main",
        type="kannel",
        options={"sendsms_url": kannel.sendsms_url, "username": "u", "password": "p", "secret": "s"},
    )
    server = await aiohttp_server(create_app(settings))
    store = server.app[STORE]
    base = str(server.make_url("")).rstrip("/")
    await store.users.add("jsmith", role="rep", password=PASSWORD, display_name="John Smith")
    await store.users.add("maria", role="manager", password=PASSWORD)
    bob = await store.contacts.create(
        validate_contact(
            {"first_name": "Bob", "last_name": "Stone", "phones": ["+13125550142"], "owner": "jsmith"},
            region="US",
        )
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await login(page, base, "jsmith", PASSWORD)
    await page.goto(f"{base}/contacts/{bob.id}")
    assert "no consent" in await page.inner_text("#sms-consent")
    assert await page.is_visible("#sms-needs-consent")
    assert await page.locator("#sms-send").count() == 0
    await page.screenshot(path=str(SHOTS / "consent-none-1280.png"), full_page=True)

    await page.select_option("#sms-consent-form select[name=source]", "in_person")
    await page.get_by_role("button", name="Record consent").click()
    await page.wait_for_selector("#sms-consent .badge.ok")
    assert "in person · recorded by jsmith" in await page.inner_text("#sms-consent")
    assert await page.is_visible("#sms-send textarea[name=text]")
    got = await store.contacts.get(bob.id)
    assert (got.sms_consent_source, got.sms_consent_by) == ("in_person", "jsmith")
    await page.screenshot(path=str(SHOTS / "consent-agreed-1280.png"), full_page=True)

    await page.set_viewport_size({"width": 390, "height": 844})
    await page.reload()
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await page.locator("#sms-consent").scroll_into_view_if_needed()
    await page.screenshot(path=str(SHOTS / "consent-agreed-390.png"))
    await page.get_by_role("button", name="Withdraw consent").click()
    await page.wait_for_selector("#sms-consent-form select[name=source]")
    assert "no consent" in await page.inner_text("#sms-consent")
    assert (await store.contacts.get(bob.id)).sms_consent_at is None
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await page.locator("#sms-consent").scroll_into_view_if_needed()
    await page.screenshot(path=str(SHOTS / "consent-none-390.png"))
    assert errors == []
