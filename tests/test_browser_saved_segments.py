"""A saved segment opens back into the point-and-click builder's rows, edits and saves in place."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchboard.keys import STORE
from tests.browser import login
from tests.conftest import PASSWORD
from tests.test_browser_pages import SHOTS, WIDTHS, _watch, pages_app

pytestmark = pytest.mark.browser
__all__ = ["pages_app"]

# one condition of every kind and operator the rows offer
EVERY_OPERATOR: list[dict[str, Any]] = [
    {"field": "first_name", "op": "eq", "value": "Jane"},
    {"field": "last_name", "op": "ne", "value": "Smith"},
    {"field": "email", "op": "contains", "value": "example"},
    {"field": "owner", "op": "is_set"},
    {"field": "external_id", "op": "not_set"},
    {"field": "created_at", "op": "older_than_days", "value": 30},
    {"field": "created_at", "op": "within_days", "value": 7},
    {"field": "attributes.birthday", "op": "anniversary_within_days", "value": 14},
    {"field": "attributes.service_visits", "op": "gte", "value": 3},
    {"field": "attributes.service_visits", "op": "lte", "value": 9},
    {"field": "attributes.mileage", "op": "gt", "value": 1000},
    {"field": "attributes.mileage", "op": "lt", "value": 90000},
    {"field": "attributes.model", "op": "contains", "value": "Civic"},
    {"tag": "service"},
    {"not": {"tag": "lost"}},
    {"field": "do_not_call", "op": "eq", "value": False},
    {"field": "sms_opt_out", "op": "eq", "value": True},
    {"touches": {"kind": "call"}, "op": "any_within_days", "value": 90},
    {"touches": {"kind": "call", "direction": "inbound"}, "op": "none_within_days", "value": 30},
    {"touches": {"kind": "sms"}, "op": "count_gte", "value": 2},
    {"touches": {"kind": "email"}, "op": "count_lte", "value": 5},
]


async def test_a_saved_segment_of_every_operator_opens_as_rows_and_saves_again(
    pages_app: Any, browser: Any
) -> None:
    store = pages_app.app[STORE]
    every = await store.segments.create("Every operator", {"any": EVERY_OPERATOR})
    nested = {"all": [{"tag": "vip"}, {"any": [{"tag": "a"}, {"tag": "b"}]}]}
    await store.segments.create("Nested", nested)
    base = str(pages_app.make_url("")).rstrip("/")
    page = await browser.new_page()
    errors = _watch(page)
    await login(page, base, "mgr", PASSWORD)
    for label, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        await page.goto(base + "/call-lists")
        await page.locator("#segment-form select[name=saved] option:text('Every operator')").wait_for(
            state="attached"
        )
        await page.select_option("#segment-form select[name=saved]", label="Every operator")
        rows = page.locator("#segment-builder li.condition")
        await page.locator("#segment-result:has-text('Editing “Every operator”')").wait_for()
        assert await rows.count() == len(EVERY_OPERATOR)
        assert await page.input_value("#segment-form input[name=name]") == "Every operator"
        assert await page.input_value("#segment-builder select[name=match]") == "any"
        # the rows say the same filter back: every operator survives the trip
        await page.click("#segment-advanced summary")
        assert json.loads(await page.input_value("textarea[name=filter]")) == {"any": EVERY_OPERATOR}
        # what a person sees in the rows: the flag reads "is yes", the inbound call its own field
        sms_row = rows.nth(16)
        assert await sms_row.locator("select[name=op] option:checked").text_content() == "is yes"
        assert await sms_row.locator("input[name=value]").is_hidden()
        assert await rows.nth(18).locator("select[name=field]").input_value() == "inbound_call"
        await page.locator("#segment-builder .segment-count .count").wait_for()
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        await page.screenshot(path=str(SHOTS / f"manager_saved_segment-{label}.png"), full_page=True)
        assert scroll <= inner, f"{label}: the page scrolls sideways ({scroll} > {inner})"
    # edit a row and save: the same segment (same id) holds the edited filter
    await rows.nth(0).locator("input[name=value]").fill("Janet")
    await rows.nth(20).locator("button.remove").click()
    await page.click("#segment-form button[type=submit]")
    await page.locator("#segment-result:has-text('Saved “Every operator”')").wait_for()
    again = await store.segments.get(every.id)
    assert again.filter == {
        "any": [{"field": "first_name", "op": "eq", "value": "Janet"}, *EVERY_OPERATOR[1:20]]
    }
    assert [s.name for s in await store.segments.list()] == ["Every operator", "Nested"]
    # and the list form's choice still names it once
    options = await page.eval_on_selector_all(
        "#list-form select[name=segment] option", "os => os.map(o => o.textContent)"
    )
    assert options.count("Every operator") == 1
    # "Save as new" under another name keeps the first
    await page.fill("#segment-form input[name=name]", "Every operator, copy")
    await page.click("#segment-save-new")
    await page.locator("#segment-result:has-text('Saved “Every operator, copy”')").wait_for()
    assert (await store.segments.get("Every operator, copy")).filter == again.filter
    assert (await store.segments.get(every.id)).name == "Every operator"
    # a filter the rows cannot say opens as JSON under Advanced, still editable and savable
    await page.select_option("#segment-form select[name=saved]", label="Nested")
    await page.locator("#segment-result:has-text('edit it as JSON under Advanced')").wait_for()
    assert json.loads(await page.input_value("textarea[name=filter]")) == nested
    assert await page.locator("#segment-advanced[open]").count() == 1
    await page.fill("textarea[name=filter]", '{"tag": "vip"}')
    await page.click("#segment-form button[type=submit]")
    await page.locator("#segment-result:has-text('Saved “Nested”')").wait_for()
    assert (await store.segments.get("Nested")).filter == {"tag": "vip"}
    assert errors == [], errors


async def test_a_segment_saved_again_over_http(client: Any, manager: Any, rep: Any) -> None:
    """PUT replaces name and filter; a bad filter, a taken name or a rep are refused, naming why."""
    first = await (await manager.post("/api/v1/segments", json={"name": "A", "filter": {"tag": "a"}})).json()
    await manager.post("/api/v1/segments", json={"name": "B", "filter": {"tag": "b"}})
    url = f"/api/v1/segments/{first['id']}"

    async def put(who: Any, path: str, body: Any) -> Any:
        return await who.client.put(path, json=body, headers=who._h())

    resp = await put(manager, url, {"name": "A2", "filter": {"tag": "z"}})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["name"] == "A2"
    taken = await put(manager, url, {"name": "B", "filter": {"tag": "a"}})
    assert taken.status == 409 and (await taken.json())["error"]["field"] == "name"
    bad = await put(manager, url, {"name": "A2", "filter": {"field": "nope", "op": "eq", "value": 1}})
    assert bad.status == 400 and (await bad.json())["error"]["field"].startswith("filter")
    assert (await put(rep, url, {"name": "A3", "filter": {"tag": "a"}})).status == 403
    missing = await put(manager, "/api/v1/segments/9999", {"name": "C", "filter": {"tag": "a"}})
    assert missing.status == 404
    items = (await (await manager.get("/api/v1/segments")).json())["items"]
    assert [(s["name"], s["filter"]) for s in items] == [("A2", {"tag": "z"}), ("B", {"tag": "b"})]
