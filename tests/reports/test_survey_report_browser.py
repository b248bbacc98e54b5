"""Headless Chromium: the printable survey report (the reasons as a Pareto: bars most first and the
cumulative share as a line; print styles drop the controls) and a manager attaching a survey to an
existing call list from /call-lists. Screenshots at 1280 and 390 px (and printed) in SB_SHOTS."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from crm_link.call_lists import ListSpec
from crm_link.clock import ManualClock
from crm_link.contacts import validate_contact
from crm_link.surveys import NewResponse
from followups.surveys import parse_survey, score
from switchboard.app import create_app
from switchboard.keys import STORE
from tests.browser import login
from tests.conftest import PASSWORD

SHOTS = Path(os.environ.get("SB_SHOTS", "/tmp/shots/surveys2"))
REASONS = ["waiting time", "price", "advisor was not helpful", "car not ready when promised", "car not clean"]
SURVEY: dict[str, Any] = {
    "name": "After service",
    "questions": [
        {"key": "overall", "text": "Overall?", "type": "scale", "min": 1, "max": 5, "required": True},
        {
            "key": "reasons",
            "text": "What went wrong?",
            "type": "multi",
            "options": REASONS,
            "show_if": {"key": "overall", "op": "lte", "value": 3},
        },
    ],
    "dissatisfied_if": {"key": "overall", "op": "lte", "value": 2},
}


async def _shots(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, width in (("desk", 1280), ("phone", 390)):
        await page.set_viewport_size({"width": width, "height": 900})
        await page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"{name} {label}: the page scrolls sideways ({scroll} > {inner})"
    await page.set_viewport_size({"width": 1280, "height": 900})


@pytest.mark.browser
async def test_report_page_pareto_print_and_a_list_survey_control(
    aiohttp_server: Any, settings: Any, browser: Any
) -> None:
    clock = ManualClock(datetime(2026, 7, 1, 15, 0, tzinfo=UTC))
    server = await aiohttp_server(create_app(settings, clock=clock))
    store = server.app[STORE]
    await store.users.add("maria", role="manager", password=PASSWORD, display_name="Maria Lopez")
    agents = [await store.users.add(n, role="rep", password=PASSWORD) for n in ("ann", "bob", "carla")]
    sid = (await store.surveys.create(parse_survey(SURVEY).to_dict(), user_id=None)).id
    spec = parse_survey(SURVEY)
    lst, _ = await store.call_lists.create(ListSpec(name="June service"), contact_ids=[], now=clock())
    rnd = random.Random(7)
    given: dict[str, int] = {}
    for i in range(80):
        clock.set(datetime(2026, rnd.choice([4, 5, 6]), rnd.randint(1, 28), 16, tzinfo=UTC))
        overall = rnd.choice([1, 2, 2, 3, 4, 4, 5, 5, 5])
        answers: dict[str, Any] = {"overall": overall}
        if overall <= 3:
            weights = [6, 3, 2, 1, 1]
            answers["reasons"] = sorted(set(rnd.choices(REASONS, weights=weights, k=rnd.randint(1, 2))))
            for r in answers["reasons"]:
                given[r] = given.get(r, 0) + 1
        contact = await store.contacts.create(
            validate_contact({"first_name": f"C{i}", "phones": [f"+1212555{3000 + i}"]}, region="US")
        )
        s = score(spec, answers)
        await store.surveys.record(
            NewResponse(
                survey_id=sid,
                survey_version=1,
                source_key=f"b:{i}",
                contact_id=contact.id,
                answers=answers,
                score=s.score,
                satisfied=s.satisfied,
                dissatisfied=s.dissatisfied,
                reasons=s.reasons,
                summary="seeded",
                agent_id=rnd.choice(agents).id,
            )
        )
    clock.set(datetime(2026, 7, 1, 15, 0, tzinfo=UTC))
    base = str(server.make_url("")).rstrip("/")
    page = await browser.new_page()
    await login(page, base, "maria", PASSWORD)

    await page.goto(f"{base}/surveys/{sid}/report?from=2026-04-01&to=2026-06-30&group=agent")
    pareto = page.locator("figure.pareto svg")
    # bars most first, one per reason, and the cumulative line ending at 100%
    heights = [
        float(h)
        for h in await pareto.locator("rect.bar").evaluate_all(
            "els => els.map(e => e.getAttribute('height'))"
        )
    ]
    assert len(heights) == len(given) and heights == sorted(heights, reverse=True)
    assert await pareto.locator("path.cum").count() == 1
    assert (await pareto.locator("circle.cum-dot title").last.text_content() or "").endswith(
        "100% of all reasons"
    )
    top = max(given, key=lambda r: (given[r], -REASONS.index(r)))
    assert await page.locator("#survey-reasons tbody tr").first.locator("td").nth(1).text_content() == top
    assert await page.locator("#survey-reasons tbody tr").last.locator("td").nth(4).text_content() == "100%"
    await _shots(page, "report")
    # printed: no navigation and no controls, the period and the print time instead
    await page.emulate_media(media="print")
    assert not await page.locator("header.top").is_visible()
    assert not await page.locator("form.actions-row").is_visible()
    assert await page.locator(".print-only").is_visible()
    await page.screenshot(path=str(SHOTS / "report-print.png"), full_page=True)
    pdf = await page.pdf(format="A4")
    assert pdf.startswith(b"%PDF")
    (SHOTS / "report-print.pdf").write_bytes(pdf)
    await page.emulate_media(media="screen")

    # the manager attaches the survey to an existing list, then takes it off again
    await page.goto(f"{base}/call-lists")
    await page.click("#lists >> text=June service")
    form = page.locator("#list-survey")
    await form.locator("select[name=survey_id]").select_option(label="After service")
    await form.locator("button[type=submit]").click()
    await form.locator("text=Saved: its calls ask “After service”.").wait_for()
    assert (await store.call_lists.get(lst.id)).survey_id == sid
    await _shots(page, "call-list-survey")
    await form.locator("select[name=survey_id]").select_option(value="")
    await form.locator("button[type=submit]").click()
    await form.locator("text=Saved: no survey.").wait_for()
    assert (await store.call_lists.get(lst.id)).survey_id is None
