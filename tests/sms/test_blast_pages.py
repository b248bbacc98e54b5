"""A blast bigger than a page: validated, rendered and written a page at a time, still one blast."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any

import pytest

from campaigns.sms.blasts import BlastService, BlastSpec
from crm_link.contacts import validate_contact
from crm_link.errors import NotFound, ValidationError
from crm_link.store import Store
from switchboard.app import open_store
from switchboard.messaging import sms_render
from switchboard.settings import Settings
from templates.render import Renderer
from tests.sms.helpers import T0, RecordingChannel, VirtualClock, blast_service, channel_worker

PAGE = 5
TOO_LONG_FOR_P22 = "Hi" + " {{ contact.first_name }}" * 8  # over 1,530 characters for a 200-letter name


async def _audience(store: Store, people: list[dict[str, Any]]) -> list[int]:
    ids = []
    async with store.db.transaction() as tx:
        for p in people:
            data = {"time_zone": "America/Chicago", "tags": ["service"]} | p
            ids.append(await store.contacts.insert_in(tx, validate_contact(data, region="US")))
    return ids


def _service(store: Store, clock: VirtualClock) -> BlastService:
    return blast_service(store, clock, claim_lease=timedelta(minutes=5), page_size=PAGE)


def _people(n: int) -> list[dict[str, Any]]:
    people: list[dict[str, Any]] = [{"first_name": f"P{i}", "phones": [f"+1212555{i:04d}"]} for i in range(n)]
    people[3]["sms_opt_out"] = True  # page 1
    people[6]["phones"] = []  # page 2
    people[13]["phones"] = ["+12125550002"]  # page 3: the number of P2 (page 1)
    people[21]["phones"] = ["+12125550013"]  # page 5: the number P13 would have had, now free
    people[22]["phones"] = ["+12125550013"]  # page 5: P21's number, in the same page
    return people


@contextlib.contextmanager
def _before_third_page(store: Store, act: Callable[[int], Awaitable[None]]) -> Iterator[None]:
    """While inside: `act(blast_id)` runs before the third page of a run is written (it may raise,
    as a process dying there)."""
    write_page = store.sms.materialize_page
    pages = 0

    async def write(blast_id: int, *args: Any, **kwargs: Any) -> bool:
        nonlocal pages
        pages += 1
        if pages == 3:
            await act(blast_id)
        return await write_page(blast_id, *args, **kwargs)

    store.sms.materialize_page = write  # type: ignore[method-assign]
    try:
        yield
    finally:
        store.sms.materialize_page = write_page  # type: ignore[method-assign]


async def _create_dying_before_third_page(store: Store, service: BlastService) -> dict[str, Any]:
    """A blast sent at once whose creator dies before writing its third page; the blast as stored."""

    async def dies(blast_id: int) -> None:
        raise RuntimeError("the process died here")

    with _before_third_page(store, dies), pytest.raises(RuntimeError):
        await service.create(
            BlastSpec(
                name="b", text="Hi {{ contact.first_name }}", channel="main", audience={"tag": "service"}
            ),
            created_by=None,
        )
    (blast,) = await store.sms.blasts()
    return blast


def _people_two_without_first_names() -> list[dict[str, Any]]:
    """23 customers; the 21st and the 23rd (on the last page) have no first name."""
    people = _people(23)
    for i in (20, 22):
        people[i]["first_name"] = ""
        people[i]["last_name"] = f"Nofirst{i}"
    return people


async def _outbox(store: Store, blast_id: int) -> list[Any]:
    return await store.db.fetchall(
        "SELECT contact_id, to_e164, state, reason, text FROM sms_outbox WHERE blast_id = ? ORDER BY id",
        (blast_id,),
    )


async def test_a_blast_of_many_pages_has_one_row_per_number_its_skips_and_its_texts(
    settings: Settings,
) -> None:
    clock = VirtualClock(T0)
    async with open_store(settings, clock.now) as store:
        ids = await _audience(store, _people(23))
        blast = await _service(store, clock).create(
            BlastSpec(
                name="b", text="Hi {{ contact.first_name }}", channel="main", audience={"tag": "service"}
            ),
            created_by=None,
        )
        rows = await _outbox(store, blast["id"])
        by_contact = {r["contact_id"]: r for r in rows}
        assert len(rows) == 21 and len({r["to_e164"] for r in rows}) == 21  # 23 less two duplicates
        assert ids[13] not in by_contact and ids[22] not in by_contact  # the first with a number wins
        assert by_contact[ids[2]]["to_e164"] == "+12125550002" and by_contact[ids[2]]["text"] == "Hi P2"
        assert (by_contact[ids[3]]["state"], by_contact[ids[3]]["reason"]) == ("skipped", "opted out of SMS")
        assert (by_contact[ids[6]]["state"], by_contact[ids[6]]["reason"]) == ("skipped", "no phone number")
        assert by_contact[ids[21]]["to_e164"] == "+12125550013" and by_contact[ids[20]]["text"] == "Hi P20"
        assert sum(r["state"] == "queued" for r in rows) == 19
        stored = await store.sms.blast(blast["id"])
        assert (stored["state"], stored["runs"], stored["materialized_runs"]) == ("running", 1, 1)
        assert len(await store.sms.claim("main", clock.now(), 100)) == 19


async def test_a_missing_merge_code_on_the_last_page_refuses_the_blast_with_nothing_stored(
    settings: Settings,
) -> None:
    clock = VirtualClock(T0)
    async with open_store(settings, clock.now) as store:
        await _audience(store, _people_two_without_first_names())
        with pytest.raises(ValidationError) as exc:
            await _service(store, clock).create(
                BlastSpec(
                    name="b", text="Hi {{ contact.first_name }}", channel="main", audience={"tag": "service"}
                ),
                created_by=None,
            )
        assert exc.value.code == "missing_merge_code" and exc.value.field == "text"
        assert "Nofirst20, Nofirst22; 2 recipients" in exc.value.reason
        with pytest.raises(ValidationError) as exc:
            await _service(store, clock).create(
                BlastSpec(name="b", text="Hi" + "!" * 1600, channel="main", audience={"tag": "service"}),
                created_by=None,
            )
        assert exc.value.field == "text" and "too long" in exc.value.reason
        assert await store.sms.blasts() == []
        assert await store.db.fetchall("SELECT id FROM sms_outbox") == []


async def test_a_creator_that_dies_between_pages_leaves_nothing_due_and_another_writes_the_run_once(
    settings: Settings,
) -> None:
    clock = VirtualClock(T0)
    async with open_store(settings, clock.now) as store:
        await _audience(store, _people(23))
        service = _service(store, clock)
        blast = await _create_dying_before_third_page(store, service)
        assert len(await _outbox(store, blast["id"])) == 10  # two pages written ...
        assert await store.sms.claim("main", clock.now(), 100) == []  # ... and none of them due
        assert await service.run_due() == []  # the claim holds until its lease ends
        clock.advance(5 * 60 + 1)
        assert await service.run_due() == [blast["id"]]
        assert await service.run_due() == []
        rows = await _outbox(store, blast["id"])
        assert len(rows) == 21 and len({r["to_e164"] for r in rows}) == 21
        assert len(await store.sms.claim("main", clock.now(), 100)) == 19
        stored = await store.sms.blast(blast["id"])
        assert (stored["runs"], stored["materialized_runs"]) == (1, 1)


async def test_a_blast_cancelled_while_its_pages_are_written_writes_no_more(settings: Settings) -> None:
    clock = VirtualClock(T0)
    async with open_store(settings, clock.now) as store:
        await _audience(store, _people(23))
        service = _service(store, clock)

        async def cancel(blast_id: int) -> None:
            await store.sms.set_blast_state(blast_id, "cancelled")

        with _before_third_page(store, cancel):
            made = await service.create(
                BlastSpec(name="b", text="Hi", channel="main", audience={"tag": "service"}), created_by=None
            )
        rows = await _outbox(store, made["id"])
        assert len(rows) == 10 and all(r["state"] == "skipped" for r in rows)
        assert (made["state"], made["materialized_runs"]) == ("cancelled", 1)
        assert await store.sms.claim("main", clock.now(), 100) == []


async def test_a_blast_whose_last_page_fails_leaves_no_row_of_it_and_nothing_at_the_gateway(
    settings: Settings,
) -> None:
    clock = VirtualClock(T0)
    async with open_store(settings, clock.now) as store:
        people = _people(23)
        people[22]["first_name"] = "X" * 200  # its text alone is too long: on the last page
        await _audience(store, people)
        service = _service(store, clock)
        channel = RecordingChannel("main", clock)
        worker = channel_worker(store, channel, clock)
        seen: list[tuple[int, int, bool]] = []

        async def look(blast_id: int) -> None:  # while the pages are written, the sender tries
            seen.append((blast_id, len(await _outbox(store, blast_id)), await worker.step()))

        with _before_third_page(store, look), pytest.raises(ValidationError) as exc:
            await service.create(
                BlastSpec(name="b", text=TOO_LONG_FOR_P22, channel="main", audience={"tag": "service"}),
                created_by=None,
            )
        assert exc.value.field == "text" and "too long" in exc.value.reason
        ((blast_id, written, sent_any),) = seen
        assert written == 10 and not sent_any  # two pages were written, none of them due
        assert await store.sms.blasts() == []
        assert await store.db.fetchall("SELECT id FROM sms_outbox") == []
        with pytest.raises(NotFound):
            await store.sms.blast(blast_id)
        clock.advance(5 * 60 + 1)  # past the claim's lease: no scheduler finds anything to take over
        assert await service.run_due() == []
        assert not await worker.step()
        assert channel.sent == []


async def test_a_run_taken_over_from_a_creator_that_died_is_validated_as_the_creator_would_have(
    settings: Settings,
) -> None:
    """The creator died before it had read the last page, where a merge code has no value: the
    scheduler that takes the run over refuses it as the creator would have — the blast cancelled
    with the reason, every row written for it deleted, nothing ever due."""
    clock = VirtualClock(T0)
    async with open_store(settings, clock.now) as store:
        await _audience(store, _people_two_without_first_names())
        service = _service(store, clock)
        blast = await _create_dying_before_third_page(store, service)
        assert len(await _outbox(store, blast["id"])) == 10
        clock.advance(5 * 60 + 1)
        assert await service.run_due() == []  # taken over, and refused
        stored = await store.sms.blast(blast["id"])
        assert (stored["state"], stored["runs"], stored["materialized_runs"]) == ("cancelled", 1, 1)
        assert "Nofirst20, Nofirst22; 2 recipients" in stored["pause_reason"]
        assert await _outbox(store, blast["id"]) == []
        assert await service.run_due() == []
        assert await store.sms.claim("main", clock.now(), 100) == []


class CountingRenderer(Renderer):
    """The template engine, counting the texts it renders."""

    renders = 0

    def render(self, source: str, context: Mapping[str, Any], *, html: bool = False) -> str:
        self.renders += 1
        return super().render(source, context, html=html)


async def test_creating_a_blast_reads_and_renders_each_recipient_once(settings: Settings) -> None:
    clock = VirtualClock(T0)
    async with open_store(settings, clock.now) as store:
        await _audience(store, _people(23))
        renderer = CountingRenderer()
        service = _service(store, clock)
        service.render = sms_render(renderer, {"name": "Lakeside"}, clock.now)
        get_many = store.contacts.get_many
        read: list[int] = []

        async def counted(ids: Any) -> Any:
            found = await get_many(ids)
            read.extend(c.id for c in found)
            return found

        store.contacts.get_many = counted  # type: ignore[method-assign]
        made = await service.create(
            BlastSpec(
                name="b", text="Hi {{ contact.first_name }}", channel="main", audience={"tag": "service"}
            ),
            created_by=None,
        )
        assert renderer.renders == 23 and len(read) == 23 == len(set(read))
        rows = await _outbox(store, made["id"])
        assert len(rows) == 21 and {r["text"] for r in rows if r["state"] == "queued"} >= {"Hi P0", "Hi P21"}
        assert made["state"] == "running"


async def test_a_written_run_is_never_dropped(settings: Settings) -> None:
    """Undoing a refused run is conditional on the run being unfinished: once written (its rows may
    be due) neither the creator's delete nor a takeover's cancel touches it."""
    clock = VirtualClock(T0)
    async with open_store(settings, clock.now) as store:
        await _audience(store, _people(23))
        made = await _service(store, clock).create(
            BlastSpec(name="b", text="Hi", channel="main", audience={"tag": "service"}), created_by=None
        )
        assert not await store.sms.drop_run(made["id"], 1)
        assert not await store.sms.drop_run(made["id"], 1, cancel_reason="text: too long")
        stored = await store.sms.blast(made["id"])
        assert (stored["state"], stored["pause_reason"]) == ("running", None)
        assert len(await _outbox(store, made["id"])) == 21
