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


async def test_the_rep_edits_the_merged_email_before_sending(
    aiohttp_server: Any, settings: Any, inbox: Any, browser: Any
) -> None:
    """The preview's subject and text are editable; what the rep wrote is what the customer gets,
    through the outbox, on the history; at a desk and on a phone."""
    import os
    from pathlib import Path

    from switchboard.app import create_app

    shots = Path(os.environ.get("SB_SHOTS", "test-screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    settings.smtp.port = inbox.port
    server = await aiohttp_server(create_app(settings))
    store = server.app[STORE]
    await store.users.add("jsmith", role="rep", password=PASSWORD, display_name="John Smith")
    people = []
    for name in ("Jane", "Ann"):
        data = {
            "first_name": name,
            "last_name": "Doe",
            "email": f"{name.lower()}@example.com",
            "owner": "jsmith",
        }
        people.append(await store.contacts.create(validate_contact(data, region="US")))
    tpl = await store.email.save_template(
        template_id=None, name="Service due", subject="Your service is due, {{ contact.first_name }}",
        html="<p>Hi {{ contact.first_name }}, your service is due.</p>",
        text="Hi {{ contact.first_name }}, your service is due.", merge_codes=[], user_id=None,
    )  # fmt: skip
    tpl_id = tpl["id"] if isinstance(tpl, dict) else tpl
    base = str(server.make_url("")).rstrip("/")
    page = await browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    await login(page, base, "jsmith", PASSWORD)
    for (label, width), person in zip((("desk", 1280), ("phone", 390)), people, strict=True):
        await page.set_viewport_size({"width": width, "height": 900})
        await page.goto(f"{base}/contacts/{person.id}")
        await page.select_option("#email-send select[name=template_id]", label="Service due")
        subject = page.locator("#email-edit input[name=subject]")
        await subject.wait_for()
        assert await subject.input_value() == f"Your service is due, {person.first_name}"
        text = page.locator("#email-edit textarea[name=text]")
        assert await text.input_value() == f"Hi {person.first_name}, your service is due."
        await subject.fill(f"Your Civic's service, {person.first_name}")
        await text.fill(f"Hi {person.first_name},\n\nSaturday at 9 works — see you then.\n\nJohn")
        await page.locator("#email-edit .edited-note").wait_for()
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        await page.locator("#email-send").screenshot(path=str(shots / f"rep_email_edit-{label}.png"))
        assert scroll <= inner, f"{label}: the page scrolls sideways ({scroll} > {inner})"
        await page.click("#email-send button[type=submit]")
        await page.wait_for_selector(
            f"#history >> text=Your Civic's service, {person.first_name}", timeout=15_000
        )
    assert errors == [], errors
    assert [m["Subject"] for m in inbox.messages] == [
        "Your Civic's service, Jane",
        "Your Civic's service, Ann",
    ]
    plain, html = [p.get_content() for p in inbox.messages[0].iter_parts()]
    assert "Saturday at 9 works — see you then." in plain and "your service is due" not in plain
    assert "<p>Saturday at 9 works — see you then.</p>" in html
    # an edit goes to one customer, and a subject stays one line
    import aiohttp

    user = await store.users.by_username("jsmith")
    token = await store.users.create_token(user.id, "test")
    for body, field in (
        ({"contact_ids": [p.id for p in people], "subject": "x", "text": "y"}, "subject"),
        ({"contact_ids": [people[0].id], "subject": "a\r\nBcc: x@evil.example", "text": "y"}, "subject"),
        ({"contact_ids": [people[0].id], "subject": "ok", "text": " "}, "text"),
    ):
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http,
            http.post(f"{base}/api/v1/email/send", json={"template_id": tpl_id} | body) as resp,
        ):
            assert resp.status == 400, await resp.text()
            assert (await resp.json())["error"]["field"] == field, body
    assert len(inbox.messages) == 2
