"""Cadence rules (pure): parse and check a rule, and plan the follow-ups a contact's dates call for.

A rule counts from one date of the contact (an attribute such as `delivery_date`) and has steps with
offsets (`+4d`, `+2w`, `+17mo`, `+1y`, `-30d`). `plan` is a function of the contact's dates, the
rules and "today" only: no store, no clock.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from crm_link.errors import ValidationError

CHANNELS = ("call", "sms", "email")
_OFFSET = re.compile(r"^([+-])(\d{1,4})(d|w|mo|y)$")
BUILTIN_DATE_FIELDS = (
    "purchase_date",
    "delivery_date",
    "last_service_date",
    "birthday",
    "insurance_expiry",
    "inspection_expiry",
)


@dataclass(frozen=True, slots=True)
class Offset:
    """A signed distance from the rule's date, in days or calendar months."""

    sign: int
    amount: int
    unit: str  # d | w | mo | y

    @classmethod
    def parse(cls, text: Any, field_name: str = "offset") -> Offset:
        if not isinstance(text, str) or not (m := _OFFSET.match(text.strip())):
            raise ValidationError(
                field_name, f"{text!r} is not an offset such as +4d, +2w, +17mo, +1y or -30d"
            )
        return cls(1 if m.group(1) == "+" else -1, int(m.group(2)), m.group(3))

    def apply(self, day: date) -> date:
        """The day this offset lands on from `day` (month ends clamp: Jan 31 + 1mo = Feb 28/29)."""
        if self.unit in ("d", "w"):
            return day + timedelta(days=self.sign * self.amount * (7 if self.unit == "w" else 1))
        months = self.sign * self.amount * (12 if self.unit == "y" else 1)
        y, m = divmod(day.month - 1 + months, 12)
        year, month = day.year + y, m + 1
        return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))

    def __str__(self) -> str:
        return f"{'+' if self.sign > 0 else '-'}{self.amount}{self.unit}"


@dataclass(frozen=True, slots=True)
class Step:
    offset: Offset
    channel: str = "call"
    reason: str = ""
    template_id: int | None = None
    survey_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "offset": str(self.offset),
            "channel": self.channel,
            "reason": self.reason,
            "template_id": self.template_id,
            "survey_id": self.survey_id,
        }


@dataclass(frozen=True, slots=True)
class Rule:
    """A checked cadence rule; `starts_on` is the day it took effect (earlier steps are never made)."""

    id: int
    name: str
    date_field: str
    steps: tuple[Step, ...]
    assign: str = "owner"  # owner | pool:NAME | user:NAME
    active: bool = True
    starts_on: date = date.min
    retry_hours: int = 4
    max_attempts: int = 3
    escalate_to: str = "managers"  # managers | owner_manager | pool:NAME | user:NAME
    filter: Any = None  # a segment filter the contact must match (e.g. visits >= 3)


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """What a client sends to create or replace a rule (checked, not yet stored)."""

    name: str
    date_field: str
    steps: tuple[Step, ...]
    assign: str
    active: bool
    retry_hours: int
    max_attempts: int
    escalate_to: str
    filter: Any = None
    targets: dict[str, str] = field(default_factory=dict)  # "assign"/"escalate_to" -> its target


CADENCE_FIELDS = (
    "name",
    "date_field",
    "steps",
    "assign",
    "active",
    "retry_hours",
    "max_attempts",
    "escalate_to",
    "filter",
)


