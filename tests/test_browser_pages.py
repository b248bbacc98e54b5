"""Every role's main pages in headless Chromium at a desk (1280 px) and a phone (390 px): no sideways
scroll, no console errors, the app's own error pages; screenshots land in test-screenshots/ (not in git)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from crm_link.contacts import validate_contact
from crm_link.touches import TouchInput
from switchboard.app import create_app
from switchboard.keys import SETTINGS, STORE
from switchboard.settings import SmsChannelSettings
from tests.browser import login
from tests.conftest import PASSWORD, REPO

pytestmark = pytest.mark.browser
SHOTS = Path(os.environ.get("SB_SHOTS", REPO / "test-screenshots"))
WIDTHS = {"desk": (1280, 800), "phone": (390, 844)}


async def _walk(page: Any, base: str, who: str, paths: list[str], errors: list[str]) -> None:
    """Open each page at both widths: no horizontal scroll, a screenshot of each."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for path in paths:
        for label, (w, h) in WIDTHS.items():
            await page.set_viewport_size({"width": w, "height": h})
            await page.goto(base + path)
            await page.wait_for_load_state("networkidle")
            scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            name = f"{who}{path.replace('/', '_').replace('?', '_') or '_home'}-{label}"
            await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
            assert scroll <= inner, f"{name}: the page scrolls sideways ({scroll} > {inner})"
    assert errors == [], errors


def _watch(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


@pytest.fixture
async def pages_app(aiohttp_server: Any, settings: Any) -> Any:
    settings.sms.channels["main"] = SmsChannelSettings(
        name="main",
        type="kannel",
        options={
            "sendsms_url": "http://127.0.0.1:9/cgi-bin/sendsms",
            "username": "u",
            "password": "p",
            "secret": "s",
        },
    )
    server = await aiohttp_server(create_app(settings))
    store = server.app[STORE]
    await store.users.add(
        "jsmith", role="rep", password=PASSWORD, display_name="John Smith", extension="1001"
    )
    await store.users.add("mgr", role="manager", password=PASSWORD, display_name="Maria Gomez")
    await store.users.add("kim", role="marketing", password=PASSWORD, display_name="Kim Park")
    await store.users.add("root", role="admin", password=PASSWORD, display_name="Ada Admin")
    jane = await store.contacts.create(
        validate_contact(
            {
                "first_name": "Jane",
                "last_name": "Doe-Worthington",
                "email": "jane.doe-worthington@example-motors-customers.com",
                "phones": ["+13125550142", "+13125550199"],
                "owner": "jsmith",
                "tags": ["service", "after-sale"],
                "attributes": {"vehicle": "2024 Honda Civic EX-L Hatchback", "vin": "1HGCM82633A004352"},
            },
            region="US",
        )
    )
    await store.touches.record(
        TouchInput(
            source_key="ami:1700000000.1",
            kind="call",
            direction="inbound",
            started_at=server.app[STORE].db.now(),
            contact_id=jane.id,
            channel="asterisk",
            status="answered",
            number="+13125550142",
            duration_s=20,
            summary="Answered by John Smith, talked 12 s",
        )
    )
    await store.sms_templates.save(
        "Service reminder", "Hi {{ contact.first_name }}, your service is due.", user_id=None
    )
    server.jane = jane
    return server


async def test_rep_and_manager_pages_fit_a_desk_and_a_phone(pages_app: Any, browser: Any) -> None:
    base = str(pages_app.make_url("")).rstrip("/")
    jane = pages_app.jane
    page = await browser.new_page()
    errors = _watch(page)
    await login(page, base, "jsmith", PASSWORD)
    await _walk(
        page,
        base,
        "rep",
        ["/", "/contacts?q=Jane", f"/contacts/{jane.id}", "/call-lists", "/recordings"],
        errors,
    )
    # the pop's disposition list is the configured one, the same as the call lists'
    await page.goto(base + "/")
    options = await page.eval_on_selector(
        "#pop-template",
        "t => [...t.content.querySelectorAll('select[name=disposition] option')].map(o => o.textContent)",
    )
    assert options[1:] == list(pages_app.app[SETTINGS].dialer.dispositions)
    # the contact page: numbers as people write them, tel: links, Call and Text on each number
    await page.goto(f"{base}/contacts/{jane.id}")
    assert await page.text_content("#contact-card .phone-row .num") == "(312) 555-0142"
    assert await page.get_attribute("#contact-card .phone-row .num", "href") == "tel:+13125550142"
    # no desk phone to ring here (no PBX): Call is a tel: link on each number
    assert await page.locator("a.call-tel").count() == 2
    assert await page.get_attribute("a.call-tel", "href") == "tel:+13125550142"
    # a call row says one thing
    row = await page.text_content("#history li.call")
    assert "talked 12 s" in row and "answered" not in row and "20 s" not in row
    # a saved text fills the message and the preview shows it merged for Jane
    await page.select_option("#sms-send select[name=template]", label="Service reminder")
    await page.wait_for_selector("#sms-preview:has-text('Hi Jane, your service is due.')")
    # the app's own error pages, not JSON or "404: Not Found"
    resp = await page.goto(base + "/contacts/999999")
    assert resp.status == 404
    assert "Page not found" in await page.text_content("#error-page h1")
    resp = await page.goto(base + "/admin")
    assert resp.status == 403 and "Not yours to open" in await page.text_content("#error-page h1")
    resp = await page.goto(base + "/no/such/page")
    assert resp.status == 404 and await page.locator("#error-page").count() == 1
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=str(SHOTS / "rep_404-phone.png"), full_page=True)
    errors.clear()  # the error responses themselves are logged by the browser as failed loads
    # the header leaves the phone's screen to the page
    await page.goto(base + "/")
    height = await page.evaluate("document.querySelector('header.top').getBoundingClientRect().height")
    assert height <= 90, height

    page = await browser.new_page()
    errors = _watch(page)
    await login(page, base, "mgr", PASSWORD)
    await _walk(
        page, base, "manager", ["/call-lists", "/recordings", "/contacts?q=555", "/email/templates"], errors
    )


