"""A salesperson in a real browser: open a customer, pick a template, see the preview, send, see it on the history."""

from __future__ import annotations

from typing import Any

import pytest

from crm_link.contacts import validate_contact
from switchboard.keys import STORE
from tests.browser import login
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


async def test_send_a_template_from_the_contact_page(
    aiohttp_server: Any,
    settings: Any,
    inbox: Any,
    browser: Any,
) -> None:
    from switchboard.app import create_app

    settings.smtp.port = inbox.port
    server = await aiohttp_server(create_app(settings))
    store = server.app[STORE]
    await store.users.add("jsmith", role="rep", password=PASSWORD, display_name="John Smith")
    jane = await store.contacts.create(
        validate_contact(
            {
                "first_name": "Jane",
                "last_name": "Doe",
                "email": "jane@example.com",
                "owner": "jsmith",
                "attributes": {"vehicle": "2024 Civic"},
            },
            region="US",
        )
    )
    await store.email.save_template(
        template_id=None,
        name="Thank you for your purchase",
        subject="Enjoy your {{ contact.attributes.vehicle }}, {{ contact.first_name }}!",
        html="<p>Hi {{ contact.first_name }}, congratulations!</p>",
        text="",
        merge_codes=[],
        user_id=None,
    )
    base = str(server.make_url("")).rstrip("/")
    page = await browser.new_page()
    await login(page, base, "jsmith", PASSWORD)
    await page.goto(f"{base}/contacts/{jane.id}")
    await page.select_option("#email-send select[name=template_id]", label="Thank you for your purchase")
    await page.wait_for_selector("#email-preview .preview-subject:text('Enjoy your 2024 Civic, Jane!')")
    frame = page.frame_locator("#email-preview iframe")
    assert "Hi Jane, congratulations!" in await frame.locator("body").text_content()
    await page.click("#email-send button[type=submit]")
    await page.wait_for_selector("#history >> text=Enjoy your 2024 Civic, Jane!", timeout=15_000)
    assert [m["Subject"] for m in inbox.messages] == ["Enjoy your 2024 Civic, Jane!"]
