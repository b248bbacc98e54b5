"""The render budget: what one render of a merge template may spend in steps, characters and time.

Every place where a template can make the renderer work or allocate goes through here: loop turns,
calls, filters, the operators that can build big values (`*`, `**`, `+`, `%`, `~`), str.format and
every value written to the output. Amplifying operations are estimated *before* they run, so a
refusal never needs the memory or the time it is protecting. The counters live in a context
variable, so each render (and each thread rendering) has its own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter

from templates.errors import TemplateTooCostly


@dataclass(frozen=True, slots=True)
class Limits:
    """How much one render may do."""

    steps: int = 100_000  # loop turns, calls, filters and checked operators
    chars: int = 2_000_000  # characters read or built by the checked operations
    value: int = 200_000  # characters (or items) in any one value the template builds
    output: int = 200_000  # characters of rendered text
    int_bits: int = 4_096  # size of any number the template computes
    seconds: float = 1.0  # wall time, the backstop for whatever the counts do not see


DEFAULT_LIMITS = Limits()


class Budget:
    """The counters of one render."""

    __slots__ = ("chars", "deadline", "limits", "monotonic", "next_time_check", "steps")

    def __init__(self, limits: Limits, monotonic: Callable[[], float]) -> None:
        self.limits = limits
        self.monotonic = monotonic
        self.deadline = monotonic() + limits.seconds
        self.steps = 0
        self.chars = 0
        self.next_time_check = min(65_536, limits.chars)

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.limits.steps:
            raise TemplateTooCostly(
                f"the template does too much work (more than {self.limits.steps:,} loop turns, "
                "calls and operations in one render)"
            )
        if not self.steps & 255:
            self._check_time()

    def charge(self, n: int) -> None:
        self.chars += n
        if self.chars > self.limits.chars:
            raise TemplateTooCostly(
                f"the template builds too much text (more than {self.limits.chars:,} characters in one render)"
            )
        if self.chars > self.next_time_check:
            self.next_time_check = min(self.chars + 65_536, self.limits.chars)
            self._check_time()

    def _check_time(self) -> None:
        if self.monotonic() > self.deadline:
            raise TemplateTooCostly(f"the template took longer than {self.limits.seconds:g} s to render")


_CURRENT: ContextVar[Budget | None] = ContextVar("render_budget", default=None)


def start(limits: Limits, monotonic: Callable[[], float] = time.monotonic) -> Token[Budget | None]:
    """Open a budget for the render about to run in this context."""
    return _CURRENT.set(Budget(limits, monotonic))


def finish(token: Token[Budget | None]) -> None:
    _CURRENT.reset(token)


def _limits() -> Limits:
    b = _CURRENT.get()
    return b.limits if b is not None else DEFAULT_LIMITS


def step() -> Limits:
    """Count one operation; the limits in force."""
    b = _CURRENT.get()
    if b is None:
        return DEFAULT_LIMITS
    b.step()
    return b.limits


def charge(n: int) -> None:
    b = _CURRENT.get()
    if b is not None:
        b.charge(n)


def too_large(what: str) -> TemplateTooCostly:
    return TemplateTooCostly(f"{what} would be too large (at most {_limits().value:,} characters or items)")


# sizes --------------------------------------------------------------------------------------------

_CONTAINERS = (list, tuple, dict, set, frozenset)


def weight(value: Any, limit: int) -> int:
    """Characters `value` takes as text (about), counted no further than just past `limit`."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    if not isinstance(value, _CONTAINERS):
        return 8
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str | bytes):
            total += len(v) + 4
        elif isinstance(v, dict):
            total += 2 + 4 * len(v)
            if total <= limit:
                stack.extend(v.keys())
                stack.extend(v.values())
        elif isinstance(v, _CONTAINERS):
            total += 2 + 2 * len(v)
            if total <= limit:
                stack.extend(v)
        elif isinstance(v, int):
            total += v.bit_length() // 3 + 1
        else:
            total += 8
        if total > limit:
            return total
    return total


