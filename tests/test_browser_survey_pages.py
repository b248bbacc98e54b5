"""Surveys in the pages, in a real browser at a desk (1280 px) and a phone (390 px): the SMS blast
form asks a one-question survey instead of a text (the text box shows the question it sends), and a
call's survey answers are shown inside the call's own entry on the customer's timeline."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from switchboard.keys import STORE, SURVEYS
from tests.browser import login
from tests.conftest import PASSWORD
from tests.test_browser_pages import SHOTS, WIDTHS, _watch, pages_app  # noqa: F401
from tests.test_surveys import AFTER_SERVICE

pytestmark = pytest.mark.browser

ONE_QUESTION = {
    "name": "Service by text",
    "questions": [
        {
            "key": "overall",
            "text": "How was your service?",
            "type": "scale",
            "min": 1,
            "max": 5,
            "required": True,
        }
    ],
}


async def test_a_blast_asks_a_one_question_survey_picked_on_the_form(
    pages_app: Any,  # noqa: F811
    browser: Any,
) -> None:
    store = pages_app.app[STORE]
    mgr = await store.users.by_username("mgr")
    one = await pages_app.app[SURVEYS].save(None, ONE_QUESTION, mgr)
    await pages_app.app[SURVEYS].save(None, AFTER_SERVICE, mgr)  # asks more than one question
    base = str(pages_app.make_url("")).rstrip("/")
    page = await browser.new_page()
    errors = _watch(page)
    await login(page, base, "kim", PASSWORD)
    await page.goto(base + "/sms/blasts")
    text = page.locator("#blast-form textarea[name=text]")
    typed = await text.input_value()
    picker = page.get_by_label("Ask a survey")
    # the long survey is listed but cannot be chosen, saying why
    long = page.locator("#blast-form select[name=survey_id] option", has_text="After service")
    assert await long.is_disabled() and "cannot be asked by SMS" in await long.inner_text()
    await picker.select_option(label="Service by text")
    assert await text.input_value() == "How was your service? Reply 1-5."
    assert not await text.is_editable()
    assert await page.get_by_text("The question it will send").is_visible()
    await page.locator("#preview .summary:text('How was your service? Reply 1-5.')").wait_for()
    for label, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        await page.locator("#blast-form").screenshot(path=str(SHOTS / f"marketing_blast_survey-{label}.png"))
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"{label}: the page scrolls sideways ({scroll} > {inner})"
    # no survey again: the text typed before is back, and editable
    await picker.select_option(value="")
    assert await text.input_value() == typed and await text.is_editable()
    assert await page.get_by_text("The question it will send").is_hidden()
    await picker.select_option(label="Service by text")
    await page.fill("#blast-form input[name=name]", "After-service survey")
    await page.fill("#blast-form input[name=tag]", "service")
    await page.fill("#blast-form input[name=send_at]", f"{date.today() + timedelta(days=2)}T10:00:00")
    await page.click("#blast-form button[type=submit]")
    await page.locator("#blasts tbody tr", has_text="After-service survey").wait_for()
    resp = await page.request.get(base + "/api/v1/sms/blasts")
    (blast,) = [b for b in (await resp.json())["items"] if b["name"] == "After-service survey"]
    assert blast["survey_id"] == one.id and blast["text"] == "How was your service? Reply 1-5."
    assert errors == [], errors


async def test_a_calls_survey_answers_are_inside_its_entry_on_the_timeline(
    pages_app: Any,  # noqa: F811
    browser: Any,
) -> None:
    store = pages_app.app[STORE]
    surveys = pages_app.app[SURVEYS]
    jsmith = await store.users.by_username("jsmith")
    mgr = await store.users.by_username("mgr")
    sv = await surveys.save(None, AFTER_SERVICE, mgr)
    jane = pages_app.jane
    answers = {"overall": 2, "reasons": ["waiting time", "price"], "on_time": False, "better": "Call me back"}
    response = await surveys.submit(sv.id, jane.id, answers, by=jsmith, call_id="ami:1700000000.1")
    assert response.touch_id is not None
    base = str(pages_app.make_url("")).rstrip("/")
    page = await browser.new_page()
    errors = _watch(page)
    await login(page, base, "jsmith", PASSWORD)
    for label, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        await page.goto(base + f"/contacts/{jane.id}")
        call = page.locator("#history li.touch.call", has_text="Answered by John Smith")
        box = call.get_by_role("region", name="Survey answers on this call")
        assert await box.count() == 1
        assert "After service" in await box.inner_text() and "dissatisfied" in await box.inner_text()
        assert await box.locator("li").all_inner_texts() == [
            "Overall satisfaction? 2",
            "Was the car ready on time? no",
            "What went wrong? waiting time, price",
            "What could we do better? Call me back",
        ]
        # not a separate note beside the call
        assert await page.locator("#history li.touch", has_text="Overall satisfaction?").count() == 1
        await call.scroll_into_view_if_needed()
        await page.screenshot(path=str(SHOTS / f"rep_contact_call_survey-{label}.png"), full_page=True)
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"{label}: the page scrolls sideways ({scroll} > {inner})"
    assert errors == [], errors