async def test_marketing_and_admin_pages_fit_a_desk_and_a_phone(pages_app: Any, browser: Any) -> None:
    base = str(pages_app.make_url("")).rstrip("/")
    page = await browser.new_page()
    errors = _watch(page)
    await login(page, base, "kim", PASSWORD)
    await _walk(page, base, "marketing", ["/sms/blasts", "/contacts", "/email/templates"], errors)
    page = await browser.new_page()
    errors = _watch(page)
    await login(page, base, "root", PASSWORD)
    await _walk(page, base, "admin", ["/admin", "/", f"/contacts/{pages_app.jane.id}"], errors)
    # a page request never gets JSON, an API request always does
    resp = await page.request.get(base + "/api/v1/contacts/999999")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await page.request.get(base + "/favicon.ico")
    assert resp.status == 200 and resp.headers["content-type"].startswith("image/svg")


async def test_marketing_sees_reach_misspelt_codes_and_held_blasts(pages_app: Any, browser: Any) -> None:
    """Before scheduling: the segment's reach and skips, a sample customer picked by name, a misspelt
    merge code named; after: a blast held by quiet hours says until when."""
    from datetime import timedelta

    from crm_link.sms import OutboxRow

    store = pages_app.app[STORE]
    await store.contacts.create(
        validate_contact(
            {"first_name": "Lee", "last_name": "Landline", "phones": ["+442071838750"], "tags": ["service"]},
            region="US",
        )
    )
    await store.segments.create("Service customers", {"tag": "service"})
    held_until = store.db.now() + timedelta(days=1)
    blast_id = await store.sms.create_blast(
        name="Overnight reminder", text="Hi", channel="main", audience={"tag": "service"},
        created_by=None, send_at=None, cron=None, time_zone="UTC", rate_per_second=None,
        next_run_at=None, claim_lease=timedelta(minutes=10),
    )  # fmt: skip
    row = OutboxRow(
        to_e164="+13125550142", text="Hi", channel="main", not_before=held_until, reason="quiet hours"
    )
    await store.sms.materialize(blast_id, 1, [row])
    base = str(pages_app.make_url("")).rstrip("/")
    page = await browser.new_page()
    errors = _watch(page)
    await login(page, base, "kim", PASSWORD)
    for label, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        await page.goto(base + "/sms/blasts")
        await page.select_option("select[name=segment]", label="Service customers")
        reach = page.locator("#audience-count")
        await reach.locator(".recipients:text('1 of 2 customers will get it')").wait_for()
        assert "1 skipped: landline" in (await reach.text_content() or "")
        await page.fill("textarea[name=text]", "Hi {{ contact.frist_name }}, your service is due")
        await page.wait_for_selector(
            "#preview .merge-code:text('unknown merge code contact.frist_name (did you mean contact.first_name?)')"
        )
        await page.fill("textarea[name=text]", "Hi {{ contact.first_name }}, your service is due")
        await page.fill("input[name=preview_search]", "Jane")
        await page.click(f"#preview-matches button[data-contact-id='{pages_app.jane.id}']")
        await page.wait_for_selector("#preview .summary:text('Hi Jane, your service is due')")
        held = page.locator(f"#blasts tr[data-blast-id='{blast_id}'] .held")
        await held.wait_for()
        assert (await held.text_content() or "").startswith("1 held by quiet hours until ")
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        await page.screenshot(path=str(SHOTS / f"marketing_blast_reach-{label}.png"), full_page=True)
        assert scroll <= inner, f"{label}: the page scrolls sideways ({scroll} > {inner})"
    # the misspelt text's previews answer 400 (as the API should), which Chromium logs; nothing else
    flagged = [e for e in errors if "status of 400" in e]
    assert 1 <= len(flagged) <= 2 * len(WIDTHS) and len(errors) == len(flagged), errors


