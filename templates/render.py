"""The one merge-code renderer for email and SMS: a sandboxed, strict jinja2 environment."""

from __future__ import annotations

import asyncio
import inspect
import re
import time
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache, update_wrapper
from typing import Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo

import jinja2
import phonenumbers
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from templates import budget
from templates.budget import DEFAULT_LIMITS, Limits
from templates.errors import (
    MissingMergeCode,
    TemplateError,
    TemplateSyntaxProblem,
    TemplateTooCostly,
    UnsafeTemplate,
)

__all__ = [
    "MAX_OUTPUT",
    "Limits",
    "MissingMergeCode",
    "Renderer",
    "TemplateError",
    "TemplateInfo",
    "TemplateSyntaxProblem",
    "TemplateTooCostly",
    "UnsafeTemplate",
    "render_in_thread",
]

T = TypeVar("T")

MAX_OUTPUT = DEFAULT_LIMITS.output  # characters; a template that balloons past this is refused


@dataclass(frozen=True, slots=True)
class TemplateInfo:
    merge_codes: list[str]


class _Strict(jinja2.StrictUndefined):
    """Undefined that reports the full dotted merge code it stands for."""

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> Any:
        name = self._undefined_name
        if self._undefined_exception is SecurityError or (isinstance(name, str) and name.startswith("_")):
            raise UnsafeTemplate(f"not allowed in a template: {name!r} is not a merge code")
        raise MissingMergeCode(_undefined_path(self))

    __str__ = __iter__ = __len__ = __eq__ = __ne__ = __bool__ = __hash__ = _fail_with_undefined_error


class _NoValue(jinja2.Undefined):
    """A merge code the customer has no value for (None or empty text): false in `{% if %}`, empty
    in a loop, the fallback of `default`, and MissingMergeCode, naming it, when written out or
    used further (never "None" or a blank in the customer's text; as `missing_codes` says)."""

    __slots__ = ()

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise MissingMergeCode(_undefined_path(self))

    def __str__(self) -> str:
        raise MissingMergeCode(_undefined_path(self))

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __eq__(self, other: object) -> bool:
        return other is None or other == "" or isinstance(other, _NoValue)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(None)


def _undefined_path(u: jinja2.Undefined) -> str:
    obj = u._undefined_obj
    name = u._undefined_name
    parent = getattr(obj, "_merge_path", None)
    if parent and name:
        return f"{parent}.{name}"
    return str(name or "?")


class MergeData(dict[str, Any]):
    """A dict that remembers its dotted path, so a missing key is named in full."""

    def __init__(self, path: str, data: Mapping[str, Any]) -> None:
        super().__init__({k: wrap(f"{path}.{k}", v) for k, v in data.items()})
        self._merge_path = path


def wrap(path: str, value: Any) -> Any:
    """Wrap nested mappings so missing values are reported by their full merge code."""
    if isinstance(value, MergeData):
        return value
    if isinstance(value, Mapping):
        return MergeData(path, value)
    if value is None or value == "":
        return _NoValue(name=path)
    return value


def _default(value: Any, fallback: Any = "", boolean: bool = True) -> Any:
    """`{{ x | default("there") }}`: the fallback when x is missing, empty or None."""
    if isinstance(value, jinja2.Undefined) or value is None or (boolean and value == ""):
        return fallback
    return value


def _as_datetime(value: Any) -> datetime | date | None:
    if isinstance(value, datetime | date):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


_LOOP = "budget loop"  # internal filter names no template can spell
_CONCAT = "budget concat"
_AMPLIFIERS = frozenset(
    {"center", "indent", "wordwrap", "replace", "format", "join", "batch", "slice", "urlize"}
)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with every call, filter, loop turn and value-building operator on the render budget."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget.check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        args = budget.check_call(__obj, args, kwargs)
        return budget.check_value(super().call(__context, __obj, *args, **kwargs), "the result of a call")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """str.format / format_map with widths and sizes checked (the sandbox's own, budgeted)."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or value.__name__ not in (
            "format",
            "format_map",
        ):
            return None
        f_self = value.__self__
        if not isinstance(f_self, str):
            return None
        str_type = type(f_self)
        is_format_map = value.__name__ == "format_map"
        formatter: budget.CheckedFormatter = (
            budget.CheckedEscapeFormatter(self, escape=f_self.escape)
            if isinstance(f_self, Markup)
            else budget.CheckedFormatter(self)
        )

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one mapping")
                kwargs, args = args[0], ()
            return str_type(formatter.vformat(f_self, args, kwargs))

        return update_wrapper(wrapper, value)


def _budgeted_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that counts as a step, has its inputs' sizes charged, its amplification estimated
    before it runs and its result checked after."""
    skip = 1 if hasattr(func, "jinja_pass_arg") else 0
    sig = inspect.signature(func) if name in _AMPLIFIERS else None
    if sig is not None and skip:
        params = list(sig.parameters.values())
        if params[0].name not in ("value", "s"):  # the context, environment or eval context
            sig = sig.replace(parameters=params[1:])

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        budget.step()
        for a in args[skip:]:
            budget.check_value(a, f"the input of {name}")
        for a in kwargs.values():
            budget.check_value(a, f"the input of {name}")
        if sig is not None and len(args) > skip:
            bound = sig.bind(*args[skip:], **kwargs).arguments
            value = budget._filter_estimates(name, args[skip], bound)
            args = (*args[:skip], value, *args[skip + 1 :])
        return budget.check_value(func(*args, **kwargs), f"the result of {name}")

    return update_wrapper(wrapper, func)


