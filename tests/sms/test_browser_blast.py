"""Headless Chromium: marketing composes a blast with a merge code, sees the preview and the segment
count, schedules it a few seconds ahead, and watches its progress move to done."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from campaigns.sms.kannel_standin import KannelStandIn
from crm_link.contacts import validate_contact
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.settings import SmsChannelSettings
from tests.browser import login
from tests.conftest import PASSWORD, free_port


@pytest.mark.browser
async def test_marketing_schedules_a_blast_and_watches_it(
    aiohttp_server: Any, settings: Any, browser: Any
) -> None:
    async with KannelStandIn() as kannel:
        port = free_port()
        settings.server.public_url = f"http://127.0.0.1:{port}"
        settings.sms.quiet_start = settings.sms.quiet_end = "00:00"
        settings.sms.channels["main"] = SmsChannelSettings(
            name="main",
            type="kannel",
            rate_per_second=4,  # slow enough to watch the progress bar move
            options={
                "sendsms_url": kannel.sendsms_url,
                "username": "tester",
                "password": "secret",
                "secret": "chan-secret",
            },
        )
        server = await aiohttp_server(create_app(settings), port=port)
        store = server.app[STORE]
        await store.users.add("kim", role="marketing", password=PASSWORD, display_name="Kim Park")
        first = None
        for i in range(16):
            c = await store.contacts.create(
                validate_contact(
                    {
                        "first_name": f"Pat{i}",
                        "phones": [f"+1212736{5100 + i}"],
                        "tags": ["service"],
                        "time_zone": "UTC",
                    },
                    region="US",
                )
            )
            first = first or c
        assert first is not None
        base = str(server.make_url("")).rstrip("/")
        page = await browser.new_page()
        await login(page, base, "kim", PASSWORD)
        await page.goto(base + "/sms/blasts")
        await page.fill("input[name=name]", "Saturday service special")
        await page.fill(
            "textarea[name=text]",
            "Service special this Saturday, {{ contact.first_name }}! Reply STOP to opt out.",
        )
        await page.fill("input[name=preview_search]", "Pat0")
        await page.click(f"#preview-matches button[data-contact-id='{first.id}']")
        await page.wait_for_selector("#preview .summary:text('Service special this Saturday, Pat0!')")
        assert "GSM7 · 1 segment" in (await page.text_content("#preview .segments") or "")
        # one curly quote forces UCS-2: the preview says which character and how to avoid it
        await page.fill("textarea[name=text]", "It’s our service special, {{ contact.first_name }}!")
        await page.wait_for_selector("#preview .badge.warn:has-text('forces UCS-2')")
        assert "UCS2" in (await page.text_content("#preview .segments") or "")
        await page.fill("textarea[name=text]", "Service special this Saturday, {{ contact.first_name }}!")
        await page.wait_for_selector("#preview .summary:text('Service special this Saturday, Pat0!')")
        await page.fill("input[name=tag]", "service")
        zone = ZoneInfo(settings.server.time_zone)  # the sender's zone reads the time
        send_at = datetime.now(zone) + timedelta(seconds=4)
        await page.fill("input[name=send_at]", send_at.strftime("%Y-%m-%dT%H:%M:%S"))
        await page.click("#blast-form button[type=submit]")
        row = page.locator("#blasts tr", has_text="Saturday service special")
        await row.locator(".state:text('scheduled')").wait_for()
        assert not kannel.received  # nothing before send_at
        # progress moves: some sent, not all; then all of them
        seen: set[int] = set()
        async with asyncio.timeout(30):
            while True:
                text = await row.locator(".progress-text").text_content() or ""
                m = re.match(r"(\d+)/(\d+)", text)
                assert m is not None, text
                done, total = int(m.group(1)), int(m.group(2))
                seen.add(done)
                if done == total == 16:
                    break
                await page.wait_for_timeout(200)
        assert any(0 < n < 16 for n in seen), seen
        await row.locator(".state:text('done')").wait_for(timeout=10_000)
        assert sorted(q["text"] for q in kannel.received) == sorted(
            f"Service special this Saturday, Pat{i}!" for i in range(16)
        )
        assert (
            min(float(q["at"]) for q in kannel.received) >= send_at.timestamp() - 1
            if "at" in kannel.received[0]
            else True
        )
