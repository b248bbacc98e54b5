"""The email template editor's preview follows the edits as you type, for a real customer chosen by
name, and a misspelt merge code is named under its field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser import login
from tests.conftest import PASSWORD
from tests.test_browser_pages import SHOTS, WIDTHS, _watch, pages_app

pytestmark = pytest.mark.browser
__all__ = ["pages_app"]


async def test_preview_follows_typing_and_flags_a_misspelt_code(pages_app: Any, browser: Any) -> None:
    base = str(pages_app.make_url("")).rstrip("/")
    jane = pages_app.jane
    page = await browser.new_page()
    errors = _watch(page)
    await login(page, base, "jsmith", PASSWORD)
    for label, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        await page.goto(base + "/email/templates")
        await page.locator("#preview-state:has-text('Choose a customer')").wait_for()
        # a customer by name: the suggestions name them with their number and id
        await page.fill("#preview-form input[name=customer]", "Jane")
        option = page.locator("#preview-customers option").first
        await option.wait_for(state="attached")
        value = await option.get_attribute("value")
        assert value == f"Jane Doe-Worthington · (312) 555-0142 · #{jane.id}"
        await page.fill("#preview-form input[name=customer]", value)
        await page.locator("#preview-state:has-text('For Jane Doe-Worthington')").wait_for()
        frame = page.locator("#preview iframe.preview-html")
        assert "Hi Jane," in (await frame.get_attribute("srcdoc") or "")
        # typing in the subject and the body changes the preview, nothing saved
        await page.fill("#template-form input[name=subject]", "Your Civic, {{ contact.first_name }}")
        await page.locator("#preview .preview-subject:text('Your Civic, Jane')").wait_for()
        await page.fill("#template-form textarea[name=html]", "<p>Dear {{ contact.last_name }}</p>")
        await page.locator("#preview iframe.preview-html[srcdoc*='Dear Doe-Worthington']").wait_for(
            state="attached"
        )
        # a misspelt merge code is named under its field, and the field is marked
        await page.fill("#template-form textarea[name=html]", "<p>Dear {{ contact.frist_name }}</p>")
        problem = page.locator("#html-problem")
        await problem.wait_for()
        text = await problem.text_content() or ""
        assert "contact.frist_name" in text and "did you mean contact.first_name" in text
        assert await page.get_attribute("#template-form textarea[name=html]", "aria-invalid") == "true"
        assert await page.locator("#subject-problem").is_hidden()
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        await page.screenshot(path=str(SHOTS / f"rep_email_editor_problem-{label}.png"), full_page=True)
        assert scroll <= inner, f"{label}: the page scrolls sideways ({scroll} > {inner})"
        # fixed, the mark goes and the preview resumes
        await page.fill("#template-form textarea[name=html]", "<p>Dear {{ contact.first_name }}</p>")
        await problem.wait_for(state="hidden")
        await page.locator("#preview iframe.preview-html[srcdoc*='Dear Jane']").wait_for(state="attached")
        assert await page.get_attribute("#template-form textarea[name=html]", "aria-invalid") is None
        await page.screenshot(path=str(SHOTS / f"rep_email_editor-{label}.png"), full_page=True)
    # a syntax error in the subject is named there too
    await page.fill("#template-form input[name=subject]", "Hi {{ contact.first_name ")
    await page.locator("#subject-problem").wait_for()
    assert errors == [], errors


async def test_draft_preview_over_http(client: Any, rep: Any, manager: Any) -> None:
    """POST /api/v1/email/preview renders a draft, or names each part's problem; reps see only theirs."""
    from crm_link.contacts import validate_contact
    from switchboard.keys import STORE

    store = client.app[STORE]
    mine = await store.contacts.create(
        validate_contact({"first_name": "Ann", "phones": ["+13125550100"], "owner": "jsmith"}, region="US")
    )
    other = await store.contacts.create(
        validate_contact({"first_name": "Bo", "phones": ["+13125550101"], "owner": "maria"}, region="US")
    )
    draft = {"subject": "Hi {{ contact.first_name }}", "html": "<p>{{ contact.first_name }}</p>", "text": ""}
    r = await rep.post("/api/v1/email/preview", json=draft | {"contact_id": mine.id})
    body = await r.json()
    assert (
        r.status == 200 and body["subject"] == "Hi Ann" and "Ann" in body["html"] and body["problems"] == {}
    )
    bad = draft | {"subject": "Hi {{ contact.frist_name }}", "text": "{% if %}"}
    body = await (await rep.post("/api/v1/email/preview", json=bad | {"contact_id": mine.id})).json()
    assert set(body["problems"]) == {"subject", "text"} and body["html"] is None
    assert "did you mean contact.first_name" in body["problems"]["subject"]
    # no customer yet: the problems alone
    body = await (await rep.post("/api/v1/email/preview", json=bad)).json()
    assert set(body["problems"]) == {"subject", "text"}
    forbidden = await rep.post("/api/v1/email/preview", json=draft | {"contact_id": other.id})
    assert forbidden.status == 403
    wrong = await rep.post("/api/v1/email/preview", json=draft | {"html": 3})
    assert wrong.status == 400 and (await wrong.json())["error"]["field"] == "html"


