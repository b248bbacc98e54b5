"""Before and while a blast goes out: who it reaches and who it skips (dry run), a misspelt merge code
named with the closest known one, and a blast held by quiet hours saying until when (API and CLI)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from crm_link.contacts import validate_contact
from switchboard.app import create_app
from switchboard.keys import SMS, STORE
from switchboard.messaging import _segment_ids, merge_code_check, sms_render
from switchboard.web.sms import SmsRuntime
from templates.context import unknown_codes
from templates.render import Renderer
from tests.conftest import REPO, make_api
from tests.sms.helpers import RecordingChannel, VirtualClock, blast_service, blast_when, channel_worker

NOW = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)  # 10:00 in Chicago, 06:00 in Honolulu


@pytest.fixture
async def sms_client(aiohttp_client: Any, settings: Any, tmp_path: Path) -> Any:
    settings.store.url = f"sqlite:///{tmp_path / 'reach.db'}"
    clock = VirtualClock(NOW)
    channel = RecordingChannel("main", clock)
    renderer = Renderer()

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = app[STORE]
        worker = channel_worker(store, channel, clock, rate_per_second=100, idle_poll=0.05)
        blasts = blast_service(
            store, clock, render=sms_render(renderer, {"name": "Lakeside"}, clock.now),
            segment_ids=_segment_ids(store), check_codes=merge_code_check(renderer),
        )  # fmt: skip
        app[SMS] = SmsRuntime(blasts, {"main": worker})
        task = asyncio.create_task(worker.run())
        yield
        worker.stop()
        await task

    client = await aiohttp_client(create_app(settings, contexts=[ctx], clock=clock.now))
    client.channel = channel
    client.db_path = tmp_path / "reach.db"
    return client


async def _people(store: Any) -> None:
    people = [
        ("Ann", ["+12127365100"], "America/Chicago", False),
        ("Ben", ["+12127365101"], "Pacific/Honolulu", False),
        ("Cat", ["+12127365102"], "Pacific/Honolulu", False),
        ("Dan", ["+442071838750"], "Europe/London", False),  # a landline
        ("Eve", ["+15555550100"], "America/Chicago", False),  # not a real number
        ("Fay", ["+12127365105"], "America/Chicago", True),  # opted out
        ("Gus", ["+12127365100"], "America/Chicago", False),  # Ann's number again
    ]
    for name, phones, zone, opt_out in people:
        data: dict[str, object] = {
            "first_name": name,
            "last_name": "Rivera",
            "phones": phones,
            "tags": ["service"],
        }
        data |= {"time_zone": zone, "sms_opt_out": opt_out}
        await store.contacts.create(validate_contact(data, region="US"))


async def test_dry_run_counts_and_skip_reasons_before_scheduling(sms_client: Any) -> None:
    mkt = await make_api(sms_client, "kim", "marketing")
    store = sms_client.server.app[STORE]
    await _people(store)
    seg = await store.segments.create("Riveras in service", {"tag": "service"})
    for audience in ({"tag": "service"}, {"segment": seg.id}):
        resp = await mkt.post("/api/v1/sms/blasts/dry-run", json={"audience": audience})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["audience"] == 7 and body["recipients"] == 3
        assert {s["reason"]: s["count"] for s in body["skipped"]} == {
            "landline": 1,
            "invalid number": 1,
            "opted out of SMS": 1,
            "duplicate number": 1,
        }
        # Ben and Cat are in Honolulu at 06:00: quiet hours hold them until 08:00 there
        assert body["held"] == 2 and body["held_until"] == "2026-11-23T18:00:00+00:00"
    # nothing was stored
    assert (await (await mkt.get("/api/v1/sms/blasts")).json())["items"] == []
    assert (await store.db.fetchone("SELECT count(*) FROM sms_outbox"))[0] == 0
    # sent later that day in the sender's zone (Chicago 14:00 = Honolulu 10:00): nobody is held
    body = await (
        await mkt.post("/api/v1/sms/blasts/dry-run", json={"audience": {"tag": "service"}, "send_at": "2026-11-23T14:00"})
    ).json()  # fmt: skip
    assert body["held"] == 0 and body["held_until"] is None and body["recipients"] == 3
    # bad input names the field; a rep may not ask
    resp = await mkt.post("/api/v1/sms/blasts/dry-run", json={"audience": {"segment": 999}})
    assert resp.status == 404 or (await resp.json())["error"]["field"].startswith("segment")
    resp = await mkt.post(
        "/api/v1/sms/blasts/dry-run", json={"audience": {"tag": "service"}, "send_at": "soon"}
    )
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "send_at"
    resp = await mkt.post("/api/v1/sms/blasts/dry-run", json={})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "audience"
    rep = await make_api(sms_client, "jsmith", "rep")
    assert (await rep.post("/api/v1/sms/blasts/dry-run", json={"audience": {"tag": "service"}})).status == 403


async def test_misspelt_merge_code_is_named_in_the_preview_and_on_submit(sms_client: Any) -> None:
    mkt = await make_api(sms_client, "kim", "marketing")
    store = sms_client.server.app[STORE]
    await _people(store)
    (ann,) = [c for c in (await store.contacts.search(q="Ann")).items]
    text = "Hi {{ contact.frist_name }}, see you Saturday"
    for body in ({"text": text}, {"text": text, "contact_id": ann.id}):
        resp = await mkt.post("/api/v1/sms/preview", json=body)
        assert resp.status == 400
        err = (await resp.json())["error"]
        assert err["field"] == "text" and err["code"] == "unknown_merge_code"
        assert err["message"] == "unknown merge code contact.frist_name (did you mean contact.first_name?)"
    resp = await mkt.post(
        "/api/v1/sms/blasts",
        json={"name": "n", "text": text, "channel": "main", "audience": {"tag": "service"}},
    )
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "unknown_merge_code"
    # the right spelling and a free-form attribute pass
    ok = "Hi {{ contact.first_name }} about your {{ contact.attributes.vehicle | default('car') }}"
    resp = await mkt.post("/api/v1/sms/preview", json={"text": ok, "contact_id": ann.id})
    assert resp.status == 200 and (await resp.json())["text"] == "Hi Ann about your car"


async def test_a_blast_whose_last_page_misses_a_merge_code_is_refused_and_nothing_is_sent(
    sms_client: Any,
) -> None:
    mkt = await make_api(sms_client, "kim", "marketing")
    store = sms_client.server.app[STORE]
    sms_client.server.app[SMS].blasts.page_size = 2  # four pages; the last one fails
    for i, vehicle in enumerate(["Civic"] * 7 + [None]):
        fields: dict[str, Any] = {"first_name": f"P{i}", "phones": [f"+1212736510{i}"], "tags": ["service"]}
        if vehicle is not None:
            fields["attributes"] = {"vehicle": vehicle}
        else:
            fields["last_name"] = "Novehicle"
        await store.contacts.create(validate_contact(fields, region="US"))
    resp = await mkt.post(
        "/api/v1/sms/blasts",
        json={"name": "n", "text": "Hi {{ contact.first_name }}, your {{ contact.attributes.vehicle }}",
              "channel": "main", "audience": {"tag": "service"}},
    )  # fmt: skip
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["field"] == "text" and err["code"] == "missing_merge_code"
    assert "P7 Novehicle; 1 recipients" in err["message"], err["message"]
    assert await store.sms.blasts() == []
    assert await store.db.fetchall("SELECT id FROM sms_outbox") == []
    await asyncio.sleep(0.3)  # the channel's worker polls every 0.05 s
    assert sms_client.channel.sent == []


def test_unknown_codes_suggest_the_closest() -> None:
    codes = [
        "contact.frist_name",
        "dealer.nmae",
        "contact.first_name",
        "contact.attributes.vin",
        "now",
        "xyz",
    ]
    assert unknown_codes(codes) == [
        ("contact.frist_name", "contact.first_name"),
        ("dealer.nmae", "dealer.name"),
        ("xyz", None),
    ]


async def test_blast_held_by_quiet_hours_says_until_when(sms_client: Any) -> None:
    mkt = await make_api(sms_client, "kim", "marketing")
    store = sms_client.server.app[STORE]
    await _people(store)
    resp = await mkt.post(
        "/api/v1/sms/blasts",
        json={"name": "Sat", "text": "Hi {{ contact.first_name }}", "channel": "main", "audience": {"tag": "service"}},
    )  # fmt: skip
    assert resp.status == 201, await resp.text()
    blast = await resp.json()
    body = await blast_when(mkt, blast["id"], lambda b: b["counts"]["sent"] == 1)
    assert body["state"] == "running" and body["counts"]["queued"] == 2
    assert body["held"] == 2 and body["held_reason"] == "quiet hours"
    assert body["held_until"] == "2026-11-23T18:00:00+00:00"
    assert [m.text for _, m in sms_client.channel.sent] == ["Hi Ann"]
    # the CLI says the same, in the blast's zone
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env |= {"SWITCHBOARD_STORE_URL": f"sqlite:///{sms_client.db_path}", "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard", "sms", "show", str(blast["id"]), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert "2 held by quiet hours until Mon 23 Nov 2026 12:00 America/Chicago" in out.decode(), out.decode()