@jinja2.pass_eval_context
def _concat_filter(eval_ctx: Any, items: tuple[Any, ...]) -> str:
    return budget.concat(items, eval_ctx.autoescape)


class _Budgeted(NodeTransformer):
    """Routes each loop's items and each `~` through the budget (compile-time rewrite)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        if node.recursive:
            raise UnsafeTemplate(f"line {node.lineno}: recursive loops are not allowed in a template")
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _LOOP, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        items = nodes.Tuple(node.nodes, "load", lineno=node.lineno)
        return nodes.Filter(items, _CONCAT, [], [], None, None, lineno=node.lineno)


class Renderer:
    """Compiles and renders merge-code templates; HTML bodies are autoescaped, SMS and subjects not."""

    def __init__(
        self,
        *,
        default_time_zone: str = "UTC",
        limits: Limits = DEFAULT_LIMITS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default_time_zone = default_time_zone
        self.limits = limits
        self.monotonic = monotonic
        self._envs = {html: self._env(html) for html in (False, True)}

    def _env(self, html: bool) -> ImmutableSandboxedEnvironment:
        env = _Sandbox(
            undefined=_Strict,
            autoescape=html,
            loader=None,
            keep_trailing_newline=True,
            auto_reload=False,
            optimized=False,  # nothing of a template is evaluated at compile time, outside the budget
            finalize=budget.written,
        )
        env.filters["default"] = _default
        env.filters["d"] = _default
        env.filters["date"] = self._date
        env.filters["datetime"] = self._datetime
        env.filters["phone"] = _phone
        for name, func in list(env.filters.items()):
            if name not in ("default", "d"):
                env.filters[name] = _budgeted_filter(name, func)
        env.filters[_LOOP] = budget.counted
        env.filters[_CONCAT] = _concat_filter
        env.globals.clear()  # no range, lipsum, cycler, joiner, namespace, dict
        return env

    def _zone(self, ctx: Any) -> ZoneInfo:
        contact = ctx.get("contact") if hasattr(ctx, "get") else None
        zone = contact.get("time_zone") if isinstance(contact, Mapping) else None
        try:
            return ZoneInfo(zone or self.default_time_zone)
        except (ValueError, KeyError):
            return ZoneInfo("UTC")

    @staticmethod
    def _date(value: Any, fmt: str = "%B %-d, %Y") -> str:
        dt = _as_datetime(value)
        if dt is None:
            raise TemplateError(f"{value!r} is not a date")
        return dt.strftime(fmt)

    @jinja2.pass_context
    def _datetime_impl(self, ctx: Any, value: Any, fmt: str = "%B %-d, %Y at %-I:%M %p") -> str:
        dt = _as_datetime(value)
        if not isinstance(dt, datetime):
            raise TemplateError(f"{value!r} is not a date and time")
        if dt.tzinfo is not None:
            dt = dt.astimezone(self._zone(ctx))
        return dt.strftime(fmt)

    @property
    def _datetime(self) -> Any:
        return jinja2.pass_context(
            lambda ctx, value, fmt="%B %-d, %Y at %-I:%M %p": self._datetime_impl(ctx, value, fmt)
        )

    @lru_cache(maxsize=512)  # noqa: B019  (templates are few and the renderer lives as long as the app)
    def compile(self, source: str, html: bool = False) -> jinja2.Template:
        """Parse once; TemplateSyntaxProblem with the line number when it does not parse."""
        env = self._envs[html]
        try:
            ast = self._parse(source, html)
            for node in ast.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
                raise UnsafeTemplate(
                    f"line {node.lineno}: include, import and extends are not allowed in a template"
                )
            for attr in ast.find_all(nodes.Getattr):
                if attr.attr.startswith("_"):
                    raise UnsafeTemplate(f"line {attr.lineno}: {attr.attr!r} is not allowed in a template")
            return env.from_string(_Budgeted().visit(ast))
        except (RecursionError, MemoryError, SyntaxError):
            # SyntaxError: Python's own limits on the compiled code (e.g. too many nested blocks)
            raise TemplateTooCostly("the template is nested too deeply") from None

    def _parse(self, source: str, html: bool) -> nodes.Template:
        try:
            return self._envs[html].parse(source)
        except TemplateSyntaxError as exc:
            raise TemplateSyntaxProblem(exc.message or "syntax error", exc.lineno) from None
        except (RecursionError, MemoryError):
            raise TemplateTooCostly("the template is nested too deeply") from None

    def render(self, source: str, context: Mapping[str, Any], *, html: bool = False) -> str:
        """Fill the merge codes; MissingMergeCode, UnsafeTemplate or TemplateError on trouble."""
        template = self.compile(source, html)
        data = {k: wrap(k, v) for k, v in context.items()}
        token = budget.start(self.limits, self.monotonic)
        try:
            out = self._run(template, data)
        except MissingMergeCode:
            raise
        except SecurityError as exc:
            raise UnsafeTemplate(f"not allowed in a template: {exc}") from None
        except UndefinedError as exc:
            raise UnsafeTemplate(f"not allowed in a template: {exc.message}") from None
        except TemplateError:
            raise
        except RecursionError:
            raise TemplateTooCostly(
                "the template is nested too deeply (macros or blocks calling themselves)"
            ) from None
        except MemoryError:
            raise TemplateTooCostly("the template needs too much memory") from None
        except (TypeError, AttributeError, ValueError, OverflowError) as exc:
            raise TemplateError(f"cannot render: {exc}") from None
        except RuntimeError as exc:  # "no loader for this environment": include/import/extends
            raise UnsafeTemplate(f"not allowed in a template: {exc}") from None
        finally:
            budget.finish(token)
        return out

    def _run(self, template: jinja2.Template, data: dict[str, Any]) -> str:
        """The rendered text, refused as soon as it grows past the output limit."""
        limit = self.limits.output
        parts: list[str] = []
        append = parts.append
        size = 0
        for chunk in template.root_render_func(template.new_context(data)):
            size += len(chunk)
            if size > limit:
                raise TemplateTooCostly(f"the rendered text is longer than {limit:,} characters")
            append(chunk)
        return "".join(parts)

    def validate(self, source: str, *, html: bool = False) -> TemplateInfo:
        """Check the syntax and list the merge codes a template uses (dotted, sorted)."""
        return self._validate(source, html)

    @lru_cache(maxsize=512)  # noqa: B019
    def _validate(self, source: str, html: bool) -> TemplateInfo:
        self.compile(source, html)
        ast = self._parse(source, html)
        try:
            codes = set(meta.find_undeclared_variables(ast))
        except (RecursionError, MemoryError):
            raise TemplateTooCostly("the template is nested too deeply") from None
        for node in ast.find_all(nodes.Getattr):
            path = _dotted(node)
            if path:
                codes.add(path)
        for name in list(codes):
            if any(other.startswith(name + ".") for other in codes):
                codes.discard(name)
        return TemplateInfo(sorted(codes))

    def check_cost(self, source: str, *, html: bool = False) -> None:
        """TemplateTooCostly if the template, rendered with a sample value for each merge code it
        uses, is too costly (other problems only show with a real customer's values)."""
        sample: dict[str, Any] = {}
        for code in self.validate(source, html=html).merge_codes:
            node = sample
            *parents, last = code.split(".")
            for part in parents:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    break
                node = child
            else:
                node.setdefault(last, "x")
        try:
            self.render(source, sample, html=html)
        except TemplateTooCostly:
            raise
        except TemplateError:
            pass

    def missing_codes(self, source: str, context: Mapping[str, Any], *, html: bool = False) -> list[str]:
        """Every merge code the template uses that has no value in this context."""
        missing = []
        for code in self._validate(source, html).merge_codes:
            value: Any = context
            for part in code.split("."):
                if isinstance(value, Mapping) and value.get(part) not in (None, ""):
                    value = value[part]
                else:
                    missing.append(code)
                    break
        # a code used only with a default filter is not missing
        return [c for c in missing if not re.search(re.escape(c) + r"\s*\|\s*(default|d)\b", source)]


def _dotted(node: nodes.Node) -> str | None:
    parts = []
    while isinstance(node, nodes.Getattr):
        parts.append(node.attr)
        node = node.node
    if isinstance(node, nodes.Name):
        parts.append(node.name)
        return ".".join(reversed(parts))
    return None


def _phone(value: Any) -> str:
    try:
        return phonenumbers.format_number(
            phonenumbers.parse(str(value)), phonenumbers.PhoneNumberFormat.NATIONAL
        )
    except phonenumbers.NumberParseException:
        return str(value)


async def render_in_thread(fn: Callable[..., T], *args: Any, timeout: float = 5.0) -> T:
    """Run a render of user-supplied template text off the event loop.

    The render budget is what stops the work (a thread cannot be killed); `timeout` only bounds how
    long the caller waits, and is then reported as TemplateTooCostly.
    """
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout)
    except TimeoutError:
        raise TemplateTooCostly(f"the template took longer than {timeout:g} s to render") from None