async def test_manager_builds_a_segment_by_pointing_and_clicking(pages_app: Any, browser: Any) -> None:
    """Conditions as rows with the live count; all/any; the JSON under Advanced; saved, it joins the
    list form's segments."""
    from datetime import timedelta

    store = pages_app.app[STORE]
    today = store.db.now().date()
    for i, (days_ago, visits) in enumerate([(400, 4), (10, 5), (900, 1)]):
        last_service = (today - timedelta(days=days_ago)).isoformat()
        attrs = {"last_service_date": last_service, "service_visits": visits}
        data = {"first_name": f"Sam{i}", "phones": [f"+1212736{5200 + i}"], "attributes": attrs}
        await store.contacts.create(validate_contact(data, region="US"))
    base = str(pages_app.make_url("")).rstrip("/")
    page = await browser.new_page()
    errors = _watch(page)
    await login(page, base, "mgr", PASSWORD)
    for label, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        await page.goto(base + "/call-lists")
        count = page.locator("#segment-builder .segment-count .count")
        # the starting rows: last service more than 180 days ago and at least 3 visits -> Sam0 only
        await page.locator("#segment-builder .count:text('1 customer today')").wait_for()
        rows = page.locator("#segment-builder li.condition")
        assert await rows.count() == 2
        # any of them: Sam0, Sam1 (5 visits), Sam2 (old service)
        await page.select_option("#segment-builder select[name=match]", "any")
        await page.locator("#segment-builder .count:text('3 customers today')").wait_for()
        # drop the visits row, add "Tag is service" -> Sam0, Sam2, Jane
        await rows.nth(1).locator("button.remove").click()
        await page.click("#segment-builder .add-condition")
        new = rows.nth(1)
        await new.locator("select[name=field]").select_option("tag")
        await new.locator("select[name=op]").select_option(label="is")
        await new.locator("input[name=value]").fill("service")
        await page.locator("#segment-builder .count:text('3 customers today')").wait_for()
        # a row without its value says so instead of counting
        await page.click("#segment-builder .add-condition")
        await page.locator("#segment-builder .segment-count .error:text('Tag: give a value')").wait_for()
        await rows.nth(2).locator("button.remove").click()
        await page.locator("#segment-builder .count:text('3 customers today')").wait_for()
        # the JSON under Advanced is the same filter, and editing it counts that instead
        await page.click("#segment-advanced summary")
        import json

        shown = json.loads(await page.input_value("textarea[name=filter]"))
        assert shown == {
            "any": [
                {"field": "attributes.last_service_date", "op": "older_than_days", "value": 180},
                {"tag": "service"},
            ]
        }
        await page.fill("textarea[name=filter]", '{"field": "first_name", "op": "eq", "value": "Sam1"}')
        await page.locator("#segment-builder .count:text('1 customer today')").wait_for()
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        await page.locator("#segment-form").screenshot(
            path=str(SHOTS / f"manager_segment_builder-{label}.png")
        )
        assert scroll <= inner, f"{label}: the page scrolls sideways ({scroll} > {inner})"
        assert await count.count() == 1
    # saved from the rows, it is the list form's to choose
    await page.goto(base + "/call-lists")
    await page.locator("#segment-builder .count:text('1 customer today')").wait_for()
    await page.fill("#segment-form input[name=name]", "Lapsed loyal service")
    await page.click("#segment-form button[type=submit]")
    await page.locator(
        "#segment-result:has-text('Saved “Lapsed loyal service”: 1 customers today.')"
    ).wait_for()
    await page.locator("#list-form select[name=segment] option:text('Lapsed loyal service')").wait_for(
        state="attached"
    )
    saved = await store.segments.get("Lapsed loyal service")
    assert saved.filter == {
        "all": [
            {"field": "attributes.last_service_date", "op": "older_than_days", "value": 180},
            {"field": "attributes.service_visits", "op": "gte", "value": 3},
        ]
    }
    assert errors == [], errors