def _target(value: Any, name: str, *, allow: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(name, f"must be one of {', '.join(allow)}")
    value = value.strip()
    if value in allow:
        return value
    kind, _, who = value.partition(":")
    if kind in ("pool", "user") and who.strip():
        return f"{kind}:{who.strip()}"
    raise ValidationError(name, f"{value!r} must be {' | '.join(allow)} | pool:NAME | user:NAME")


def _int(data: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(name, f"must be a whole number from {low} to {high}")
    return value


def parse_rule(data: Any, *, date_fields: Iterable[str]) -> RuleSpec:
    """Check a cadence as sent over the API; ValidationError names the bad field (steps[1].offset)."""
    if not isinstance(data, Mapping):
        raise ValidationError("body", "must be a JSON object")
    for key in data:
        if key not in CADENCE_FIELDS:
            raise ValidationError(key, "unknown field")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise ValidationError("name", "is required (1-100 characters)")
    known = set(date_fields)
    date_field = data.get("date_field")
    if not isinstance(date_field, str) or date_field.removeprefix("attributes.") not in known:
        raise ValidationError(
            "date_field",
            f"{date_field!r} is not a date field; known: {', '.join(sorted(known))}",
        )
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not 1 <= len(raw_steps) <= 20:
        raise ValidationError("steps", "must be a list of 1 to 20 steps")
    steps = []
    for i, s in enumerate(raw_steps):
        path = f"steps[{i}]"
        if not isinstance(s, Mapping):
            raise ValidationError(path, "must be an object with offset, channel, reason")
        for key in s:
            if key not in ("offset", "channel", "reason", "template_id", "survey_id"):
                raise ValidationError(f"{path}.{key}", "unknown field")
        channel = s.get("channel", "call")
        if channel not in CHANNELS:
            raise ValidationError(f"{path}.channel", f"must be one of {', '.join(CHANNELS)}")
        reason = s.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 500:
            raise ValidationError(f"{path}.reason", "must be text of at most 500 characters")
        ids: dict[str, int | None] = {}
        for key in ("template_id", "survey_id"):
            v = s.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValidationError(f"{path}.{key}", "must be an id")
            ids[key] = v
        if channel == "email" and ids["template_id"] is None:
            raise ValidationError(f"{path}.template_id", "an email step needs a template")
        if channel == "sms" and ids["template_id"] is None and ids["survey_id"] is None:
            raise ValidationError(
                f"{path}.template_id", "an sms step needs a saved text (or a one-question survey_id)"
            )
        steps.append(
            Step(
                Offset.parse(s.get("offset"), f"{path}.offset"),
                channel,
                reason.strip(),
                ids["template_id"],
                ids["survey_id"],
            )
        )
    active = data.get("active", True)
    if not isinstance(active, bool):
        raise ValidationError("active", "must be true or false")
    assign = _target(data.get("assign", "owner"), "assign", allow=("owner",))
    escalate_to = _target(
        data.get("escalate_to", "managers"), "escalate_to", allow=("managers", "owner_manager")
    )
    flt = data.get("filter")
    if flt is not None and not isinstance(flt, Mapping):
        raise ValidationError("filter", "must be a segment filter object")
    return RuleSpec(
        name=name.strip(),
        date_field=date_field.removeprefix("attributes."),
        steps=tuple(steps),
        assign=assign,
        active=active,
        retry_hours=_int(data, "retry_hours", 4, 1, 24 * 30),
        max_attempts=_int(data, "max_attempts", 3, 1, 20),
        escalate_to=escalate_to,
        filter=dict(flt) if flt is not None else None,
    )


@dataclass(frozen=True, slots=True)
class Window:
    """Which due days get a follow-up now: from `today - catch_up_days` (a sweep that missed a few
    days catches up) to `today + lookahead_days` (reps see what is coming)."""

    today: date
    catch_up_days: int = 7
    lookahead_days: int = 14

    @property
    def first(self) -> date:
        return self.today - timedelta(days=self.catch_up_days)

    @property
    def last(self) -> date:
        return self.today + timedelta(days=self.lookahead_days)


@dataclass(frozen=True, slots=True)
class Planned:
    """One follow-up a rule calls for: its idempotency key is (rule, contact, step, anchor)."""

    rule_id: int
    step: int
    anchor: date
    due_day: date
    channel: str
    reason: str

    def key(self, contact_id: int) -> str:
        return f"cadence:{self.rule_id}:{contact_id}:{self.step}:{self.anchor.isoformat()}"


def parse_day(value: Any) -> date | None:
    """A stored date attribute ('2026-03-01' or a longer ISO time) as a date; None if it is not one."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def due_day(rule: Rule, step: int, anchor: date) -> date:
    return rule.steps[step].offset.apply(anchor)


def plan(
    dates: Mapping[str, Any],
    rules: Sequence[Rule],
    window: Window,
    *,
    matches: Mapping[int, bool] | None = None,
) -> list[Planned]:
    """The follow-ups the rules call for now from these dates: steps due inside the window and not
    before the day their rule took effect. `matches[rule.id]` False skips a rule whose filter the
    contact does not meet."""
    out: list[Planned] = []
    for rule in rules:
        if not rule.active or (matches is not None and not matches.get(rule.id, True)):
            continue
        anchor = parse_day(dates.get(rule.date_field))
        if anchor is None:
            continue
        for i, step in enumerate(rule.steps):
            day = step.offset.apply(anchor)
            if window.first <= day <= window.last and day >= rule.starts_on:
                out.append(Planned(rule.id, i, anchor, day, step.channel, step.reason))
    return out


def anchor_range(rule: Rule, window: Window) -> list[tuple[date, date]]:
    """For each step, the dates of the rule's field whose step lands inside the window (months are
    widened by a few days; `plan` decides exactly)."""
    out = []
    for step in rule.steps:
        o = step.offset
        back = Offset(-o.sign, o.amount, o.unit)
        lo, hi = back.apply(window.first), back.apply(window.last)
        if o.unit in ("mo", "y"):
            lo, hi = lo - timedelta(days=4), hi + timedelta(days=4)
        out.append((lo, hi))
    return out


def dealership_defaults() -> list[dict[str, Any]]:
    """The cadences a new dealership starts with (as API bodies)."""
    return [
        {
            "name": "After-sale",
            "date_field": "delivery_date",
            "steps": [
                {
                    "offset": "+4d",
                    "channel": "call",
                    "reason": "4-day after-sale call: running well? referrals?",
                },
                {
                    "offset": "+25d",
                    "channel": "call",
                    "reason": "25-day call before the manufacturer's survey",
                },
                {"offset": "+17mo", "channel": "call", "reason": "17-month call: ready to trade up?"},
            ],
        },
        {
            "name": "First service",
            "date_field": "delivery_date",
            "steps": [{"offset": "+90d", "channel": "call", "reason": "First service due: book it"}],
        },
        {
            "name": "Lost customer",
            "date_field": "last_service_date",
            "filter": {"field": "attributes.service_visits", "op": "gte", "value": 3},
            "steps": [
                {"offset": "+6mo", "channel": "call", "reason": "Not in for six months after 3+ visits"}
            ],
        },
        {
            "name": "Insurance expiry",
            "date_field": "insurance_expiry",
            "steps": [{"offset": "-30d", "channel": "call", "reason": "Insurance expires in 30 days"}],
        },
        {
            "name": "Inspection expiry",
            "date_field": "inspection_expiry",
            "steps": [{"offset": "-30d", "channel": "call", "reason": "Inspection due in 30 days"}],
        },
    ]
