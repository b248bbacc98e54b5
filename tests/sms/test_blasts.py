"""The blast engine on a real store: scheduling, quiet hours, opt-outs, rate, exactly-once across a crash."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from campaigns.sms.blasts import BlastService, BlastSpec
from campaigns.sms.channel import ChannelError, DeliveryReport, InboundSms
from campaigns.sms.inbound import SmsEvents, keyword
from campaigns.sms.quiet import quiet_until
from campaigns.sms.sender import ChannelWorker
from crm_link.contacts import validate_contact
from crm_link.errors import ValidationError
from crm_link.store import Store
from tests.sms.helpers import T0, RecordingChannel, VirtualClock, blast_service, channel_worker


async def _people(store: Store, n: int, **overrides: Any) -> list[int]:
    zones = ["America/Chicago", "America/Los_Angeles", "America/New_York", "Pacific/Honolulu"]
    ids = []
    async with store.db.transaction() as tx:
        for i in range(n):
            data = {
                "first_name": f"P{i}",
                "phones": [f"+1212555{i:04d}"],
                "time_zone": zones[i % 4],
                "tags": ["service"],
            } | overrides
            if i % 50 == 7:
                data["sms_opt_out"] = True
            ids.append(await store.contacts.insert_in(tx, validate_contact(data, region="US")))
    return ids


async def _drain(worker: ChannelWorker, service: BlastService, clock: VirtualClock, until: timedelta) -> None:
    end = clock.now() + until
    while clock.now() < end:
        await service.run_due()
        if not await worker.step():
            clock.advance(60)


def test_quiet_hours_wrap_midnight() -> None:
    assert quiet_until(T0, "America/Chicago", "21:00", "08:00") is None  # 09:00 local
    held = quiet_until(T0, "America/Los_Angeles", "21:00", "08:00")  # 07:00 local
    assert held is not None and held.isoformat() == "2026-11-23T08:00:00-08:00"
    late = quiet_until(T0 + timedelta(hours=13), "America/Chicago", "21:00", "08:00")  # 22:00 local
    assert late is not None and late.isoformat() == "2026-11-24T08:00:00-06:00"


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("STOP", "stop"),
        (" stop. ", "stop"),
        ("Unsubscribe", "unsubscribe"),
        ("start", "start"),
        ("HELP", "help"),
        ("stop calling me", None),
    ],
)
def test_keywords(text: str, word: str | None) -> None:
    assert keyword(text) == ({"unsubscribe": "stop"}.get(word, word) if word else None)


async def test_scheduled_blast_of_2000(store: Store) -> None:
    clock = VirtualClock(T0)
    ids = await _people(store, 2000)
    service = blast_service(store, clock)
    channel = RecordingChannel("main", clock)
    worker = channel_worker(store, channel, clock, rate_per_second=50)
    blast = await service.create(
        BlastSpec(
            name="Saturday special",
            text="Service special this Saturday, {{ contact.first_name }}!",
            channel="main",
            audience={"tag": "service"},
            send_at=T0 + timedelta(hours=1),
        ),
        created_by=None,
    )
    assert blast["state"] == "scheduled"
    await _drain(worker, service, clock, timedelta(minutes=59))
    assert channel.sent == []  # nothing before send_at
    await _drain(worker, service, clock, timedelta(hours=3))
    sent_at = [t for t, _ in channel.sent]
    assert min(sent_at) >= T0 + timedelta(hours=1)
    # rate: never more than 50 in any one-second window (plus the bucket's burst of 50)
    per_second = Counter(int(t.timestamp()) for t in sent_at)
    assert max(per_second.values()) <= 100
    windows = sorted(sent_at)
    assert all((windows[i + 100] - windows[i]).total_seconds() >= 1.0 for i in range(len(windows) - 100))
    # quiet hours: Honolulu (05:00 at send_at) is held until 08:00 local
    by_number = {m.to: t for t, m in channel.sent}
    hawaii = [f"+1212555{i:04d}" for i in range(3, 2000, 4) if i % 50 != 7]
    assert all(by_number[n] >= T0 + timedelta(hours=3) for n in hawaii)
    # opt-outs skipped, everyone else exactly once, each a touch
    opted_out = {f"+1212555{i:04d}" for i in range(2000) if i % 50 == 7}
    numbers = [m.to for _, m in channel.sent]
    assert len(numbers) == len(set(numbers)) == 2000 - len(opted_out)
    assert not opted_out & set(numbers)
    progress = await store.sms.progress(blast["id"])
    assert progress["counts"]["sent"] == 2000 - len(opted_out)
    assert progress["counts"]["skipped"] == len(opted_out)
    assert progress["errors"] == [{"state": "skipped", "reason": "opted out of SMS", "count": len(opted_out)}]
    rows = await store.db.fetchall(
        "SELECT count(*), count(DISTINCT source_key) FROM touches WHERE kind = 'sms'"
    )
    assert tuple(rows[0]) == (2000 - len(opted_out),) * 2
    assert (await store.sms.blast(blast["id"]))["state"] == "done"
    assert "Service special this Saturday, P0!" in {m.text for _, m in channel.sent}
    assert len(ids) == 2000


async def test_crash_mid_blast_no_double_send_no_loss(store: Store) -> None:
    clock = VirtualClock(T0)
    await _people(store, 300, time_zone="America/Chicago")
    service = blast_service(store, clock)
    channel = RecordingChannel("main", clock)
    channel.hang_after = 100
    worker = channel_worker(store, channel, clock, rate_per_second=1000)
    blast = await service.create(
        BlastSpec(name="b", text="Hi {{ contact.first_name }}", channel="main", audience={"tag": "service"}),
        created_by=None,
    )
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(channel.hung.wait(), 30)
    task.cancel()  # the process dies while a window of messages is in flight
    with pytest.raises(asyncio.CancelledError):
        await task
    in_doubt = (await store.sms.progress(blast["id"]))["counts"]["sending"]
    assert in_doubt > 0
    channel.hang_after = None
    restarted = channel_worker(store, channel, clock, rate_per_second=1000)
    await restarted.recover()
    while await restarted.step():
        pass
    counts = (await store.sms.progress(blast["id"]))["counts"]
    numbers = [m.to for _, m in channel.sent]
    assert len(numbers) == len(set(numbers))  # nobody messaged twice
    assert counts["unknown"] == in_doubt  # in doubt, not resent
    assert counts["sent"] + counts["unknown"] + counts["skipped"] == 300  # nobody lost
    assert counts["queued"] == counts["sending"] == 0


async def test_bad_blast_input_names_the_field(store: Store) -> None:
    clock = VirtualClock(T0)
    await _people(store, 3)
    await store.contacts.create(
        validate_contact(
            {"last_name": "Nofirst", "phones": ["+12125559999"], "tags": ["service"]}, region="US"
        )
    )
    service = blast_service(store, clock)
    cases = [
        (BlastSpec(name="x", text="  ", channel="main", audience={"tag": "service"}), "text"),
        (
            BlastSpec(
                name="x", text="Hi {{ contact.first_name }}", channel="main", audience={"tag": "service"}
            ),
            "text",
        ),
        (BlastSpec(name="x", text="hi", channel="nope", audience={"tag": "service"}), "channel"),
        (
            BlastSpec(
                name="x", text="hi", channel="main", audience={"tag": "service"}, send_at=T0 - timedelta(1)
            ),
            "send_at",
        ),
        (BlastSpec(name="x", text="hi", channel="main", audience={"tag": "nobody"}), "audience"),
        (
            BlastSpec(name="x", text="hi", channel="main", audience={"csv": "phone\n12\n+15550001234\n"}),
            "audience.csv",
        ),
        (
            BlastSpec(name="x", text="hi", channel="main", audience={"tag": "service"}, cron="every day"),
            "cron",
        ),
    ]
    for spec, field in cases:
        with pytest.raises(ValidationError) as exc:
            await service.create(spec, created_by=None)
        assert exc.value.field == field, (spec, exc.value)
    missing = None
    try:
        await service.create(cases[1][0], created_by=None)
    except ValidationError as exc:
        missing = exc
    assert missing is not None and missing.code == "missing_merge_code" and "Nofirst" in missing.reason
    assert await store.sms.blasts() == []  # nothing written


async def test_reports_stop_and_replies(store: Store) -> None:
    clock = VirtualClock(T0)
    await store.users.add("jsmith", role="rep", password="password-1")
    (cid,) = await _people(store, 1, owner="jsmith")
    service = blast_service(store, clock)
    channel = RecordingChannel("main", clock)
    events = SmsEvents(store, help_text="Switchboard Motors: reply STOP to opt out.", clock=clock.now)
    worker = channel_worker(store, channel, clock)
    blast = await service.create(
        BlastSpec(name="b", text="hello", channel="main", audience={"contact_ids": [cid]}), created_by=None
    )
    await worker.step()
    ((_, out),) = channel.sent
    # delivery reports: late/out-of-order and duplicates never move a message backwards
    await events.on_delivery(DeliveryReport("main", "delivered", message_id=out.message_id))
    await events.on_delivery(DeliveryReport("main", "sent", message_id=out.message_id))
    await events.on_delivery(DeliveryReport("main", "delivered", message_id=out.message_id))
    assert (await store.sms.progress(blast["id"]))["counts"]["delivered"] == 1
    touch = await store.touches.by_source_key(f"sms:{out.message_id}")
    assert touch is not None and touch.status == "delivered"
    # a reply becomes an inbound touch and a follow-up on the owner's day
    await events.on_inbound(
        InboundSms("main", "+12125550000", None, "Is Saturday 9am ok?", provider_id="in1")
    )
    fus = await store.touches.open_followups(cid)
    assert [f.kind for f in fus] == ["sms_reply"]
    # STOP: opted out, one confirmation even when the webhook comes twice
    for _ in range(2):
        await events.on_inbound(InboundSms("main", "+12125550000", None, "STOP", provider_id="in2"))
    assert (await store.contacts.get(cid)).sms_opt_out
    await worker.step()
    assert [m.text for _, m in channel.sent][1:] == [events.stop_reply]
    await events.on_inbound(InboundSms("main", "+12125550000", None, "start", provider_id="in3"))
    assert not (await store.contacts.get(cid)).sms_opt_out


async def test_permanent_errors_fail_and_auto_pause(store: Store) -> None:
    clock = VirtualClock(T0)
    await _people(store, 40, time_zone="America/Chicago")
    service = blast_service(store, clock)
    channel = RecordingChannel("main", clock)
    for i in range(40):
        channel.fail_numbers[f"+1212555{i:04d}"] = ChannelError("403 Authorization failed", retryable=False)
    worker = channel_worker(store, channel, clock)
    worker.auto_pause_after = 10
    blast = await service.create(
        BlastSpec(name="b", text="x", channel="main", audience={"tag": "service"}), created_by=None
    )
    while await worker.step():
        pass
    b = await store.sms.blast(blast["id"])
    assert b["state"] == "paused" and "consecutive" in b["pause_reason"]
    counts = (await store.sms.progress(blast["id"]))["counts"]
    assert counts["failed"] >= 10 and counts["queued"] > 0
