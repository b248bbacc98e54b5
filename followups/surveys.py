"""Surveys, pure: a questionnaire's definition checked field by field, its conditions (`show_if`,
`dissatisfied_if`) evaluated, and a set of answers checked against the questions that were asked.

No I/O: the store keeps the versions and responses, the service applies the effects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crm_link.errors import ValidationError

QUESTION_TYPES = ("scale", "choice", "multi", "yes_no", "text")
OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "answered")
ORDERED = ("lt", "lte", "gt", "gte")
MAX_QUESTIONS = 50
KEY_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass(frozen=True, slots=True)
class Condition:
    """`{key, op, value}`, or `{any: [...]}` / `{all: [...]}` of those."""

    key: str = ""
    op: str = ""
    value: Any = None
    any_of: tuple[Condition, ...] = ()
    all_of: tuple[Condition, ...] = ()

    def keys(self) -> set[str]:
        out = {self.key} if self.key else set()
        for c in (*self.any_of, *self.all_of):
            out |= c.keys()
        return out

    def holds(self, answers: Mapping[str, Any]) -> bool:
        """True when the answers meet the condition (an unanswered key meets nothing but `ne`)."""
        if self.any_of:
            return any(c.holds(answers) for c in self.any_of)
        if self.all_of:
            return all(c.holds(answers) for c in self.all_of)
        got = answers.get(self.key)
        if self.op == "answered":
            return _answered(got) == bool(self.value if self.value is not None else True)
        if not _answered(got):
            return self.op == "ne"
        if self.op == "eq":
            return bool(got == self.value)
        if self.op == "ne":
            return bool(got != self.value)
        if self.op == "in":
            return got in self.value
        if self.op == "contains":
            items = got if isinstance(got, list) else [got]
            want = self.value if isinstance(self.value, list) else [self.value]
            return any(v in items for v in want)
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return False
        v = float(self.value)
        return {"lt": got < v, "lte": got <= v, "gt": got > v, "gte": got >= v}[self.op]

    def to_dict(self) -> dict[str, Any]:
        if self.any_of:
            return {"any": [c.to_dict() for c in self.any_of]}
        if self.all_of:
            return {"all": [c.to_dict() for c in self.all_of]}
        return {"key": self.key, "op": self.op, "value": self.value}


@dataclass(frozen=True, slots=True)
class Question:
    key: str
    text: str
    type: str
    min: int | None = None
    max: int | None = None
    options: tuple[str, ...] = ()
    required: bool = False
    show_if: Condition | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "text": self.text,
            "type": self.type,
            "required": self.required,
        }
        if self.type == "scale":
            out |= {"min": self.min, "max": self.max}
        if self.type in ("choice", "multi"):
            out["options"] = list(self.options)
        out["show_if"] = self.show_if.to_dict() if self.show_if else None
        return out


@dataclass(frozen=True, slots=True)
class SurveySpec:
    name: str
    questions: tuple[Question, ...]
    script: str = ""
    dissatisfied_if: Condition | None = None
    escalate_to: str = "role:manager"
    score_key: str | None = None  # the scale question the reports count (the first scale one)
    satisfied_at: float | None = None  # a score at or above it is satisfied
    reasons_key: str | None = None  # the choice/multi question whose answers are the reasons
    active: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def question(self, key: str) -> Question | None:
        return next((q for q in self.questions if q.key == key), None)

    @property
    def score_question(self) -> Question | None:
        return self.question(self.score_key) if self.score_key else None

    @property
    def is_nps(self) -> bool:
        q = self.score_question
        return q is not None and q.min == 0 and q.max == 10

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "script": self.script,
            "questions": [q.to_dict() for q in self.questions],
            "dissatisfied_if": self.dissatisfied_if.to_dict() if self.dissatisfied_if else None,
            "escalate_to": self.escalate_to,
            "score_key": self.score_key,
            "satisfied_at": self.satisfied_at,
            "reasons_key": self.reasons_key,
            "active": self.active,
        }


def _answered(v: Any) -> bool:
    return v is not None and v != "" and v != []


def _text(data: Mapping[str, Any], name: str, path: str, *, required: bool, max_len: int) -> str:
    v = data.get(name, "")
    if v is None:
        v = ""
    if not isinstance(v, str) or len(v) > max_len:
        raise ValidationError(path, f"must be text of at most {max_len} characters")
    if required and not v.strip():
        raise ValidationError(path, "is required")
    return v.strip()


def parse_condition(raw: Any, path: str, known: Mapping[str, Question]) -> Condition:
    """A condition naming only questions in `known` (for `show_if`: the questions before it)."""
    if not isinstance(raw, Mapping):
        raise ValidationError(path, 'must be {"key", "op", "value"} or {"any": [...]} / {"all": [...]}')
    for group in ("any", "all"):
        if group in raw:
            items = raw[group]
            if set(raw) != {group} or not isinstance(items, list) or not 1 <= len(items) <= 20:
                raise ValidationError(f"{path}.{group}", "must be a list of 1 to 20 conditions, alone")
            parts = tuple(parse_condition(c, f"{path}.{group}[{i}]", known) for i, c in enumerate(items))
            return Condition(any_of=parts) if group == "any" else Condition(all_of=parts)
    for k in raw:
        if k not in ("key", "op", "value"):
            raise ValidationError(f"{path}.{k}", "unknown field")
    key = raw.get("key")
    if not isinstance(key, str) or key not in known:
        names = ", ".join(known) or "none"
        raise ValidationError(f"{path}.key", f"names no question asked before it: {key!r} (known: {names})")
    op = raw.get("op", "eq")
    if op not in OPS:
        raise ValidationError(f"{path}.op", f"must be one of {', '.join(OPS)}")
    value = raw.get("value")
    q = known[key]
    if op in ORDERED:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError(f"{path}.value", f"{op} needs a number")
        if q.type != "scale":
            raise ValidationError(f"{path}.op", f"{op} compares a scale answer; {key} is {q.type}")
    elif op == "in":
        if not isinstance(value, list) or not value:
            raise ValidationError(f"{path}.value", "in needs a list of values")
    elif op == "answered":
        if value is not None and not isinstance(value, bool):
            raise ValidationError(f"{path}.value", "answered takes true or false")
    elif op == "contains" and q.type not in ("multi", "choice"):
        raise ValidationError(f"{path}.op", f"contains looks in a choice; {key} is {q.type}")
    if q.type in ("choice", "multi") and op in ("eq", "ne", "in", "contains"):
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if v not in q.options]
        if bad and not (op in ("eq", "ne") and q.type == "multi" and isinstance(value, list)):
            raise ValidationError(f"{path}.value", f"{bad[0]!r} is not an option of {key}")
    return Condition(key=key, op=op, value=value)


def parse_question(raw: Any, path: str, before: Mapping[str, Question]) -> Question:
    if not isinstance(raw, Mapping):
        raise ValidationError(path, "must be an object with key, text, type")
    for k in raw:
        if k not in ("key", "text", "type", "min", "max", "options", "required", "show_if"):
            raise ValidationError(f"{path}.{k}", "unknown field")
    key = raw.get("key")
    if not isinstance(key, str) or not key or len(key) > 40 or set(key) - KEY_CHARS or key[0].isdigit():
        raise ValidationError(
            f"{path}.key", "must be 1-40 lowercase letters, digits, _ (not starting with a digit)"
        )
    if key in before:
        raise ValidationError(f"{path}.key", f"{key!r} is used by another question")
    text = _text(raw, "text", f"{path}.text", required=True, max_len=500)
    kind = raw.get("type")
    if kind not in QUESTION_TYPES:
        raise ValidationError(f"{path}.type", f"unknown type {kind!r}; one of {', '.join(QUESTION_TYPES)}")
    required = raw.get("required", False)
    if not isinstance(required, bool):
        raise ValidationError(f"{path}.required", "must be true or false")
    lo = hi = None
    options: tuple[str, ...] = ()
    if kind == "scale":
        lo, hi = raw.get("min", 1), raw.get("max", 5)
        for name, v in (("min", lo), ("max", hi)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 100:
                raise ValidationError(f"{path}.{name}", "must be a whole number from 0 to 100")
        if hi <= lo:
            raise ValidationError(f"{path}.max", "must be above min")
    elif kind in ("choice", "multi"):
        opts = raw.get("options")
        if not isinstance(opts, list) or not 1 <= len(opts) <= 30:
            raise ValidationError(f"{path}.options", "must be a list of 1 to 30 options")
        for i, o in enumerate(opts):
            if not isinstance(o, str) or not o.strip() or len(o) > 200:
                raise ValidationError(f"{path}.options[{i}]", "must be text of 1-200 characters")
        options = tuple(o.strip() for o in opts)
        if len(set(options)) != len(options):
            raise ValidationError(f"{path}.options", "lists an option twice")
    else:
        for name in ("min", "max", "options"):
            if raw.get(name) is not None:
                raise ValidationError(f"{path}.{name}", f"does not apply to a {kind} question")
    show_if = raw.get("show_if")
    cond = parse_condition(show_if, f"{path}.show_if", before) if show_if is not None else None
    return Question(key, text, kind, lo, hi, options, required, cond)


def parse_survey(data: Any) -> SurveySpec:
    """A survey definition from JSON; ValidationError naming the first bad field."""
    if not isinstance(data, Mapping):
        raise ValidationError("body", "must be a JSON object")
    allowed = (
        "name",
        "script",
        "questions",
        "dissatisfied_if",
        "escalate_to",
        "score_key",
        "satisfied_at",
        "reasons_key",
        "active",
    )
    for k in data:
        if k not in allowed:
            raise ValidationError(k, "unknown field")
    name = _text(data, "name", "name", required=True, max_len=100)
    script = _text(data, "script", "script", required=False, max_len=5000)
    raw_qs = data.get("questions")
    if not isinstance(raw_qs, list) or not 1 <= len(raw_qs) <= MAX_QUESTIONS:
        raise ValidationError("questions", f"must be a list of 1 to {MAX_QUESTIONS} questions")
    known: dict[str, Question] = {}
    for i, raw in enumerate(raw_qs):
        q = parse_question(raw, f"questions[{i}]", known)
        known[q.key] = q
    questions = tuple(known.values())
    dis = data.get("dissatisfied_if")
    dissatisfied = parse_condition(dis, "dissatisfied_if", known) if dis is not None else None
    escalate_to = data.get("escalate_to", "role:manager")
    if not isinstance(escalate_to, str) or not (
        escalate_to in ("role:manager", "owner_manager") or escalate_to.startswith(("user:", "pool:"))
    ):
        raise ValidationError("escalate_to", "must be user:NAME, pool:NAME, role:manager or owner_manager")
    score_key = data.get("score_key")
    scales = [q for q in questions if q.type == "scale"]
    if score_key is None:
        score_key = scales[0].key if scales else None
    elif not isinstance(score_key, str) or score_key not in {q.key for q in scales}:
        raise ValidationError("score_key", f"{score_key!r} is not a scale question")
    satisfied_at = data.get("satisfied_at")
    score_q = known.get(score_key) if score_key else None
    if satisfied_at is not None:
        if isinstance(satisfied_at, bool) or not isinstance(satisfied_at, (int, float)):
            raise ValidationError("satisfied_at", "must be a number")
        if score_q is None or not score_q.min <= satisfied_at <= score_q.max:  # type: ignore[operator]
            raise ValidationError("satisfied_at", "must be within the score question's scale")
    elif score_q is not None:
        assert score_q.min is not None and score_q.max is not None
        # 4 on a 1-5 scale, 7 on 0-10
        satisfied_at = float(math.floor(score_q.min + 0.7 * (score_q.max - score_q.min) + 0.5))
    reasons_key = data.get("reasons_key")
    choices = [q for q in questions if q.type in ("multi", "choice")]
    if reasons_key is None:
        multi = [q for q in choices if q.type == "multi"]
        picked = multi or choices
        reasons_key = picked[0].key if picked else None
    elif not isinstance(reasons_key, str) or reasons_key not in {q.key for q in choices}:
        raise ValidationError("reasons_key", f"{reasons_key!r} is not a choice question")
    active = data.get("active", True)
    if not isinstance(active, bool):
        raise ValidationError("active", "must be true or false")
    return SurveySpec(
        name=name,
        questions=questions,
        script=script,
        dissatisfied_if=dissatisfied,
        escalate_to=escalate_to,
        score_key=score_key,
        satisfied_at=float(satisfied_at) if satisfied_at is not None else None,
        reasons_key=reasons_key,
        active=active,
    )


def spec_of(stored: Mapping[str, Any]) -> SurveySpec:
    """A stored (already checked) definition back as a spec."""
    return parse_survey(stored)


def shown(spec: SurveySpec, answers: Mapping[str, Any]) -> list[Question]:
    """The questions asked given these answers (a hidden question's answer never counts)."""
    out: list[Question] = []
    seen: dict[str, Any] = {}
    for q in spec.questions:
        if q.show_if is None or q.show_if.holds(seen):
            out.append(q)
            if q.key in answers:
                seen[q.key] = answers[q.key]
    return out


def check_answers(spec: SurveySpec, answers: Any, field_name: str = "answers") -> dict[str, Any]:
    """The answers cleaned (in question order); ValidationError naming `answers.KEY` otherwise."""
    if not isinstance(answers, Mapping):
        raise ValidationError(field_name, "must be an object of question key -> answer")
    for key in answers:
        if spec.question(key) is None:
            raise ValidationError(f"{field_name}.{key}", "is not a question of this survey")
    asked = {q.key for q in shown(spec, answers)}
    clean: dict[str, Any] = {}
    for q in spec.questions:
        path = f"{field_name}.{q.key}"
        v = answers.get(q.key)
        if q.key not in asked:
            if _answered(v):
                raise ValidationError(path, "was not asked: its show_if does not hold for these answers")
            continue
        if not _answered(v):
            if q.required:
                raise ValidationError(path, "is required", code="required")
            continue
        clean[q.key] = _check_one(q, v, path)
    return clean


def _check_one(q: Question, v: Any, path: str) -> Any:
    if q.type == "scale":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
            raise ValidationError(path, "must be a whole number")
        assert q.min is not None and q.max is not None
        if not q.min <= v <= q.max:
            raise ValidationError(path, f"{v} is out of range {q.min}-{q.max}", code="out_of_range")
        return int(v)
    if q.type == "yes_no":
        if not isinstance(v, bool):
            raise ValidationError(path, "must be true or false")
        return v
    if q.type == "choice":
        if v not in q.options:
            raise ValidationError(path, f"{v!r} is not one of: {', '.join(q.options)}")
        return v
    if q.type == "multi":
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ValidationError(path, "must be a list of options")
        for x in v:
            if x not in q.options:
                raise ValidationError(path, f"{x!r} is not one of: {', '.join(q.options)}")
        return [o for o in q.options if o in v]  # the form's order, each once
    if not isinstance(v, str) or len(v) > 5000:
        raise ValidationError(path, "must be text of at most 5,000 characters")
    return v.strip()


@dataclass(frozen=True, slots=True)
class Scored:
    """What the reports and the escalation read of one set of answers."""

    score: float | None
    satisfied: bool | None
    dissatisfied: bool
    reasons: list[str]


def score(spec: SurveySpec, answers: Mapping[str, Any]) -> Scored:
    s = answers.get(spec.score_key) if spec.score_key else None
    value = float(s) if isinstance(s, (int, float)) and not isinstance(s, bool) else None
    satisfied = None if value is None or spec.satisfied_at is None else value >= spec.satisfied_at
    raw = answers.get(spec.reasons_key) if spec.reasons_key else None
    reasons = raw if isinstance(raw, list) else ([raw] if isinstance(raw, str) else [])
    dissatisfied = bool(spec.dissatisfied_if and spec.dissatisfied_if.holds(answers))
    return Scored(value, satisfied, dissatisfied, list(reasons))


def summary_lines(spec: SurveySpec, answers: Mapping[str, Any]) -> list[str]:
    """`Question: answer` lines, in order (what a manager reads on a follow-up and the timeline)."""
    out = []
    for q in spec.questions:
        if q.key in answers:
            v = answers[q.key]
            shown_v = (
                ", ".join(v) if isinstance(v, list) else ("yes" if v is True else "no" if v is False else v)
            )
            out.append(f"{q.text} {shown_v}")
    return out


def sms_question(spec: SurveySpec, field_name: str = "survey_id") -> Question:
    """The one question a survey asks by SMS: its score question, when nothing else is required
    of an answer that gives only the score (ValidationError naming `field_name` otherwise)."""
    q = spec.score_question
    if q is None:
        raise ValidationError(field_name, f"survey {spec.name!r} has no scale question to ask by SMS")
    if q.show_if is not None:
        raise ValidationError(field_name, f"the score question {q.key!r} is asked only sometimes")
    for other in shown(spec, {q.key: q.min}) + shown(spec, {q.key: q.max}):
        if other.required and other.key != q.key:
            raise ValidationError(
                field_name, f"an SMS survey asks one question; {other.key!r} is required too"
            )
    return q


def sms_text(spec: SurveySpec, field_name: str = "survey_id") -> str:
    """The default text of an SMS survey: the question and how to answer (GSM-7, one segment)."""
    q = sms_question(spec, field_name)
    return f"{q.text.strip()} Reply {q.min}-{q.max}."
