"""The messaging report over HTTP: an SMS blast sent, delivered, failed, replied to and opted out of,
counted per blast and per month as the test tallies them; CSV equals JSON."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from crm_link.sms import OutboxRow
from crm_link.touches import TouchInput
from reports.messaging import COLUMNS
from tests.conftest import Api


async def test_blast_counts_replies_and_opt_outs_for_the_last_message_sent(
    app_store: Any, manager: Api
) -> None:
    store = app_store
    now = datetime.now(UTC)
    blast = await store.sms.create_blast(
        name="June service",
        text="Hi",
        channel="fake",
        audience={},
        created_by=None,
        send_at=None,
        cron=None,
        time_zone="UTC",
        rate_per_second=None,
        next_run_at=now,
    )
    bid = blast["id"] if isinstance(blast, dict) else blast
    b = await store.sms.blast(bid)
    run = await store.sms.claim_run(b, next_run_at=None, lease=timedelta(minutes=5))
    numbers = [f"+1555010{i:04d}" for i in range(10)]
    await store.sms.materialize(bid, run, [OutboxRow(n, "Hi", "fake", now) for n in numbers])
    msgs = await store.sms.claim("fake", now + timedelta(seconds=1), 100)
    assert len(msgs) == 10
    # 9 handed to the gateway, 1 refused; then 6 delivered and 2 failed by delivery report
    await store.sms.settle(
        [(m, "sent" if i < 9 else "failed", f"p{i}", None, None) for i, m in enumerate(msgs)]
    )
    for i in range(8):
        await store.sms.apply_report(
            "fake",
            message_id=None,
            provider_id=f"p{i}",
            status="delivered" if i < 6 else "failed",
            error_code=None,
            error_text=None,
        )
    # replies: two texts and one STOP from recipients, one text from a stranger (not counted)
    later = datetime.now(UTC) + timedelta(seconds=1)
    for k, (num, word) in enumerate(
        [(numbers[0], None), (numbers[1], None), (numbers[2], "stop"), ("+15559990000", None)]
    ):
        await store.touches.record(
            TouchInput(
                source_key=f"sms-in:test:{k}",
                kind="sms",
                direction="inbound",
                started_at=later,
                channel="fake",
                status="received",
                number=num,
                payload={"keyword": word},
            )
        )
    today = now.astimezone(ZoneInfo("America/Chicago")).date().isoformat()
    for group, key in (("blast", f"June service #{bid}"), ("month", today[:7])):
        resp = await manager.get(f"/api/v1/reports/messaging?from={today}&to={today}&group={group}")
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        row = {r["key"]: r for r in data["rows"]}[key]
        assert (row["sent"], row["delivered"], row["failed"]) == (9, 6, 3)
        assert (row["replies"], row["opted_out"]) == (3, 1)
        assert data["totals"]["sent"] == 9
        text = await (
            await manager.get(f"/api/v1/reports/messaging?from={today}&to={today}&group={group}&format=csv")
        ).text()
        lines = list(csv.reader(io.StringIO(text)))
        assert lines[0] == list(COLUMNS)
        assert lines[1:] == [[str(r[c]) for c in COLUMNS] for r in [*data["rows"], data["totals"]]]
        # tomorrow against today: nothing yet, and today's figures as the previous period's totals
        tomorrow = (date.fromisoformat(today) + timedelta(days=1)).isoformat()
        resp = await manager.get(f"/api/v1/reports/messaging?from={tomorrow}&to={tomorrow}&group={group}")
        ahead = await resp.json()
        assert ahead["totals"]["sent"] == 0
        assert (ahead["previous"]["from"], ahead["previous"]["to"]) == (today, today)
        assert ahead["previous"]["totals"] == data["totals"]


async def test_reports_are_for_managers(client: Any, rep: Api) -> None:
    assert (await rep.get("/api/v1/reports/calls")).status == 403
    assert (await rep.get("/api/v1/reports/messaging")).status == 403
    resp = await rep.get("/api/v1/agents")
    assert resp.status == 200
    assert [a["user"] for a in (await resp.json())["items"]] == ["jsmith"]
    bad = await rep.post("/api/v1/agents/me/state", json={"state": "talking"})
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "state"
    ok = await rep.post("/api/v1/agents/me/state", json={"state": "paused"})
    assert ok.status == 200 and (await ok.json())["state"] == "offline"  # paused shows once a tab is open
