"""Pure rules and the store's guarantees: calling hours, segments as data, leases, attempts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns.dialer.hours import CallingHours, in_window
from crm_link.call_lists import ListSpec
from crm_link.contacts import validate_contact
from crm_link.errors import Conflict, ValidationError
from crm_link.segments import compile_filter

NOW = datetime(2026, 11, 23, 13, 30, tzinfo=UTC)  # 08:30 New York, 07:30 Chicago, 05:30 Los Angeles


def test_calling_hours_are_the_customers_local_time() -> None:
    hours = CallingHours.of("08:00", "21:00")
    assert hours.is_open("America/New_York", NOW)
    assert not hours.is_open("America/Chicago", NOW)
    assert hours.open_zones(["America/New_York", "America/Los_Angeles"], NOW) == ["America/New_York"]
    assert hours.next_open("America/Chicago", NOW) == datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
    # 21:00 is closed; a holiday is closed all day, in the customer's own date
    assert not hours.is_open("America/New_York", datetime(2026, 11, 24, 2, 0, tzinfo=UTC))
    holiday = CallingHours.of("08:00", "21:00", ["2026-11-26"])
    assert not holiday.is_open("America/New_York", datetime(2026, 11, 26, 15, 0, tzinfo=UTC))
    assert holiday.next_open("America/New_York", datetime(2026, 11, 26, 15, 0, tzinfo=UTC)) == datetime(
        2026, 11, 27, 13, 0, tzinfo=UTC
    )
    with pytest.raises(ValidationError) as err:
        CallingHours.of("21:00", "08:00")
    assert err.value.field == "calling_hours.end"
    with pytest.raises(ValidationError):
        CallingHours.of("8am", "21:00")


@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)))
def test_next_open_is_open_and_nothing_earlier_is(now: datetime) -> None:
    hours = CallingHours.of("09:30", "17:00", ["2027-07-04"])
    nxt = hours.next_open("America/Chicago", now)
    assert nxt >= now and hours.is_open("America/Chicago", nxt)
    if nxt > now:
        assert not hours.is_open("America/Chicago", nxt - timedelta(minutes=1))


def test_list_window() -> None:
    assert in_window(date(2026, 11, 23), "2026-11-20", "2026-11-30")
    assert not in_window(date(2026, 12, 1), None, "2026-11-30")
    assert not in_window(date(2026, 11, 19), "2026-11-20", None)


def test_segment_filters_compile_to_parameters_never_to_code() -> None:
    today = date(2026, 11, 23)
    c = compile_filter(
        {
            "all": [
                {"field": "attributes.purchase_date", "op": "days_ago_between", "value": [4, 5]},
                {"tag": "vip'; DROP TABLE contacts; --"},
            ]
        },
        today,
    )
    assert "DROP" not in c.sql and "2026-11-18" in c.params and "2026-11-19" in c.params
    for bad, field in [
        ({"field": "password_hash", "op": "eq", "value": 1}, "filter.field"),
        ({"field": "attributes.x) OR 1=1 --", "op": "eq", "value": 1}, "filter.field"),
        ({"field": "first_name", "op": "sounds_like", "value": "x"}, "filter.op"),
        ({"all": []}, "filter.all"),
        ({"field": "attributes.d", "op": "older_than_days", "value": "180"}, "filter.value"),
        ({"touches": {"kind": "call"}, "op": "count_gte", "value": -1}, "filter.value"),
    ]:
        with pytest.raises(ValidationError) as err:
            compile_filter(bad, today)
        assert err.value.field == field, bad


async def _contact(store: Any, first: str, phone: str | None, **kw: Any) -> int:
    data = {"first_name": first, "last_name": "Test", "phones": [phone] if phone else [], **kw}
    if not phone:
        data["email"] = f"{first}@example.com"
    return (await store.contacts.create(validate_contact(data, region="US"))).id


async def test_segments_select_the_dealers_lists(store: Any) -> None:
    now = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    today = date(2026, 11, 23)

    def ago(days: int) -> str:
        return (today - timedelta(days=days)).isoformat()

    four = await _contact(store, "Four", "+12127365001", attributes={"purchase_date": ago(4)})
    await _contact(store, "Ten", "+12127365002", attributes={"purchase_date": ago(10)})
    lost = await _contact(
        store, "Lost", "+12127365003", attributes={"last_service_date": ago(200), "service_visits": 4}
    )
    await _contact(
        store, "Loyal", "+12127365004", attributes={"last_service_date": ago(20), "service_visits": 9}
    )
    await _contact(
        store, "Few", "+12127365005", attributes={"last_service_date": ago(400), "service_visits": 2}
    )
    bday = await _contact(store, "Bday", "+12127365006", attributes={"birthday": "1980-11-25"})
    seg = store.segments
    after_sale = {"field": "attributes.purchase_date", "op": "days_ago_between", "value": [4, 5]}
    assert await seg.ids(after_sale, now=now) == [four]
    lost_f = {
        "all": [
            {"field": "attributes.last_service_date", "op": "older_than_days", "value": 180},
            {"field": "attributes.service_visits", "op": "gte", "value": 3},
        ]
    }
    assert await seg.ids(lost_f, now=now) == [lost]
    assert await seg.ids(
        {"field": "attributes.birthday", "op": "anniversary_within_days", "value": 6}, now=now
    ) == [bday]
    saved = await seg.create("Lost service customers", lost_f)
    assert (await seg.preview(await seg.resolve("Lost service customers"), now=now))["count"] == 1
    assert (await seg.get(saved.id)).filter == lost_f
    with pytest.raises(Conflict):
        await seg.create("lost SERVICE customers", lost_f)


async def test_entries_skip_with_reasons_and_claims_never_overlap(store: Any) -> None:
    ok1 = await _contact(store, "A", "+12127365001")
    ok2 = await _contact(store, "B", "+13127365001")
    dnc = await _contact(store, "C", "+12127365002", do_not_call=True)
    fake = await _contact(store, "D", "+15550100123")  # a fictional 555-01xx number: not dialable
    none = await _contact(store, "E", None)
    dup = await _contact(store, "F", "+12127365001")
    cl, summary = await store.call_lists.create(
        ListSpec(name="t", mode="progressive", max_attempts=2, retry_minutes=10),
        contact_ids=[ok1, ok2, dnc, fake, none, dup, ok1],
        now=NOW,
    )
    assert summary == {
        "added": 2,
        "do not call": 1,
        "invalid number": 1,
        "no number": 1,
        "duplicate number": 1,
    }
    again = await store.call_lists.add_entries(cl.id, contact_ids=[ok1, ok2], now=NOW)
    assert again == {"added": 0, "already in this list": 2}
    await store.call_lists.set_state(cl.id, "running", NOW)
    zones = await store.call_lists.zones(cl.id)
    assert set(zones) == {"America/New_York", "America/Chicago"}
    lease = timedelta(seconds=60)
    a = await store.call_lists.claim(cl.id, zones=zones, now=NOW, owner="d1", lease=lease)
    b = await store.call_lists.claim(cl.id, zones=zones, now=NOW, owner="d2", lease=lease)
    assert a and b and a.id != b.id
    assert await store.call_lists.claim(cl.id, zones=zones, now=NOW, owner="d3", lease=lease) is None
    with pytest.raises(Conflict):
        await store.call_lists.start_attempt(
            a.id, owner="d2", agent_id=None, source="asterisk", now=NOW, lease=lease
        )
    att = await store.call_lists.start_attempt(
        a.id, owner="d1", agent_id=None, source="asterisk", now=NOW, lease=lease
    )
    assert att is not None
    # d1 dies: its lease runs out; the attempt in doubt becomes unknown and the entry waits its retry delay
    later = NOW + timedelta(seconds=61)
    settled = await store.call_lists.expire_leases(later)
    assert [s.state for s in settled] == ["unknown"]
    entry = await store.call_lists.entry(a.id)
    assert entry.state == "pending" and entry.next_at == later + timedelta(minutes=10) and entry.attempts == 1
    # d2's lease (no attempt started) simply returns its entry; a's waits
    again = await store.call_lists.claim(cl.id, zones=zones, now=later, owner="d4", lease=lease)
    assert again is not None and again.id == b.id
    assert await store.call_lists.claim(cl.id, zones=zones, now=later, owner="d4", lease=lease) is None
    # the call's real end arrives late: the customer was reached after all, so the entry is done
    await store.call_lists.set_call_id(att.id, "call-1")
    done = await store.call_lists.finish_attempt(att.id, "answered", now=later)
    assert done is not None and done.state == "answered"
    assert (await store.call_lists.entry(a.id)).state == "done"
    assert await store.call_lists.finish_attempt(att.id, "busy", now=later) is None  # never backwards
