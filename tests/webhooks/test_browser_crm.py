"""The admin's CRM deliveries page in Chromium: a dead letter with its reason, re-driven by a click."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crm_link.contacts import validate_contact
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.sim.crm_standin import CrmStandIn
from tests.browser import login
from tests.conftest import PASSWORD
from tests.webhooks.conftest import all_delivered, hook, until

SHOTS = Path("/tmp/shots/webhooks")


@pytest.fixture
async def crm_server(aiohttp_server: Any, settings: Any, crm: CrmStandIn) -> Any:
    hook(settings, crm)
    settings.crm.max_attempts = 1
    return await aiohttp_server(create_app(settings))


async def test_admin_sees_a_dead_letter_and_redrives_it(
    crm_server: Any, crm: CrmStandIn, browser: Any
) -> None:
    store = crm_server.app[STORE]
    await store.users.add("admin", role="admin", password=PASSWORD)
    crm.fail_status = 503
    await store.contacts.create(validate_contact({"first_name": "Ann", "external_id": "SAP-1"}, region="US"))

    async def dead() -> Any:
        return (await store.crm_events.deliveries(state="dead")).items

    await until(dead)
    base = str(crm_server.make_url("")).rstrip("/")
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        ctx = await browser.new_context(viewport={"width": width, "height": 900})
        page = await ctx.new_page()
        await login(page, base, "admin", PASSWORD)
        await page.goto(f"{base}/admin/crm")
        assert "HTTP 503: CRM unavailable" in await page.inner_text("#crm-deliveries")
        assert "failing" in await page.inner_text("#crm-subscribers")
        await page.screenshot(path=str(SHOTS / f"admin_crm_{width}.png"), full_page=True)
        await ctx.close()
    crm.fail_status = None
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await ctx.new_page()
    await login(page, base, "admin", PASSWORD)
    await page.goto(f"{base}/admin/crm")
    await page.click("#crm-deliveries button")
    assert "Re-driven: 1" in await page.inner_text(".notice")
    await until(lambda: all_delivered(store, crm))
    await page.goto(f"{base}/admin/crm?state=delivered")
    assert "contact.created" in await page.inner_text("#crm-deliveries")
    await page.screenshot(path=str(SHOTS / "admin_crm_delivered_1280.png"), full_page=True)
    await ctx.close()