async def test_saving_a_misspelt_merge_code_asks_first(pages_app: Any, browser: Any) -> None:
    """Save with a misspelt code: nothing is saved, the field is marked and "Save anyway" offered;
    fixing it saves at once; "Save anyway" saves as written (the API names the code in `warnings`)."""
    from switchboard.keys import STORE

    store = pages_app.app[STORE]
    base = str(pages_app.make_url("")).rstrip("/")
    page = await browser.new_page()
    errors = _watch(page)
    await login(page, base, "jsmith", PASSWORD)
    for label, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        await page.goto(base + "/email/templates")
        name = f"Service due {label}"
        await page.fill("#template-form input[name=name]", name)
        await page.fill("#template-form input[name=subject]", "Service due, {{ contact.first_name }}")
        await page.fill("#template-form textarea[name=html]", "<p>Hi {{ contact.frist_name }}</p>")
        await page.get_by_role("button", name="Save template").click()
        anyway = page.get_by_role("button", name="Save anyway")
        await anyway.wait_for()
        assert "Not saved yet" in (await page.text_content("#save-result") or "")
        assert "did you mean contact.first_name" in (await page.text_content("#html-problem") or "")
        assert name not in [t["name"] for t in await store.email.templates()]
        await page.screenshot(path=str(SHOTS / f"rep_email_save_confirm-{label}.png"), full_page=True)
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"{label}: the page scrolls sideways ({scroll} > {inner})"
        if label == "desk":
            # fixed: the confirmation goes, and Save saves
            await page.fill("#template-form textarea[name=html]", "<p>Hi {{ contact.first_name }}</p>")
            assert await anyway.is_hidden()
            await page.get_by_role("button", name="Save template").click()
        else:
            await anyway.click()
        await page.locator("#save-result:has-text('Saved.')").wait_for()
        saved = next(t for t in await store.email.templates() if t["name"] == name)
        full = await store.email.template(saved["id"])
        want = "first_name" if label == "desk" else "frist_name"
        assert f"contact.{want}" in full["html"]
    # a syntax error is refused outright: no "Save anyway"
    await page.fill("#template-form input[name=name]", "Broken")
    await page.fill("#template-form textarea[name=html]", "<p>Hi {{ contact.first_name </p>")
    await page.get_by_role("button", name="Save template").click()
    await page.locator("#save-result:has-text('fix the marked field')").wait_for()
    assert await page.get_by_role("button", name="Save anyway").is_hidden()
    assert errors == [], errors


async def test_the_api_saves_a_misspelt_code_and_names_it_in_warnings(pages_app: Any) -> None:
    from aiohttp import ClientSession

    from switchboard.keys import STORE

    store = pages_app.app[STORE]
    user = await store.users.by_username("mgr")
    assert user is not None
    token = await store.users.create_token(user.id, "t")
    async with ClientSession(str(pages_app.make_url(""))) as http:
        resp = await http.post(
            "/api/v1/email/templates",
            json={"name": "Typo", "subject": "Hi", "html": "<p>{{ contact.frist_name }}</p>"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    assert "contact.frist_name" in body["warnings"]["html"] and "subject" not in body["warnings"]
