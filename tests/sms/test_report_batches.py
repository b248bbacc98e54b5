"""Delivery reports written in batches: the same outcome as one at a time, in arrival order."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from campaigns.sms.channel import DeliveryReport
from campaigns.sms.inbound import SmsEvents
from crm_link.sms import OutboxRow, ReportUpdate
from crm_link.store import Store


async def _sending(store: Store, n: int) -> list[int]:
    now = store.db.now()
    for i in range(n):
        await store.sms.enqueue(
            OutboxRow(to_e164=f"+1212555{i:04d}", text=f"m{i}", channel="main", not_before=now - timedelta(1))
        )
    batch = await store.sms.claim("main", now, n)
    return [m.id for m in batch]


async def test_a_batch_applies_reports_in_order_and_skips_stale_and_foreign_ones(store: Store) -> None:
    a, b, c, d = await _sending(store, 4)
    await store.sms.settle(
        [(m, "sent", None, None, None) for m in await _claimed(store, [a, b, c])]
    )  # d is still `sending`: its report may come before the gateway's answer is written
    results = await store.sms.apply_reports(
        [
            ReportUpdate("main", a, None, "sent"),  # stale: it is sent already
            ReportUpdate("main", a, None, "delivered"),
            ReportUpdate("main", a, None, "sent"),  # stale after the delivery in the same batch
            ReportUpdate("main", b, "p-b", "undelivered", "1", "absent subscriber"),
            ReportUpdate("other", c, None, "delivered"),  # another channel's report
            ReportUpdate("main", 10**9, None, "delivered"),  # nobody's
            ReportUpdate("main", d, None, "delivered"),
            ReportUpdate("main", c, None, "buffered"),  # not a status the store knows
        ]
    )
    assert [r.id if r else None for r in results] == [None, a, None, b, None, None, d, None]
    assert results[1] is not None and results[1].state == "delivered"
    assert results[3] is not None and results[3].state == "failed"
    # the provider's id now finds b: a later "delivered" contradicts the failure
    (late,) = await store.sms.apply_reports([ReportUpdate("main", None, "p-b", "delivered")])
    assert late is not None and late.id == b and late.state == "delivered"
    rows = await store.db.fetchall("SELECT id, state, reason FROM sms_outbox ORDER BY id")
    assert [(r[0], r[1]) for r in rows] == [(a, "delivered"), (b, "delivered"), (c, "sent"), (d, "delivered")]
    # d's report came first; the settle that follows keeps `delivered` and its touch says so
    (msg_d,) = await _claimed(store, [d])
    await store.sms.settle([(msg_d, "sent", None, None, None)])
    rows = await store.db.fetchall("SELECT state, sent_at IS NOT NULL FROM sms_outbox WHERE id = ?", (d,))
    assert tuple(rows[0]) == ("delivered", 1)
    touch = await store.db.fetchall("SELECT status FROM touches WHERE source_key = ?", (f"sms:{d}",))
    assert touch[0][0] == "delivered"


async def _claimed(store: Store, ids: list[int]) -> list[Any]:
    rows = await store.db.fetchall(
        f"SELECT * FROM sms_outbox WHERE id IN ({','.join('?' * len(ids))}) ORDER BY id", ids
    )
    from crm_link.sms import _msg

    return [_msg(r) for r in rows]


async def test_concurrent_reports_share_transactions_and_each_caller_hears_its_own(store: Store) -> None:
    ids = await _sending(store, 200)
    await store.sms.settle([(m, "sent", None, None, None) for m in await _claimed(store, ids)])
    events = SmsEvents(store, help_text="h")
    calls = 0
    real = store.sms.apply_reports

    async def counting(reports: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(reports)

    store.sms.apply_reports = counting  # type: ignore[method-assign]
    await asyncio.gather(
        *(
            events.on_delivery(DeliveryReport(channel="main", status="delivered", message_id=str(i)))
            for i in ids
        ),
        events.on_delivery(DeliveryReport(channel="main", status="delivered", message_id="999999")),
    )
    await events.close()
    assert events.reports == 201 and events.unmatched_reports == 1
    assert calls < 20  # 201 reports, a handful of transactions
    rows = await store.db.fetchall("SELECT count(*) FROM sms_outbox WHERE state = 'delivered'")
    assert rows[0][0] == 200
