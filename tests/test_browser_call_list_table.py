"""The call lists' table at a desk (1280 px) and a phone (390 px): short words such as the mode
("preview", "progressive"), the state and the actions are never broken inside; the page never scrolls sideways."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.keys import STORE
from tests.browser import login
from tests.conftest import PASSWORD
from tests.test_browser_pages import SHOTS, WIDTHS, _watch, pages_app  # noqa: F401

pytestmark = pytest.mark.browser

# each cell's text as the lines the browser laid it out in (a word broken inside shows as two)
LINES = """(sel) => [...document.querySelectorAll(sel)].map((td) => {
  const r = document.createRange(); r.selectNodeContents(td);
  return [td.textContent, new Set([...r.getClientRects()].map((x) => Math.round(x.top))).size];
})"""


async def test_the_call_lists_table_keeps_mode_and_state_words_whole(
    pages_app: Any,  # noqa: F811
    browser: Any,
) -> None:
    store = pages_app.app[STORE]
    mgr = await store.users.by_username("mgr")
    token = await store.users.create_token(mgr.id, "test")
    client_headers = {"Authorization": f"Bearer {token}"}
    base = str(pages_app.make_url("")).rstrip("/")
    page = await browser.new_page()
    errors = _watch(page)
    for name, mode in (
        ("After-sale 4 days, Chicago north showroom customers", "preview"),
        ("Lapsed loyal service customers (three visits or more)", "progressive"),
    ):
        resp = await page.request.post(
            base + "/api/v1/call-lists",
            data={"name": name, "mode": mode, "contact_ids": [pages_app.jane.id]},
            headers=client_headers,
        )
        assert resp.status == 201, await resp.text()
    await login(page, base, "mgr", PASSWORD)
    for label, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        await page.goto(base + "/call-lists")
        await page.locator("#lists tbody tr").nth(1).wait_for()
        cells = await page.evaluate(LINES, "#lists td.mode, #lists td.state, #lists td.actions button")
        await page.locator("#lists").screenshot(path=str(SHOTS / f"manager_call_lists_table-{label}.png"))
        assert sorted(t for t, _ in cells) == [
            "draft",
            "draft",
            "preview",
            "progressive",
            "start",
            "start",
            "stop",
            "stop",
        ], cells
        assert all(lines == 1 for _, lines in cells), f"{label}: a word broken inside: {cells}"
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"{label}: the page scrolls sideways ({scroll} > {inner})"
    assert errors == [], errors