async def test_admin_exports_contacts_from_the_contacts_page(pages_app: Any, browser: Any) -> None:
    """The export buttons download CSVs (contacts with the extension kept, the history's calls)."""
    import csv
    import io

    base = str(pages_app.make_url("")).rstrip("/")
    page = await browser.new_page(accept_downloads=True)
    errors = _watch(page)
    await login(page, base, "root", PASSWORD)
    for label, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        await page.goto(base + "/contacts")
        scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        await page.screenshot(path=str(SHOTS / f"admin_contacts_export-{label}.png"), full_page=True)
        assert scroll <= inner, f"{label}: the page scrolls sideways ({scroll} > {inner})"
    async with page.expect_download() as info:
        await page.click("#export-contacts")
    download = await info.value
    assert download.suggested_filename.startswith("contacts-")
    rows = list(csv.DictReader(io.StringIO(Path(await download.path()).read_text("utf-8-sig"))))
    assert [r["last_name"] for r in rows] == ["Doe-Worthington"]
    assert rows[0]["phones"] == "+13125550142; +13125550199"
    async with page.expect_download() as info:
        await page.click("#export-history")
    rows = list(csv.DictReader(io.StringIO(Path(await (await info.value).path()).read_text("utf-8-sig"))))
    assert [(r["kind"], r["status"], r["summary"]) for r in rows] == [
        ("call", "answered", "Answered by John Smith, talked 12 s")
    ]
    assert errors == [], errors


async def test_my_day_shows_a_missed_call_live_without_a_reload(pages_app: Any, browser: Any) -> None:
    """A rep has My Day open; their customer's call is missed; the item appears in place, no reload."""
    import asyncio
    from datetime import timedelta

    from cti.directory import InterfaceDirectory
    from cti.events import CallEnded, CallRinging
    from cti.service import CallService
    from switchboard.keys import HUB

    base = str(pages_app.make_url("")).rstrip("/")
    app = pages_app.app
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors = _watch(page)
    await login(page, base, "jsmith", PASSWORD)
    rep = await app[STORE].users.by_username("jsmith")
    assert rep is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while app[HUB].tabs(rep.id) < 2:  # the pop socket and My Day's own are both open
        assert loop.time() < deadline, "My Day never connected to /ws/agent"
        await asyncio.sleep(0.05)
    assert await page.locator("#day ul[data-kind=missed_call] li").count() == 0
    await page.evaluate("window.__sameDocument = true")

    now = app[STORE].db.now()
    calls = CallService(app[STORE], app[HUB], InterfaceDirectory(app[STORE], {}), source="asterisk")
    await calls.handle(CallRinging("live1", "inbound", "+13125550142", "7000", "PJSIP/1009", "sales", now))
    await calls.handle(
        CallEnded(
            call_id="live1",
            direction="inbound",
            from_number="+13125550142",
            to_number="7000",
            answered=False,
            answered_by=None,
            queue="sales",
            started_at=now,
            answered_at=None,
            ended_at=now + timedelta(seconds=20),
            duration_s=20.0,
            talk_s=None,
            hangup_cause=16,
            hangup_cause_text="Normal Clearing",
            transferred_to=None,
        )
    )
    item = page.locator("#day ul[data-kind=missed_call] li.followup")
    await item.first.wait_for(timeout=10000)
    assert "Doe-Worthington" in await item.first.inner_text()
    assert await page.evaluate("window.__sameDocument === true")  # re-rendered in place, not reloaded
    # its actions work on the re-rendered item (delegated handlers)
    await item.first.locator(".fu-done").click()
    await item.first.wait_for(state="detached", timeout=10000)
    assert errors == []
    await page.close()
