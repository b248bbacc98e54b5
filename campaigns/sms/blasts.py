"""SMS blasts: validate, resolve the audience, render per recipient, queue one outbox row each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from campaigns.sms.quiet import QUIET_HOURS, quiet_until
from crm_link.clock import system_clock
from crm_link.errors import ValidationError
from crm_link.models import Contact
from crm_link.sms import OutboxRow
from crm_link.store import Store

log = logging.getLogger("campaigns.sms.blasts")

# (text) -> {"encoding": "gsm7"|"ucs2", "segments": n, "warnings": [...]}; ValueError when too long
Analyzer = Callable[[str], dict[str, Any]]
# (template, contact) -> rendered text; raises ValueError naming a missing merge code, or a
# ValidationError when the template itself cannot be rendered for anyone (e.g. too costly)
Renderer = Callable[[str, Contact], str]
SENDABLE_KINDS = ("mobile", "fixed_or_mobile", "voip", "unknown")
DUPLICATE = "duplicate number"
NO_CONSENT = "no consent to texts"


@dataclass(frozen=True, slots=True)
class BlastSpec:
    name: str
    text: str
    channel: str
    audience: dict[str, Any]
    send_at: datetime | None = None
    cron: str | None = None
    time_zone: str = "UTC"
    rate_per_second: float | None = None
    survey_id: int | None = None  # a one-question survey the replies answer (checked by the caller)


@dataclass(slots=True)
class Materialized:
    rows: list[OutboxRow] = field(default_factory=list)
    duplicates: int = 0


def pick_number(contact: Contact) -> tuple[str | None, str | None]:
    """The number to text and, when there is none, why."""
    if not contact.phones:
        return None, "no phone number"
    valid = [p for p in contact.phones if p.valid]
    if not valid:
        return None, "invalid number"
    mobile = [p for p in valid if p.kind in SENDABLE_KINDS]
    if not mobile:
        return None, "landline"
    return mobile[0].e164, None


# contacts read, rendered and queued at a time: a blast's memory is one page of contacts and texts,
# however large its audience
PAGE = 5_000


@dataclass(slots=True)
class Problems:
    """What rendering a blast's text for its recipients found wrong, and nothing else: each missing
    merge code with its count and first three recipients (a text too long or a template too costly
    stops at once, as a ValidationError)."""

    missing: dict[str, tuple[int, list[str]]] = field(default_factory=dict)

    def add(self, problem: str, contact: Contact) -> None:
        count, names = self.missing.get(problem, (0, []))
        self.missing[problem] = (
            count + 1,
            names if len(names) >= 3 else [*names, contact.name or str(contact.id)],
        )

    def error(self) -> ValidationError | None:
        if not self.missing:
            return None
        detail = "; ".join(
            f"{problem} (e.g. {', '.join(names)}; {count} recipients)"
            for problem, (count, names) in list(self.missing.items())[:5]
        )
        return ValidationError("text", detail, code="missing_merge_code")


class BlastService:
    """Creates blasts and turns each due run into outbox rows in one transaction."""

    def __init__(
        self,
        store: Store,
        *,
        channels: Callable[[], list[str]],
        render: Renderer,
        analyze: Analyzer,
        quiet_start: str,
        quiet_end: str,
        clock: Callable[[], datetime] = system_clock,
        segment_ids: Callable[[Any], Any] | None = None,
        claim_lease: timedelta = timedelta(minutes=10),
        check_codes: Callable[[str], None] | None = None,
        require_consent: bool = False,
        page_size: int = PAGE,
    ) -> None:
        self.store = store
        self.channels = channels
        self.render = render
        self.analyze = analyze
        self.quiet_start = quiet_start
        self.quiet_end = quiet_end
        self.clock = clock
        self.segment_ids = segment_ids
        self.claim_lease = claim_lease
        self.check_codes = check_codes  # raises a ValidationError naming a misspelt merge code
        self.require_consent = require_consent  # skip customers whose consent to texts is not recorded
        self.page_size = page_size

    async def audience_ids(self, audience: dict[str, Any]) -> list[int]:
        """Contact ids of an audience: {contact_ids}, {tag}, {segment} or {numbers} (from a CSV)."""
        if not isinstance(audience, dict) or len(audience) != 1:
            raise ValidationError("audience", "give exactly one of contact_ids, tag, segment, csv")
        ((kind, value),) = audience.items()
        if kind == "contact_ids":
            if not isinstance(value, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in value
            ):
                raise ValidationError("audience.contact_ids", "must be a list of contact ids")
            found: set[int] = set()
            for start in range(0, len(value), self.page_size):
                found.update(
                    c.id for c in await self.store.contacts.get_many(value[start : start + self.page_size])
                )
            missing = [i for i in value if i not in found]
            if missing:
                raise ValidationError("audience.contact_ids", f"no such contacts: {missing[:10]}")
            return list(dict.fromkeys(value))
        if kind == "tag":
            if not isinstance(value, str) or not value.strip():
                raise ValidationError("audience.tag", "must be a tag name")
            return await self.store.contacts.ids_with_tag(value.strip())
        if kind == "segment":
            if self.segment_ids is None:
                raise ValidationError("audience.segment", "segments are not available")
            return list(await self.segment_ids(value))
        if kind == "csv":
            return await self._csv_ids(value)
        raise ValidationError("audience", f"unknown audience kind {kind!r}")

    async def _audience_pages(self, audience: dict[str, Any]) -> AsyncIterator[Sequence[int]]:
        """An audience's contact ids a page at a time, in id order for a tag (read a page at a time
        from the tag's index), in the given order otherwise."""
        if isinstance(audience, dict) and len(audience) == 1 and isinstance(audience.get("tag"), str):
            tag = audience["tag"].strip()
            if tag:
                after = 0
                while page := await self.store.contacts.ids_with_tag(tag, after=after, limit=self.page_size):
                    yield page
                    after = page[-1]
                return
        ids = await self.audience_ids(audience)
        for start in range(0, len(ids), self.page_size):
            yield ids[start : start + self.page_size]

    async def _csv_ids(self, text: Any) -> list[int]:
        """Contacts of a CSV's phone column; every number must belong to a contact."""
        from crm_link.phones import phones_from_csv

        ids: list[int] = []
        unknown = []
        for e164 in phones_from_csv(text, self.store.region, field="audience.csv"):
            found = await self.store.contacts.ids_by_phone(e164)
            if not found:
                unknown.append(e164)
            ids += found[:1]
        if unknown:
            raise ValidationError(
                "audience.csv",
                "not contacts: " + ", ".join(unknown[:10]) + (" …" if len(unknown) > 10 else ""),
            )
        return list(dict.fromkeys(ids))

    def describe(self, text: str) -> dict[str, Any]:
        """The preview of a rendered text: encoding, segments, warnings; ValidationError if too long."""
        try:
            info = self.analyze(text)
        except ValueError as exc:
            raise ValidationError("text", str(exc)) from None
        return {
            "text": text,
            "encoding": info["encoding"],
            "segments": info["segments"],
            "warnings": list(info.get("warnings", [])),
        }

    def check_text(self, text: Any) -> str:
        if not isinstance(text, str) or not text.strip():
            raise ValidationError("text", "is empty")
        if self.check_codes is not None:
            self.check_codes(text)
        return text

    def check_spec(self, spec: BlastSpec) -> None:
        """What can be wrong with a blast before its audience is read."""
        self.check_text(spec.text)
        if not spec.name.strip():
            raise ValidationError("name", "is empty")
        if spec.channel not in self.channels():
            raise ValidationError(
                "channel", f"unknown channel {spec.channel!r}; configured: {self.channels()}"
            )
        if spec.send_at is not None and spec.send_at <= self.clock():
            raise ValidationError("send_at", "is in the past")
        if spec.cron is not None and not croniter.is_valid(spec.cron):
            raise ValidationError("cron", f"{spec.cron!r} is not a cron expression (e.g. '0 9 * * *')")
        if spec.rate_per_second is not None and spec.rate_per_second <= 0:
            raise ValidationError("rate_per_second", "must be greater than 0")

    async def validate(self, spec: BlastSpec) -> int:
        """Everything that can be wrong before a blast is stored to run later (at `send_at`, or
        by `cron`): its audience read and its text rendered for each recipient a page at a time,
        keeping nothing but the problems. The number of recipients."""
        self.check_spec(spec)
        problems = Problems()
        count = 0
        async for page in self._audience_pages(spec.audience):
            contacts = await self.store.contacts.get_many(page)
            # the text is the sender's own template: render it off the event loop
            await asyncio.to_thread(self._check_page, spec.text, contacts, problems)
            count += len(contacts)
        if not count and spec.cron is None:
            raise ValidationError("audience", "has no contacts")
        if (error := problems.error()) is not None:
            raise error
        return count

    def _check_page(self, text: str, contacts: list[Contact], problems: Problems) -> None:
        for c in contacts:
            self._render_checked(text, c, problems)

    def _render_checked(self, text: str, c: Contact, problems: Problems) -> tuple[str, str, int] | None:
        """The text rendered for `c`, its encoding and segments; None, recorded in `problems`, when a
        merge code has no value for `c`. A ValidationError for a template too costly to render or a
        text too long."""
        try:
            out = self.render(text, c)
        except ValidationError:
            raise
        except ValueError as exc:
            problems.add(str(exc), c)
            return None
        try:
            info = self.analyze(out)
        except ValueError as exc:
            raise ValidationError("text", f"for {c.name or c.id}: {exc}") from None
        return out, info["encoding"], info["segments"]

    def next_run(self, spec_cron: str, time_zone: str, after: datetime) -> datetime:
        local = after.astimezone(ZoneInfo(time_zone))
        return croniter(spec_cron, local).get_next(datetime).astimezone(UTC)

    async def create(self, spec: BlastSpec, *, created_by: int | None) -> dict[str, Any]:
        """Validate and store a blast. One to run later (`send_at`, `cron`) is validated, then
        stored. One with neither is queued at once, reading and rendering each recipient once: it
        is stored with its one run already claimed (no scheduler can run it a second time, nor take
        it over while the claim's lease is renewed) and its pages are validated and written in one
        pass, due to no channel before the last page is written; when a page fails validation the
        blast and every row written for it are deleted in one transaction before the error is
        raised, so a refused blast leaves nothing behind."""
        if spec.send_at is not None or spec.cron is not None:
            await self.validate(spec)
            return await self._store_blast(spec, created_by, send_now=False)
        self.check_spec(spec)
        pages = self._audience_pages(spec.audience)
        first = await anext(pages, None)  # the audience's own errors, before anything is stored
        if first is None:
            raise ValidationError("audience", "has no contacts")
        blast = await self._store_blast(spec, created_by, send_now=True)
        try:
            await self._write_run(blast, 1, _prepend(first, pages), strict=True)
        except ValidationError as exc:
            await self.store.sms.drop_run(blast["id"], 1)
            log.info("event=blast_refused blast=%d field=%s code=%s", blast["id"], exc.field, exc.code)
            raise
        return await self.store.sms.blast(blast["id"])

    async def _store_blast(
        self, spec: BlastSpec, created_by: int | None, *, send_now: bool
    ) -> dict[str, Any]:
        if spec.cron:
            first: datetime | None = spec.send_at or self.next_run(spec.cron, spec.time_zone, self.clock())
        else:
            first = None if send_now else spec.send_at
        blast_id = await self.store.sms.create_blast(
            name=spec.name.strip(),
            text=spec.text,
            channel=spec.channel,
            audience=spec.audience,
            created_by=created_by,
            send_at=spec.send_at,
            cron=spec.cron,
            time_zone=spec.time_zone,
            rate_per_second=spec.rate_per_second,
            survey_id=spec.survey_id,
            next_run_at=first,
            claim_lease=self.claim_lease if send_now else None,
        )
        return await self.store.sms.blast(blast_id)

    def rows_for(
        self,
        blast: dict[str, Any],
        contacts: list[Contact],
        at: datetime,
        *,
        render_texts: bool = True,
        seen: set[str] | None = None,
        problems: Problems | None = None,
    ) -> Materialized:
        """One outbox row per recipient of a page: rendered, deduplicated by number (within the page,
        and against `seen` when given), skipped with a reason.

        With `problems` the page is validated as it is rendered, each recipient's text rendered
        once: the text is rendered for every contact (also those skipped), a missing merge code is
        recorded in `problems` rather than skipping the recipient, and once `problems` holds one no
        rows are made; a text too long or a template too costly raises a ValidationError."""
        out = Materialized()
        seen = set() if seen is None else seen
        checked: list[tuple[str, str, int] | None] = []
        if problems is not None:
            checked = [self._render_checked(blast["text"], c, problems) for c in contacts]
            if problems.missing:
                return out
        for i, c in enumerate(contacts):
            number, why = pick_number(c)
            if number is not None and number in seen:
                out.duplicates += 1
                continue
            text, encoding, segments = blast["text"], "gsm7", 1
            state, reason = "queued", None
            if number is None:
                state, reason = "skipped", why
                number = c.phones[0].e164 if c.phones else f"none:{c.id}"
            elif c.sms_opt_out:
                state, reason = "skipped", "opted out of SMS"
            elif self.require_consent and not c.sms_consent:
                state, reason = "skipped", NO_CONSENT
            elif problems is not None:
                rendered = checked[i]
                assert rendered is not None  # a missing merge code made no rows above
                text, encoding, segments = rendered
            elif render_texts:
                try:
                    text, encoding, segments = self._render_one(blast["text"], c)
                except ValueError as exc:
                    state, reason = "skipped", str(exc)
            if number in seen:
                out.duplicates += 1
                continue
            seen.add(number)
            hold = (
                quiet_until(at, c.time_zone, self.quiet_start, self.quiet_end) if state == "queued" else None
            )
            out.rows.append(
                OutboxRow(
                    to_e164=number,
                    text=text,
                    channel=blast["channel"],
                    not_before=hold or at,
                    contact_id=c.id,
                    user_id=blast["created_by"],
                    survey_id=blast.get("survey_id"),
                    encoding=encoding,
                    segments=segments,
                    state=state,
                    reason=QUIET_HOURS if hold else reason,
                    time_zone=c.time_zone,
                )
            )
        return out

    async def dry_run(self, audience: dict[str, Any], at: datetime | None = None) -> dict[str, Any]:
        """Who a blast to `audience` sent at `at` (default now) would reach, who it would skip and
        why, and how many quiet hours would hold and until when: nothing is stored. Read a page at a
        time; the numbers already counted are kept to find duplicates."""
        at = at or self.clock()
        reasons: dict[str, int] = {}
        seen: set[str] = set()
        total = sendable = held = duplicates = 0
        held_until: datetime | None = None
        async for page in self._audience_pages(audience):
            total += len(page)
            contacts = await self.store.contacts.get_many(page)
            made = self.rows_for(
                {"text": "", "channel": "", "created_by": None}, contacts, at, render_texts=False, seen=seen
            )
            duplicates += made.duplicates
            for r in made.rows:
                if r.state == "skipped":
                    reasons[r.reason or "skipped"] = reasons.get(r.reason or "skipped", 0) + 1
                elif r.state == "queued":
                    sendable += 1
                    if r.not_before > at:
                        held += 1
                        held_until = r.not_before if held_until is None else min(held_until, r.not_before)
        if duplicates:
            reasons[DUPLICATE] = duplicates
        return {
            "audience": total,
            "recipients": sendable,
            "skipped": [{"reason": k, "count": v} for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])],
            "held": held,
            "held_until": held_until.astimezone(UTC).isoformat() if held_until else None,
            "send_at": at.astimezone(UTC).isoformat(),
        }

    def _render_one(self, text: str, contact: Contact) -> tuple[str, str, int]:
        out = self.render(text, contact)
        info = self.analyze(out)
        return out, info["encoding"], info["segments"]

    async def _materialize_run(self, blast_id: int, run: int) -> tuple[int, int] | None:
        """Write run `run` (claimed by the caller) of a blast to its audience as of now. The run of
        a blast queued at once (no `send_at`, no `cron`) is one its creator claimed and stopped
        writing before it was validated in full: it is validated as the creator would have (see
        `create`), and one that fails is cancelled, with the reason, and its rows deleted: then
        None."""
        blast = await self.store.sms.blast(blast_id)
        strict = blast["send_at"] is None and blast["cron"] is None
        try:
            return await self._write_run(blast, run, self._audience_pages(blast["audience"]), strict=strict)
        except ValidationError as exc:
            if not strict:
                raise
            log.warning("event=blast_run_refused blast=%d run=%d reason=%s", blast_id, run, exc)
            await self.store.sms.drop_run(blast_id, run, cancel_reason=str(exc))
            return None

    async def _write_run(
        self, blast: dict[str, Any], run: int, pages: AsyncIterator[Sequence[int]], *, strict: bool
    ) -> tuple[int, int]:
        """Write claimed run `run` of a blast to the contact ids of `pages`, a page at a time: each
        page read, rendered off the event loop and written in its own transaction (renewing the
        claim); a number already in the run (an earlier page, or an earlier claimant's pages) is a
        duplicate and not written again. `strict`: each page is validated as it is rendered (see
        `rows_for`); once a merge code is missing nothing more is written, the rest is read to count
        the recipients it misses, and a ValidationError is raised at the end, the run unfinished.
        Returns (queued, skipped) of the run; (0, 0) when the run was not this caller's to write any
        more (cancelled, refused, or finished by a claimant that took it over)."""
        blast_id = blast["id"]
        now = self.clock()
        problems = Problems() if strict else None
        considered = 0
        async for page in pages:
            contacts = await self.store.contacts.get_many(page)
            made = await asyncio.to_thread(self.rows_for, blast, contacts, now, problems=problems)
            considered += len(contacts)
            del contacts
            if problems is not None and problems.missing:
                continue  # refused: read on only to count who misses what
            if not await self.store.sms.materialize_page(blast_id, run, made.rows, lease=self.claim_lease):
                log.info("event=blast_run_stopped blast=%d run=%d reason=not_open", blast_id, run)
                return 0, 0
        if problems is not None:
            if not considered:
                raise ValidationError("audience", "has no contacts")
            if (error := problems.error()) is not None:
                raise error
        done = await self.store.sms.finish_run(blast_id, run)
        if done is None:
            return 0, 0
        queued, skipped = done
        log.info(
            "event=blast_run blast=%d run=%d queued=%d skipped=%d duplicates=%d",
            blast_id,
            run,
            queued,
            skipped,
            considered - queued - skipped,
        )
        return queued, skipped

    async def run_due(self) -> list[int]:
        """Claim and start every blast whose run is due (or whose claimed run was left unwritten);
        returns their ids. Each run is claimed once, atomically, before its audience is read, so
        schedulers that race (a slow run and the next tick, two instances) never both run it."""
        started = []
        now = self.clock()
        for blast in await self.store.sms.due_blasts(now):
            if blast["state"] == "paused":
                continue
            nxt = self.next_run(blast["cron"], blast["time_zone"], now) if blast["cron"] else None
            run = await self.store.sms.claim_run(blast, next_run_at=nxt, lease=self.claim_lease)
            if run is None:
                continue  # another scheduler claimed it
            try:
                if await self._materialize_run(blast["id"], run) is not None:
                    started.append(blast["id"])
            except ValidationError as exc:
                log.warning("event=blast_run_failed blast=%d reason=%s", blast["id"], exc)
                await self.store.sms.set_blast_state(blast["id"], "paused", reason=str(exc))
        return started


async def _prepend(first: Sequence[int], rest: AsyncIterator[Sequence[int]]) -> AsyncIterator[Sequence[int]]:
    yield first
    async for page in rest:
        yield page