def check_value(value: Any, what: str = "a value") -> Any:
    """Refuse a value larger than the limit; charge its size; the value."""
    limits = _limits()
    w = weight(value, limits.value)
    if w > limits.value:
        raise too_large(what)
    charge(w)
    return value


def written(value: Any) -> Any:
    """A value about to be written out: within the size limit, and charged (the hot path of
    every render, so plain text is handled inline)."""
    if type(value) is str:
        b = _CURRENT.get()
        if b is not None:
            n = len(value)
            if n > b.limits.value:
                raise too_large("a value written out")
            b.chars += n
            if b.chars > b.next_time_check:  # reaches the character limit, or time to look at the clock
                b.charge(0)
            return value
    return check_value(value, "a value written out")


def _estimate(n: int, what: str) -> None:
    """Refuse an operation whose result is estimated at `n` characters; charge it."""
    if n > _limits().value:
        raise too_large(what)
    charge(n)


def _int_arg(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) else default


# operators -----------------------------------------------------------------------------------------

_PRINTF = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d*))?[hlL]?(?P<conv>.)", re.S
)


def check_printf(fmt: str, args: Any) -> None:
    """`fmt % args`: widths, precisions and the size of the result, before formatting."""
    limits = _limits()
    positional = args if isinstance(args, tuple) else (args,)
    total, i = len(fmt), 0
    for m in _PRINTF.finditer(fmt):
        if m["conv"] == "%":
            continue
        if m["width"] == "*" or m["prec"] == "*":
            raise TemplateTooCostly("not allowed in a template: a '*' width or precision in % formatting")
        for n in (m["width"], m["prec"]):
            if n and (len(n) > 9 or int(n) > limits.value):
                raise too_large(f"the % format width {n}")
        if m["key"] is not None and isinstance(args, Mapping):
            arg = args.get(m["key"])
        else:
            arg = positional[i] if i < len(positional) else None
            i += 1
        total += max(int(m["width"] or 0), int(m["prec"] or 0)) + weight(arg, limits.value)
        if total > limits.value:
            raise too_large("the result of % formatting")
    charge(total)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `left <operator> right` when its result would be too big; before computing it."""
    limits = step()
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(n, int) and isinstance(seq, str | bytes | list | tuple):
                _estimate(weight(seq, limits.value) * max(n, 0), "the result of *")
                return
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > limits.int_bits:
                raise TemplateTooCostly(f"the number would be too large (more than {limits.int_bits} bits)")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            if left.bit_length() > 1 and (
                right > limits.int_bits or left.bit_length() * right > limits.int_bits
            ):
                raise TemplateTooCostly(f"the number would be too large (more than {limits.int_bits} bits)")
    elif operator == "+":
        if isinstance(left, str | bytes | list | tuple) and isinstance(right, str | bytes | list | tuple):
            _estimate(weight(left, limits.value) + weight(right, limits.value), "the result of +")
    elif operator == "%" and isinstance(left, str):
        check_printf(left, right)


def concat(items: tuple[Any, ...], autoescape: bool) -> str:
    """`a ~ b ~ c`, refused before joining when the result would be too large."""
    step()
    limit = _limits().value
    _estimate(sum(weight(i, limit) for i in items), "the result of ~")
    return markup_join(items) if autoescape else str_join(items)


def counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """A loop's items, each turn counted."""
    for item in iterable:
        b = _CURRENT.get()
        if b is not None:
            b.step()
        yield item


# calls ----------------------------------------------------------------------------------------------


def _occurrences(owner: str | bytes, part: object) -> int:
    """How often `part` occurs in `owner` (0 when one is text and the other bytes)."""
    if isinstance(owner, str):
        return owner.count(part) if isinstance(part, str) else 0
    return owner.count(part) if isinstance(part, bytes) else 0


