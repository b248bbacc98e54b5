"""The follow-up loop: cadence rules applied to contacts (on change and by a daily sweep), routing to
owner or pool, the actions on a follow-up (done, reschedule, no answer, hand-off, claim), escalation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from crm_link.clock import Clock
from crm_link.contacts import ContactFields, validate_contact
from crm_link.errors import Conflict, NotFound, ValidationError
from crm_link.followups import CadenceRow, NewFollowup, end_of_day
from crm_link.models import Contact, FollowUp, Touch, User
from crm_link.segments import compile_filter
from crm_link.store import Store
from crm_link.touches import TouchInput
from followups.rules import (
    BUILTIN_DATE_FIELDS,
    Offset,
    Rule,
    Step,
    Window,
    anchor_range,
    dealership_defaults,
    parse_rule,
    plan,
)

log = logging.getLogger("followups.service")

Notify = Callable[[int, dict[str, Any]], Awaitable[int]]
MANAGERS = "managers"  # the pool every manager and admin is in: where escalations go by default
# an escalation target: the manager of the customer's owner (none set: the managers' pool)
OWNER_MANAGER = "owner_manager"
FAILED_ATTEMPT = ("no answer", "busy")
SWEEP_CHUNK = 50_000
# the tag of a prospect made for a number nobody had (a rep's "New prospect" from that call fills it in)
UNKNOWN_NUMBER_TAG = "unknown-number"


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """What the loop needs of the settings ([followups])."""

    time_zone: str = "UTC"
    pools: dict[str, list[str]] | None = None
    unowned_pool: str = ""
    sweep_at: str = "06:00"
    call_at: str = "10:00"
    lookahead_days: int = 14
    catch_up_days: int = 7
    retry_hours: int = 4
    max_attempts: int = 3
    reply_days: int = 14  # a text back within this many days answers the follow-up the text served


@dataclass(slots=True)
class SweepReport:
    day: date
    scanned_to: int = 0
    created: int = 0
    resumed_from: int = 0


def to_rule(row: CadenceRow) -> Rule:
    return Rule(
        id=row.id,
        name=row.name,
        date_field=row.date_field,
        steps=tuple(
            Step(
                Offset.parse(s["offset"]),
                s.get("channel", "call"),
                s.get("reason", ""),
                s.get("template_id"),
                s.get("survey_id"),
            )
            for s in row.steps
        ),
        assign=row.assign,
        active=row.active,
        starts_on=row.starts_on,
        retry_hours=row.retry_hours,
        max_attempts=row.max_attempts,
        escalate_to=row.escalate_to,
        filter=row.filter,
    )


async def _no_notify(user_id: int, message: dict[str, Any]) -> int:
    return 0


class FollowupService:
    """Owns the rules' effects; handlers and the sweep worker call it, it calls the store."""

    def __init__(
        self, store: Store, clock: Clock, settings: LoopSettings, notify: Notify = _no_notify
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.pools = dict(settings.pools or {})
        self.notify = notify
        self.zone = ZoneInfo(settings.time_zone)
        self._wake = asyncio.Event()
        self.last_sweep: SweepReport | None = None

    # time -----------------------------------------------------------------------------------

    def today(self) -> date:
        return self.clock().astimezone(self.zone).date()

    def window(self) -> Window:
        return Window(self.today(), self.settings.catch_up_days, self.settings.lookahead_days)

    def _due_at(self, day: date, time_zone: str | None) -> datetime:
        h, m = (int(x) for x in self.settings.call_at.split(":"))
        return datetime.combine(day, time(h, m), tzinfo=ZoneInfo(time_zone) if time_zone else self.zone)

    # pools and targets ----------------------------------------------------------------------

    def pools_of(self, user: User) -> list[str]:
        """The pools whose unclaimed follow-ups are on this user's day."""
        mine = [name for name, members in self.pools.items() if user.username in members]
        if user.role in ("manager", "admin"):
            mine.append(MANAGERS)
        return mine

    async def pool_members(self, pool: str) -> list[User]:
        users = await self.store.users.list()
        if pool == MANAGERS:
            return [u for u in users if u.active and u.role in ("manager", "admin")]
        names = set(self.pools.get(pool, ()))
        return [u for u in users if u.active and u.username in names]

    async def check_target(self, spec: str, field: str) -> tuple[int | None, str | None]:
        """A `user:NAME`/`pool:NAME`/`managers` target as (user id, pool); 400 naming `field` if unknown."""
        if spec in (MANAGERS, OWNER_MANAGER):
            return None, MANAGERS
        kind, _, name = spec.partition(":")
        if kind == "pool":
            if name != MANAGERS and name not in self.pools:
                known = ", ".join(sorted([*self.pools, MANAGERS]))
                raise ValidationError(field, f"no pool named {name!r} (pools: {known})")
            return None, name
        if kind == "user":
            user = await self.store.users.by_username(name)
            if user is None or not user.active:
                raise ValidationError(field, f"no user named {name!r}")
            return user.id, None
        if spec == "owner":
            return None, None
        raise ValidationError(field, f"{spec!r} must be user:NAME or pool:NAME")

    async def escalation_target(self, spec: str, contact_id: int) -> tuple[int | None, str | None]:
        """Where an escalation of this contact's follow-up goes: `owner_manager` is the manager of
        the customer's owner (no owner, no manager or an inactive one: the managers' pool); a user or
        pool gone since the rule was saved is the managers' pool too."""
        if spec == OWNER_MANAGER:
            manager_id = await self.store.users.manager_of_owner(contact_id)
            return (manager_id, None) if manager_id is not None else (None, MANAGERS)
        try:
            return await self.check_target(spec, "escalate_to")
        except ValidationError:
            return None, MANAGERS

    def _for_owner(self, owner_id: int | None) -> tuple[int | None, str | None]:
        if owner_id is not None:
            return owner_id, None
        return None, self.settings.unowned_pool or None

    # rules ------------------------------------------------------------------------------------

    async def date_fields(self) -> list[str]:
        types = await self.store.followups.attribute_types()
        return sorted({*BUILTIN_DATE_FIELDS, *(n for n, t in types.items() if t == "date")})

    async def rules(self) -> list[Rule]:
        return [to_rule(r) for r in await self.store.followups.cadences()]

    async def _spec(self, data: Any) -> dict[str, Any]:
        spec = parse_rule(data, date_fields=await self.date_fields())
        if spec.assign != "owner":
            await self.check_target(spec.assign, "assign")
        await self.check_target(spec.escalate_to, "escalate_to")
        if spec.filter is not None:
            compile_filter(spec.filter, self.today())  # a bad filter is refused with its path
        return {
            "name": spec.name,
            "date_field": spec.date_field,
            "steps": [s.to_dict() for s in spec.steps],
            "assign": spec.assign,
            "filter": spec.filter,
            "retry_hours": spec.retry_hours,
            "max_attempts": spec.max_attempts,
            "escalate_to": spec.escalate_to,
            "active": spec.active,
        }

    async def save_rule(self, cadence_id: int | None, data: Any) -> CadenceRow:
        """Create or replace a cadence; the sweep is woken to apply it."""
        row = await self.store.followups.save_cadence(cadence_id, await self._spec(data), self.today())
        self._wake.set()
        return row

    async def ensure_defaults(self) -> bool:
        """Ship the dealership's default cadences once (an admin may edit or delete them after)."""
        specs = [await self._spec(d) for d in dealership_defaults()]
        return await self.store.followups.seed_once("defaults_seeded", specs, self.today())

    # applying rules -------------------------------------------------------------------------

    async def _target_for(self, rule: Rule, owner_id: int | None) -> tuple[int | None, str | None]:
        if rule.assign == "owner":
            return self._for_owner(owner_id)
        try:
            return await self.check_target(rule.assign, "assign")
        except ValidationError:  # the user or pool went away since the rule was saved
            return self._for_owner(owner_id)

    async def _planned(
        self, contacts: Sequence[Any], rules: Sequence[Rule], window: Window
    ) -> list[NewFollowup]:
        by_id = {r.id: r for r in rules}
        out = []
        for c in contacts:
            for p in plan(c.dates, rules, window, matches=c.matches):
                assignee, pool = await self._target_for(by_id[p.rule_id], c.owner_id)
                out.append(
                    NewFollowup(
                        contact_id=c.id,
                        source_key=p.key(c.id),
                        cadence_id=p.rule_id,
                        step=p.step,
                        anchor=p.anchor,
                        due_at=self._due_at(p.due_day, c.time_zone),
                        channel=p.channel,
                        reason=p.reason,
                        assignee_id=assignee,
                        pool=pool,
                    )
                )
        return out

    def _fields_filters(self, rules: Sequence[Rule]) -> tuple[list[str], dict[int, Any]]:
        fields = sorted({r.date_field for r in rules})
        return fields, {r.id: r.filter for r in rules if r.filter is not None}

    async def apply_to(self, contact_ids: Sequence[int]) -> int:
        """Apply the rules to contacts whose dates may have changed (import, API, page): missing
        follow-ups are made, open ones of a corrected date move. How many were made."""
        rules = [r for r in await self.rules() if r.active]
        ids = sorted(set(contact_ids))
        if not rules or not ids:
            return 0
        fields, filters = self._fields_filters(rules)
        window = self.window()
        created = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            scanned = [
                c
                for lo, hi in _runs(chunk)
                for c in await self.store.followups.scan(lo, hi, fields, None, filters, window.today)
                if c.id in set(chunk)
            ]
            items = await self._planned(scanned, rules, window)
            created += await self.store.followups.write_planned(items, move_contacts=chunk)
        return created

    async def sweep(self, *, chunk: int = SWEEP_CHUNK, restart: bool = False) -> SweepReport:
        """Apply every active rule to every contact, one id range per transaction. Safe to kill: a
        re-run resumes after the last finished range, and keys make repeated work a no-op."""
        today = self.today()
        report = SweepReport(today)
        rules = [r for r in await self.rules() if r.active]
        top = await self.store.followups.max_contact_id()
        state = await self.store.followups.get_state("sweep:cursor")
        start = 1
        if state and state.startswith(today.isoformat() + ":") and not restart:
            start = int(state.split(":")[1]) + 1
            report.resumed_from = start
        if rules:
            fields, filters = self._fields_filters(rules)
            window = self.window()
            ranges: dict[str, list[tuple[date, date]]] = {}
            for r in rules:
                ranges.setdefault(r.date_field, []).extend(anchor_range(r, window))
            lo = start
            while lo <= top:
                hi = lo + chunk - 1
                scanned = await self.store.followups.scan(lo, hi, fields, ranges, filters, today)
                report.created += await self.store.followups.write_planned(
                    await self._planned(scanned, rules, window)
                )
                await self.store.followups.set_state("sweep:cursor", f"{today.isoformat()}:{hi}")
                report.scanned_to = hi
                lo = hi + 1
        await self.store.followups.set_state("sweep:cursor", f"{today.isoformat()}:{max(top, start)}")
        await self.store.followups.set_state("sweep:last_day", today.isoformat())
        self.last_sweep = report
        log.info(
            "event=followup_sweep day=%s created=%d resumed_from=%d",
            today,
            report.created,
            report.resumed_from,
        )
        return report

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """The daily sweep worker (under the supervisor): sweeps when the day's sweep is due, and
        again from the start when a rule changed; then waits for the next."""
        changed = False
        while True:
            self._wake.clear()
            last = await self.store.followups.get_state("sweep:last_day")
            local = self.clock().astimezone(self.zone)
            due = last is None or (
                last < local.date().isoformat() and local.strftime("%H:%M") >= self.settings.sweep_at
            )
            if due or changed:
                await self.sweep(restart=changed)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=60)
                changed = True
            except TimeoutError:
                changed = False

    # actions --------------------------------------------------------------------------------

    def _check_future(self, when: datetime, field: str) -> None:
        if when <= self.clock():
            raise ValidationError(field, "is in the past; give a time from now on")

    async def create(
        self, contact_id: int, due_at: datetime, reason: str, *, assignee: str | None, by: User
    ) -> FollowUp:
        self._check_future(due_at, "due_at")
        assignee_id, pool = (
            (by.id, None) if assignee is None else await self.check_target(assignee, "assignee")
        )
        f, _ = await self.store.followups.create(
            contact_id, due_at, note=reason, assignee_id=assignee_id, pool=pool
        )
        if f.assignee_id is not None and f.assignee_id != by.id:
            await self._notify(
                f.assignee_id, {"type": "followup.assigned", "followup": f.to_dict(), "by": by.username}
            )
        return f

    async def done(
        self, f: FollowUp, result: str, *, note: str = "", by: User | None, touch_id: int | None = None
    ) -> FollowUp:
        if result in FAILED_ATTEMPT:
            return await self.no_answer(f, note=note, by=by)
        return await self.store.followups.done(
            f.id, result=result, note=note, user_id=by.id if by else None, touch_id=touch_id
        )

    async def reschedule(self, f: FollowUp, due_at: datetime, note: str = "") -> FollowUp:
        self._check_future(due_at, "due_at")
        return await self.store.followups.reschedule(f.id, due_at, note=note)

    async def no_answer(self, f: FollowUp, *, note: str = "", by: User | None) -> FollowUp:
        """A failed attempt: again after the rule's retry hours, or escalated after its last try."""
        retry_hours, max_attempts, escalate_to = (
            self.settings.retry_hours,
            self.settings.max_attempts,
            MANAGERS,
        )
        if f.cadence_id is not None:
            try:
                rule = await self.store.followups.cadence(f.cadence_id)
                retry_hours, max_attempts, escalate_to = rule.retry_hours, rule.max_attempts, rule.escalate_to
            except LookupError:
                pass
        if f.attempts + 1 < max_attempts:
            return await self.store.followups.no_answer(
                f.id, retry_at=self.clock() + timedelta(hours=retry_hours), escalate=None
            )
        assignee_id, pool = await self.escalation_target(escalate_to, f.contact_id)
        reason = f"no answer after {f.attempts + 1} attempts" + (f" ({by.username})" if by else "")
        if note:
            reason += f": {note}"
        updated = await self.store.followups.no_answer(
            f.id, retry_at=None, escalate=(assignee_id, pool, reason)
        )
        await self.store.audit.write(
            "followup.escalate",
            user_id=by.id if by else None,
            object_type="followup",
            object_id=f.id,
            to=escalate_to,
            reason=reason,
        )
        await self._tell(
            assignee_id, pool, {"type": "followup.assigned", "followup": updated.to_dict(), "by": None}
        )
        return updated

    async def handoff(self, f: FollowUp, to: str, note: str, *, by: User) -> FollowUp:
        assignee_id, pool = await self.check_target(to, "to")
        text = f"Handed off by {by.username}" + (f": {note}" if note else "")
        updated = await self.store.followups.assign(f.id, assignee_id=assignee_id, pool=pool, note=text)
        await self.store.audit.write(
            "followup.handoff",
            user_id=by.id,
            object_type="followup",
            object_id=f.id,
            frm=f.assignee_username,
            to=to,
            note=note,
        )
        message = {"type": "followup.handoff", "followup": updated.to_dict(), "by": by.username, "note": note}
        await self._tell(assignee_id, pool, message)
        return updated

    async def claim(self, f: FollowUp, *, by: User) -> FollowUp:
        updated = await self.store.followups.claim(f.id, by.id)
        if f.pool:
            for member in await self.pool_members(f.pool):
                if member.id != by.id:
                    await self._notify(member.id, {"type": "followup.claimed", "id": f.id, "by": by.username})
        await self.store.audit.write("followup.claim", user_id=by.id, object_type="followup", object_id=f.id)
        return updated

    async def _notify(self, user_id: int, message: dict[str, Any]) -> None:
        """Send a user a follow-up event, then `day_changed` so an open My Day re-renders itself."""
        await self.notify(user_id, message)
        await self.notify(user_id, {"type": "day_changed", "reason": message.get("type", "")})

    async def followup_added(self, f: FollowUp) -> None:
        """A follow-up made outside this service (a missed call, an SMS reply) goes live on My Day."""
        await self._tell(f.assignee_id, f.pool, {"type": "day_changed", "reason": f.kind}, plain=True)

    async def changed(self, followup_ids: Sequence[int], reason: str) -> None:
        """Follow-ups changed outside this service (a cadence email refused, so now a call): each
        one's assignee (or its pool) is told `day_changed`, so an open My Day re-renders itself."""
        for fid in followup_ids:
            try:
                f = await self.store.followups.get(fid)
            except NotFound:
                continue
            await self._tell(f.assignee_id, f.pool, {"type": "day_changed", "reason": reason}, plain=True)

    async def _tell(
        self, assignee_id: int | None, pool: str | None, message: dict[str, Any], *, plain: bool = False
    ) -> None:
        send = self.notify if plain else self._notify
        if assignee_id is not None:
            await send(assignee_id, message)
        elif pool is not None:
            for member in await self.pool_members(pool):
                await send(member.id, message)

    async def served(self, contact_id: int, user: User, followup_id: int | None = None) -> FollowUp | None:
        """The follow-up a call/message with this contact serves (the one named, else the soonest due)."""
        if followup_id is not None:
            f = await self.store.followups.get(followup_id)
            if f.contact_id != contact_id:
                raise ValidationError("followup_id", "is a follow-up of another customer")
            return f if f.status == "open" else None
        until = end_of_day(self.clock(), user.time_zone or self.settings.time_zone)
        return await self.store.followups.served_by(contact_id, user.id, self.pools_of(user), until)

    async def call_result(
        self,
        contact_id: int,
        user: User,
        disposition: str,
        *,
        note: str = "",
        touch_id: int | None = None,
        followup_id: int | None = None,
    ) -> FollowUp | None:
        """A call answered with a disposition closes the follow-up it served (no answer retries)."""
        f = await self.served(contact_id, user, followup_id)
        if f is None:
            return None
        return await self.done(f, disposition, note=note, by=user, touch_id=touch_id)

    async def reassign_owner(
        self, contact_id: int, old_owner_id: int | None, new_owner_id: int | None, by: User
    ) -> int:
        """A contact's new owner takes over the old owner's open follow-ups (audited)."""
        moved = await self.store.followups.move_owner(contact_id, old_owner_id, new_owner_id)
        await self.store.audit.write(
            "contact.owner_change",
            user_id=by.id,
            object_type="contact",
            object_id=contact_id,
            old_owner_id=old_owner_id,
            new_owner_id=new_owner_id,
            followups_moved=moved,
        )
        if moved and new_owner_id is not None and new_owner_id != by.id:
            await self._notify(
                new_owner_id, {"type": "followup.reassigned", "contact_id": contact_id, "count": moved}
            )
        if moved and old_owner_id is not None:
            await self.notify(old_owner_id, {"type": "day_changed", "reason": "followup.reassigned"})
        return moved

    # what customers send back ------------------------------------------------------------------

    async def sms_reply(self, contact: Contact, touch: Touch, text: str) -> FollowUp | None:
        """A customer's text back to a text sent for a follow-up (within `reply_days`): the served
        follow-up records it (result `replied`; an open one is closed by it), and the reply itself is
        a "Replies" item on the day of the customer's owner (nobody: the served follow-up's assignee,
        else its pool, else the unowned pool) to act on or dismiss, one per inbound text. None when
        the text served none (the caller then puts the reply on the owner's day). A survey's reply
        parser hooks in before this."""
        if not touch.number:
            return None
        since = touch.started_at - timedelta(days=self.settings.reply_days)
        f = await self.store.followups.texted_for(touch.number, since)
        if f is None or f.contact_id != contact.id:
            return None
        try:
            await self.store.followups.answered(f.id, touch_id=touch.id, note=f"SMS reply: {text[:200]}")
        except Conflict:
            pass  # the served follow-up already has a reply: this one is a Replies item all the same
        about = (f.note or "").strip().splitlines()
        answers = " · ".join(x for x in (f.cadence_name, about[0] if about else "") if x)
        made = await self.store.touches.add_followup(
            contact.id,
            touch.started_at,
            kind="sms_reply",
            note=f"SMS reply: {text[:200]}" + (f"\nAnswers: {answers}" if answers else ""),
            assignee_id=contact.owner_id or f.assignee_id,
            pool=f.pool,
            created_by_touch_id=touch.id,
        )
        # None: this inbound text already made its Replies item (a redelivery)
        return made or await self.store.followups.get(f.id)

    async def inbound_text(self, contact: Contact | None, touch: Touch, text: str) -> bool:
        """The follow-up side of a customer's text (the SMS reply handler): True when it answered a
        follow-up, or when nobody has the number (its prospect, if the number is a usable one, came
        with the touch: `unknown_sender`); False leaves a reply follow-up for the owner."""
        if contact is None:
            return True
        return await self.sms_reply(contact, touch, text) is not None

    async def unknown_call(self, item: TouchInput) -> Touch:
        """A missed call from a number no contact has (the call service's hook): the call's touch
        is recorded together with a prospect for the number (the touch theirs) and a follow-up on
        the unowned pool, in one transaction. Without a usable number the touch is recorded alone."""
        fields = self._prospect_fields(item.number)
        if fields is None:
            return await self.store.touches.record(item)
        touch, _ = await self.store.record_touch_with_prospect(
            item, fields, followup_kind="missed_call", followup_note=f"Missed call from {item.number}"
        )
        return touch

    def _prospect_fields(self, number: str | None) -> ContactFields | None:
        """A prospect for a number no contact has, None when the number is not a usable one."""
        if not number:
            return None
        try:
            return validate_contact(
                {
                    "first_name": "Unknown",
                    "last_name": number,
                    "phones": [number],
                    "tags": ["prospect", UNKNOWN_NUMBER_TAG],
                },
                region=self.store.region,
            )
        except ValidationError as exc:
            log.info("event=unknown_number_unusable number=%r reason=%r", number, str(exc))
            return None

    async def unknown_sender(self, item: TouchInput) -> Touch:
        """A text from a number no contact has (the inbound SMS hook): its touch is recorded together
        with a prospect for the number (the touch theirs) and a follow-up on the unowned pool, so it
        is on the day of everyone in it, in one transaction. Without a usable number the touch is
        recorded alone."""
        fields = self._prospect_fields(item.number)
        if fields is None:
            return await self.store.touches.record(item)
        touch, _ = await self.store.record_touch_with_prospect(
            item,
            fields,
            followup_kind="sms_reply",
            followup_note=f"SMS from a new number: {item.summary[:200]}",
        )
        return touch

    async def my_day(self, user: User, *, limit: int = 500) -> list[FollowUp]:
        """Open follow-ups due by the end of the user's day: theirs and their pools' unclaimed ones."""
        until = end_of_day(self.clock(), user.time_zone or self.settings.time_zone)
        page = await self.store.followups.search(
            mine=(user.id, self.pools_of(user)), due_before=until, limit=limit
        )
        return page.items


def _runs(ids: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted ids as (first, last) ranges no wider than a few thousand ids (one scan each)."""
    out: list[tuple[int, int]] = []
    for i in ids:
        if out and i - out[-1][0] < 5000:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out
