"""Headless Chromium: a manager builds a survey without JSON (questions added, reordered, an
"ask only when" and "dissatisfied when"); a rep works a preview list that carries it, reads the
script, answers (the reason question appears only for a low score), and the answers complete the
call; the manager finds the complaint on their day."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from crm_link.call_lists import ListSpec
from crm_link.contacts import validate_contact
from cti.ami.server import AmiTestServer
from switchboard.app import create_app
from switchboard.keys import ASTERISK, DIALER, STORE
from tests.browser import login
from tests.conftest import PASSWORD

SHOTS = Path(os.environ.get("SB_SHOTS", "/tmp/shots/surveys"))


async def _shots(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, width in (("desk", 1280), ("phone", 390)):
        await page.set_viewport_size({"width": width, "height": 844})
        await page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"{name} {label}: the page scrolls sideways ({scroll} > {inner})"
    await page.set_viewport_size({"width": 1280, "height": 800})


@pytest.mark.browser
async def test_manager_builds_a_survey_and_a_rep_completes_it_on_a_preview_call(
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
    await store.users.add("maria", role="manager", password=PASSWORD, display_name="Maria Lopez")
    await app[ASTERISK].directory.reload()
    jane = (
        await store.contacts.create(
            validate_contact(
                {"first_name": "Jane", "last_name": "Doe", "phones": ["+12127365001"], "owner": "jsmith"},
                region="US",
            )
        )
    ).id
    base = str(server.make_url("")).rstrip("/")

    # the manager builds the survey on the page
    boss = await browser.new_page()
    await login(boss, base, "maria", PASSWORD)
    await boss.click("nav >> text=Surveys")
    await boss.fill("#survey-builder input[name=name]", "After service")
    await boss.fill("#survey-builder textarea[name=script]", "Hi, this is John from the dealership.")
    first = boss.locator("#questions li").nth(0)
    assert await first.locator("input[name=text]").input_value() == "Overall, how satisfied are you?"
    await boss.click("#add-question")
    q2 = boss.locator("#questions li").nth(1)
    await q2.locator("input[name=text]").fill("What went wrong?")
    await q2.locator("input[name=key]").fill("reasons")
    await q2.locator("select[name=type]").select_option("multi")
    await q2.locator("input[name=required]").check()
    await q2.locator("textarea[name=options]").fill("waiting time\nprice\nadvisor")
    await q2.locator("select[name=show_key]").select_option("overall")
    await q2.locator("select[name=show_op]").select_option("lte")
    await q2.locator("input[name=show_value]").fill("2")
    await boss.click("#add-question")
    q3 = boss.locator("#questions li").nth(2)
    await q3.locator("input[name=text]").fill("Was the car ready on time?")
    await q3.locator("input[name=key]").fill("on_time")
    await q3.locator("select[name=type]").select_option("yes_no")
    await q3.locator("button.up").click()  # reorder: on time before the reasons
    assert await boss.locator("#questions li").nth(1).locator("input[name=key]").input_value() == "on_time"
    await boss.select_option("#survey-builder select[name=dis_key]", "overall")
    await boss.select_option("#survey-builder select[name=dis_op]", "lte")
    await boss.fill("#survey-builder input[name=dis_value]", "2")
    # a question without text is refused, and the page says which one
    await boss.click("#add-question")
    await boss.click("#survey-builder button[type=submit]")
    await boss.wait_for_selector("#questions li.bad .q-error:has-text('Question 4')")
    await boss.locator("#questions li").nth(3).locator("button.remove").click()
    await boss.click("#survey-builder button[type=submit]")
    await boss.wait_for_selector("#builder-result:text('Saved.')")
    await boss.wait_for_selector("#builder-title:has-text('v1')")
    (survey,) = await store.surveys.all()
    spec = survey.spec
    assert [q["key"] for q in spec["questions"]] == ["overall", "on_time", "reasons"]
    assert spec["questions"][2]["show_if"] == {"key": "overall", "op": "lte", "value": 2}
    assert spec["dissatisfied_if"] == {"key": "overall", "op": "lte", "value": 2}
    await _shots(boss, "survey_builder")

    dialer = app[DIALER]
    cl, _ = await store.call_lists.create(
        ListSpec(name="After-service survey", mode="preview", survey_id=survey.id),
        contact_ids=[jane],
        now=dialer.clock(),
    )
    await store.call_lists.set_state(cl.id, "running", dialer.clock())

    page = await browser.new_page()
    await login(page, base, "jsmith", PASSWORD)
    await page.goto(base + "/call-lists")
    await page.click("#next-call")
    await page.wait_for_selector("#preview .pop-name:text('Jane Doe')")
    await page.wait_for_selector("#preview .survey-script:text('Hi, this is John from the dealership.')")
    reasons = page.locator("#preview fieldset.q[data-key=reasons]")
    assert await reasons.is_hidden()  # asked only for a low score
    # saving before the call is refused on the page: the answers go with the call
    await page.click("#preview .survey-form button[type=submit]")
    await page.wait_for_selector("#preview .survey-result:has-text('Call the customer first')")
    await page.click("#dial")
    await page.wait_for_selector("#call-state:text('ended: answered')", timeout=15_000)
    overall = page.locator("#preview fieldset.q[data-key=overall]")
    await overall.locator("label:has-text('2') input").check()
    await reasons.wait_for(state="visible")  # show_if, live
    # the reason is required once asked: the server says so and the page marks the question
    await page.click("#preview .survey-form button[type=submit]")
    await page.wait_for_selector("#preview fieldset.q.bad[data-key=reasons] .q-error:has-text('required')")
    await reasons.locator("label:has-text('waiting time') input").check()
    await page.locator("#preview fieldset.q[data-key=on_time] label:has-text('No') input").check()
    await page.click("#preview .survey-form button[type=submit]")
    await page.wait_for_selector("#preview .survey-result:has-text('completed survey')")
    await page.wait_for_selector("#offer-next #take-next:focus")
    await _shots(page, "rep_survey_on_preview")

    (response,) = await store.surveys.responses(survey_id=survey.id)
    assert response.answers == {"overall": 2, "on_time": False, "reasons": ["waiting time"]}
    assert response.agent == "jsmith" and response.list_id == cl.id and response.dissatisfied
    (attempt,) = await store.call_lists.attempts_of(list_id=cl.id)
    assert (attempt.state, attempt.disposition) == ("answered", "completed survey")
    assert response.touch_id == attempt.touch_id is not None
    entry = await store.call_lists.entry(attempt.entry_id)
    assert (entry.state, entry.result) == ("done", "completed survey")

    # the complaint is on the manager's day with the answers
    await boss.goto(base + "/")
    item = boss.locator("li", has_text="Dissatisfied customer")
    await item.first.wait_for()
    assert "waiting time" in (await item.first.text_content() or "")
    await boss.goto(base + f"/contacts/{jane}")
    await boss.wait_for_selector("#history .call-survey li:has-text('Overall, how satisfied are you? 2')")
