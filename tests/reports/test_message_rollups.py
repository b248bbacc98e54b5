"""The daily messaging rollups are exact: seeded random SMS blasts and texts, sends, failures, delivery
reports arriving days later, replies and STOPs (some timed before a later send to the same number,
some replayed), emails sent and bounced, unsubscribes, a cancelled blast and a deleted template, all
around both of Chicago's DST changes and close to local midnight; the messaging report read from
rollups (+ partial edge days from the outboxes) equals the one counted from the outboxes alone, and
both equal per-month figures this test computes itself from the stored rows."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crm_link.contacts import ContactFields
from crm_link.db import from_db_time
from crm_link.email import EmailRow
from crm_link.reports import utc_text
from crm_link.sms import OutboxRow
from crm_link.store import Store
from crm_link.touches import TouchInput
from reports.messaging import messaging_report
from reports.periods import Period

CHI = "America/Chicago"
WINDOWS = [(date(2031, 3, 6), date(2031, 3, 12)), (date(2031, 10, 30), date(2031, 11, 5))]
NUMBERS = [f"+1555010{i:04d}" for i in range(8)]  # few numbers: replies compete for messages
EARLY = datetime(2031, 1, 1, tzinfo=UTC)


def instant(rng: random.Random, zone: ZoneInfo) -> datetime:
    first, last = rng.choice(WINDOWS)
    day = first + timedelta(days=rng.randrange((last - first).days + 1))
    r = rng.random()
    if r < 0.2:  # close to local midnight, on either side
        t = datetime.combine(day, time(0), zone) + timedelta(seconds=rng.uniform(-90, 90))
    elif r < 0.3 and day == date(2031, 11, 2):  # the hour that happens twice
        t = datetime(2031, 11, 2, 6, 0, tzinfo=UTC) + timedelta(seconds=rng.uniform(0, 7200))
    else:
        t = datetime.combine(day, time(0), zone) + timedelta(seconds=rng.uniform(0, 86400))
    return t.astimezone(UTC)


async def seed(store: Store, n: int) -> None:
    rng = random.Random(n)
    zone = ZoneInfo(CHI)
    now = [instant(rng, zone)]
    store.db.now = lambda: now[0]
    sms, email = store.sms, store.email
    contacts = [
        (await store.contacts.create(ContactFields(present={"first_name"}, first_name=f"c{i}"))).id
        for i in range(5)
    ]
    templates = [
        (
            await email.save_template(
                template_id=None,
                name=name,
                subject="s",
                html="<p>h</p>",
                text="t",
                merge_codes=[],
                user_id=None,
            )
        )["id"]
        for name in ("Service due", "Thanks", "Spare")
    ]
    blasts = []
    for i in range(3):
        bid = await sms.create_blast(
            name=f"Blast {i}",
            text="Hi",
            channel="fake",
            audience={},
            created_by=None,
            send_at=None,
            cron=None,
            time_zone=CHI,
            rate_per_second=None,
            next_run_at=now[0],
        )
        run = await sms.claim_run(await sms.blast(bid), next_run_at=None, lease=timedelta(minutes=5))
        assert run is not None
        rows = [
            OutboxRow(num, "Hi", "fake", EARLY)
            if rng.random() < 0.85
            else OutboxRow(num, "Hi", "fake", EARLY, state="skipped", reason="opted out")
            for num in rng.sample(NUMBERS, 6)
        ]
        await sms.materialize(bid, run, rows)
        blasts.append(bid)
    replies = 0
    for step in range(260):
        now[0] = instant(rng, zone)
        action = rng.random()
        if action < 0.12:
            await sms.enqueue(OutboxRow(rng.choice(NUMBERS), "Text", "fake", EARLY))
        elif action < 0.3:
            claimed = await sms.claim("fake", now[0], rng.randrange(1, 5))
            if claimed:
                await sms.settle(
                    [
                        (m, rng.choice(["sent", "sent", "sent", "failed", "unknown"]), f"p{m.id}", None, None)
                        for m in claimed
                    ]
                )
        elif action < 0.45:  # a delivery report, often days after the send
            ids = [r["id"] for r in await store.db.fetchall("SELECT id FROM sms_outbox ORDER BY id")]
            await sms.apply_report(
                "fake",
                message_id=rng.choice(ids),
                provider_id=None,
                status=rng.choice(["delivered", "delivered", "undelivered", "failed", "sent"]),
                error_code=None,
                error_text=None,
            )
        elif action < 0.62:  # a reply: at the clock, or just before/at a send to that number
            at = now[0]
            number = rng.choice(NUMBERS)
            sent = await store.db.fetchall(
                "SELECT sent_at FROM sms_outbox WHERE to_e164 = ? AND sent_at IS NOT NULL", (number,)
            )
            if sent and rng.random() < 0.3:
                edge = from_db_time(rng.choice(sent)["sent_at"])
                assert edge is not None
                at = edge + timedelta(microseconds=rng.choice([-1, 0, 0, 1]))
            replies += 1
            await store.touches.record(
                TouchInput(
                    source_key=f"sms-in:fake:{replies}",
                    kind="sms",
                    direction="inbound",
                    started_at=at,
                    channel="fake",
                    status="received",
                    number=number,
                    payload={"keyword": "stop" if rng.random() < 0.3 else None},
                )
            )
        elif action < 0.67 and replies:  # a redelivered reply, now read as another number / keyword
            await store.touches.record(
                TouchInput(
                    source_key=f"sms-in:fake:{rng.randrange(1, replies + 1)}",
                    kind="sms",
                    direction="inbound",
                    started_at=now[0],
                    channel="fake",
                    status="received",
                    number=rng.choice(NUMBERS),
                    payload={"keyword": rng.choice(["stop", None])},
                )
            )
        elif action < 0.77:
            cid = rng.choice(contacts)
            await email.enqueue(
                EmailRow(
                    to_addr=f"c{cid}@example.com",
                    to_name="",
                    subject="s",
                    html="h",
                    text="t",
                    message_id=f"<m{step}@example.com>",
                    not_before=EARLY,
                    contact_id=cid,
                    user_id=None,
                    template_id=rng.choice([*templates, None]),
                )
            )
        elif action < 0.87:
            claimed_emails = await email.claim(now[0], rng.randrange(1, 4))
            if claimed_emails:
                await email.settle_many(
                    [(e, rng.choice(["sent", "sent", "failed"]), None, None, None) for e in claimed_emails]
                )
        elif action < 0.95:
            await store.audit.write(
                "email.unsubscribe", user_id=None, object_type="contact", object_id=rng.choice(contacts)
            )
        elif action < 0.97:
            await sms.requeue_unknown(
                [
                    r["id"]
                    for r in await store.db.fetchall("SELECT id FROM sms_outbox WHERE state = 'unknown'")
                ]
                or [0]
            )
        elif action < 0.98 and blasts:
            await sms.set_blast_state(blasts.pop(), "cancelled")
        elif templates[2:]:
            await email.delete_template(templates.pop())


def expected_months(rows: dict[str, list[Any]], lo: str, hi: str, zone: str) -> dict[str, dict[str, int]]:
    """Per local month, every figure by its definition, from the stored rows alone."""
    z = ZoneInfo(zone)
    out: dict[str, dict[str, int]] = {}

    def month(at: str) -> str:
        t = from_db_time(at)
        assert t is not None
        return t.astimezone(z).strftime("%Y-%m")

    def add(at: str, **counts: int) -> None:
        row = out.setdefault(month(at), {})
        for k, v in counts.items():
            row[k] = row.get(k, 0) + v

    sms = rows["sms"]
    for o in sms:
        at = o["sent_at"] or o["final_at"]
        if at and lo <= at < hi:
            add(
                at,
                sent=int(o["sent_at"] is not None),
                delivered=int(o["state"] == "delivered"),
                failed=int(o["state"] == "failed"),
            )
    for t in rows["replies"]:
        before = [
            o for o in sms if o["to_e164"] == t["number"] and o["sent_at"] and o["sent_at"] <= t["started_at"]
        ]
        if not before:
            continue
        o = max(before, key=lambda o: (o["sent_at"], o["id"]))
        if lo <= o["sent_at"] < hi:
            add(o["sent_at"], replies=1, opted_out=int(json.loads(t["payload"]).get("keyword") == "stop"))
    emails = rows["email"]
    for e in emails:
        at = e["sent_at"] or (e["updated_at"] if e["state"] == "failed" else None)
        if at and lo <= at < hi:
            add(at, email_sent=int(e["state"] == "sent"), email_bounced=int(e["state"] == "failed"))
    for a in rows["unsubscribes"]:
        before = [
            e
            for e in emails
            if e["contact_id"] == int(a["object_id"]) and e["sent_at"] and e["sent_at"] <= a["at"]
        ]
        if before:
            e = max(before, key=lambda e: (e["sent_at"], e["id"]))
            if lo <= e["sent_at"] < hi:
                add(e["sent_at"], email_unsubscribed=1)
    return out


async def stored(store: Store) -> dict[str, list[Any]]:
    q = store.db.fetchall
    return {
        "sms": list(await q("SELECT * FROM sms_outbox")),
        "replies": list(await q("SELECT * FROM touches WHERE kind = 'sms' AND direction = 'inbound'")),
        "email": list(await q("SELECT * FROM email_outbox")),
        "unsubscribes": list(await q("SELECT * FROM audit_log WHERE action = 'email.unsubscribe'")),
    }


def normal(data: dict[Any, dict[str, int]]) -> dict[Any, dict[str, int]]:
    return {k: {n: int(v) for n, v in c.items() if v} for k, c in data.items()}


def months_of(lo: datetime, hi: datetime, zone: str) -> list[tuple[str, str]]:
    z = ZoneInfo(zone)
    out: list[tuple[str, str]] = []
    d = lo.astimezone(z).date()
    while datetime.combine(d, time(0), z) < hi:
        start = lo if not out else datetime.combine(d, time(0), z)
        out.append((d.strftime("%Y-%m"), utc_text(start)))
        d = (d.replace(day=1) + timedelta(days=32)).replace(day=1)
    return out


def bounds(first: date, last: date, zone: str) -> tuple[datetime, datetime]:
    p = Period(first, last, zone)
    return p.start, p.end


async def check(store: Store, lo: datetime, hi: datetime, zone: str) -> None:
    months = months_of(lo, hi, zone)
    a, b = utc_text(lo), utc_text(hi)
    for group in ("blast", "template", "month"):
        got = normal(await store.reports.messaging(a, b, group, months))
        assert got == normal(await store.reports.messaging_from_outboxes(a, b, group, months)), (
            lo,
            hi,
            group,
        )


@pytest.mark.parametrize("seed_n", [1, 2, 3])
async def test_message_rollups_equal_the_outboxes_across_dst_late_reports_and_replies(
    store: Store, seed_n: int
) -> None:
    await seed(store, seed_n)
    assert await store.reports.message_zone() == CHI  # built at open, kept by the triggers since
    rows = await stored(store)
    assert any(o["replies"] for o in rows["sms"]) and any(e["unsubscribes"] for e in rows["email"])
    rng = random.Random(seed_n + 100)
    periods = [bounds(first, last, CHI) for first, last in WINDOWS]
    periods += [
        bounds(date(2031, 3, 9), date(2031, 3, 9), CHI),
        bounds(date(2031, 11, 2), date(2031, 11, 2), CHI),
    ]
    periods.append(bounds(date(2031, 3, 1), date(2031, 11, 30), CHI))
    for _ in range(4):  # bounds off midnight: partial days at the edges come from the outboxes
        lo = instant(rng, ZoneInfo(CHI))
        periods.append((lo, lo + timedelta(seconds=rng.uniform(3600, 6 * 86400))))
    for lo, hi in periods:
        await check(store, lo, hi, CHI)
        month = normal(
            await store.reports.messaging(utc_text(lo), utc_text(hi), "month", months_of(lo, hi, CHI))
        )
        want = normal(expected_months(rows, utc_text(lo), utc_text(hi), CHI))
        assert {k: v for k, v in month.items() if v} == {k: v for k, v in want.items() if v}, (lo, hi)
    # the report a manager sees: the whole year by month equals the test's own count
    period = Period(date(2031, 1, 1), date(2031, 12, 31), CHI)
    report = await messaging_report(store, period, "month")
    want = expected_months(rows, utc_text(period.start), utc_text(period.end), CHI)
    for r in report["rows"]:
        for name in ("sent", "delivered", "failed", "replies", "opted_out", "email_sent", "email_bounced"):
            assert r[name] == want.get(r["key"], {}).get(name, 0), (r["key"], name)
    assert report["totals"]["email_unsubscribed"] == sum(
        m.get("email_unsubscribed", 0) for m in want.values()
    )

    # the rollups are what is read: a day taken away changes that day; a rebuild restores it
    lo, hi = bounds(*WINDOWS[1], CHI)
    before = normal(
        await store.reports.messaging(utc_text(lo), utc_text(hi), "month", months_of(lo, hi, CHI))
    )
    async with store.db.transaction() as tx:
        await tx.execute(
            "DELETE FROM message_rollups WHERE local_day >= '2031-10-30' AND local_day <= '2031-11-05'"
        )
    assert (
        normal(await store.reports.messaging(utc_text(lo), utc_text(hi), "month", months_of(lo, hi, CHI)))
        != before
    )
    await store.reports.rebuild_message_rollups()
    assert (
        normal(await store.reports.messaging(utc_text(lo), utc_text(hi), "month", months_of(lo, hi, CHI)))
        == before
    )


async def test_a_new_zone_rebuilds_the_message_rollups(store: Store) -> None:
    await seed(store, 7)
    berlin = "Europe/Berlin"
    store.reports.time_zone = berlin
    await store.reports.check_rollups()  # at start: the zone changed
    assert await store.reports.message_zone() == berlin
    for lo, hi in [bounds(date(2031, 10, 25), date(2031, 11, 6), berlin), bounds(*WINDOWS[1], CHI)]:
        await check(store, lo, hi, berlin)