def check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Before a call from a template: refuse str/bytes methods whose result would be too large.
    Returns the arguments to call with (a join's items, materialized once)."""
    limits = step()
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str | bytes):
        for a in args:
            check_value(a, "an argument")
        return args
    name = getattr(obj, "__name__", "")
    size = len(owner)
    charge(size)
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        _estimate(max(size, _int_arg(width)), f"the result of {name}()")
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        _estimate(
            size + _occurrences(owner, b"\t" if isinstance(owner, bytes) else "\t") * max(_int_arg(tab), 1),
            "the result of expandtabs()",
        )
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], type(owner)):
        old, new = args[0], args[1]
        count = _int_arg(args[2] if len(args) > 2 else kwargs.get("count", -1), -1)
        hits = size + 1 if not old else _occurrences(owner, old)
        if count >= 0:
            hits = min(hits, count)
        _estimate(size + hits * weight(new, limits.value), "the result of replace()")
    elif name == "join" and args:
        items = list(_bounded(args[0], limits.value))
        _estimate(
            sum(weight(i, limits.value) for i in items) + size * max(len(items) - 1, 0),
            "the result of join()",
        )
        return (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((weight(v, limits.value) for v in args[0].values()), default=1)
        _estimate(size * max(longest, 1), "the result of translate()")
    for a in args:
        check_value(a, "an argument")
    return args


def _bounded(iterable: Any, limit: int) -> Iterator[Any]:
    for n, item in enumerate(iterable):
        if n > limit:
            raise too_large("the list")
        yield item


# filters -------------------------------------------------------------------------------------------


def _arg(bound: Mapping[str, Any], name: str, default: Any) -> Any:
    value = bound.get(name, default)
    return default if value is None else value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _filter_estimates(name: str, value: Any, bound: Mapping[str, Any]) -> Any:
    """Refuse the amplifying filters' too-large results before they run; the value to filter
    (a join's items materialized once)."""
    limit = _limits().value
    size = weight(value, limit)
    if name == "center":
        _estimate(max(size, _int_arg(_arg(bound, "width", 80))), "the result of center")
    elif name == "indent":
        width = _arg(bound, "width", 4)
        lines = _text(value).count("\n") + 1
        _estimate(
            size + lines * (len(width) if isinstance(width, str) else _int_arg(width)), "the result of indent"
        )
    elif name == "wordwrap":
        width = max(_int_arg(_arg(bound, "width", 79), 79), 1)
        wrap = _arg(bound, "wrapstring", "\n")
        lines = 2 * size // width + 2
        _estimate(size + lines * weight(wrap, limit), "the result of wordwrap")
    elif name == "replace":
        old, new = _arg(bound, "old", ""), _arg(bound, "new", "")
        text = _text(value)
        hits = len(text) + 1 if not old else text.count(old) if isinstance(old, str) else 1
        count = _int_arg(_arg(bound, "count", -1), -1)
        if count >= 0:
            hits = min(hits, count)
        _estimate(size + hits * weight(new, limit), "the result of replace")
    elif name == "format" and isinstance(value, str):
        check_printf(value, bound.get("kwargs") or tuple(bound.get("args") or ()))
    elif name == "join":
        items = list(_bounded(value, limit)) if not isinstance(value, str) else value
        sep = _arg(bound, "d", "")
        _estimate(weight(items, limit) + weight(sep, limit) * len(items), "the result of join")
        return items
    elif name in ("batch", "slice"):
        n = _arg(bound, "linecount" if name == "batch" else "slices", 0)
        if _int_arg(n) > limit:
            raise too_large(f"the {name} count")
    elif name == "urlize":
        extra = sum(weight(bound.get(k), limit) for k in ("target", "rel") if isinstance(bound.get(k), str))
        _estimate(size * (3 + extra), "the result of urlize")
    return value


class CheckedFormatter(SandboxedFormatter):
    """str.format in the sandbox, with widths and the result's size checked field by field."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        limits = step()
        for n in re.findall(r"\d+", format_spec):
            if len(n) > 9 or int(n) > limits.value:
                raise too_large(f"the format width {n}")
        w = weight(value, limits.value)
        if w > limits.value:
            raise too_large("a formatted value")
        charge(w)
        return super().format_field(value, format_spec)


class CheckedEscapeFormatter(SandboxedEscapeFormatter, CheckedFormatter):
    """The same for Markup.format (values escaped)."""
