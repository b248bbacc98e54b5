"""The one merge-code renderer for email and SMS: a sandboxed, strict jinja2 environment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import phonenumbers
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_OUTPUT = 200_000  # characters; a template that balloons past this is refused


class TemplateError(ValueError):
    """Root of every merge-code problem."""


class MissingMergeCode(TemplateError):
    """A merge code has no value for this customer; `code` names it (e.g. contact.attributes.vehicle)."""

    def __init__(self, code: str) -> None:
        super().__init__(f"merge code {code} has no value for this customer")
        self.code = code


class TemplateSyntaxProblem(TemplateError):
    """The template does not parse; `line` says where."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


class UnsafeTemplate(TemplateError):
    """The template tried to reach outside its merge codes."""


@dataclass(frozen=True, slots=True)
class TemplateInfo:
    merge_codes: list[str]


class _Strict(jinja2.StrictUndefined):
    """Undefined that reports the full dotted merge code it stands for."""

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        name = self._undefined_name
        if self._undefined_exception is SecurityError or (isinstance(name, str) and name.startswith("_")):
            raise UnsafeTemplate(f"not allowed in a template: {name!r} is not a merge code")
        raise MissingMergeCode(_undefined_path(self))

    __str__ = __iter__ = __len__ = __eq__ = __ne__ = __bool__ = __hash__ = _fail_with_undefined_error  # type: ignore[assignment]


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


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, plus limits on `*` and `**` so a template cannot build a huge value."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_OUTPUT:
                    raise UnsafeTemplate("not allowed in a template: the result would be too large")
        if operator == "**" and isinstance(right, int) and abs(right) > 100:
            raise UnsafeTemplate("not allowed in a template: exponent too large")
        return super().call_binop(context, operator, left, right)


class Renderer:
    """Compiles and renders merge-code templates; HTML bodies are autoescaped, SMS and subjects not."""

    def __init__(self, *, default_time_zone: str = "UTC") -> None:
        self.default_time_zone = default_time_zone
        self._envs = {html: self._env(html) for html in (False, True)}

    def _env(self, html: bool) -> ImmutableSandboxedEnvironment:
        env = _Sandbox(
            undefined=_Strict, autoescape=html, loader=None, keep_trailing_newline=True, auto_reload=False
        )
        env.filters["default"] = _default
        env.filters["d"] = _default
        env.filters["date"] = self._date
        env.filters["datetime"] = self._datetime
        env.filters["phone"] = _phone
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
            ast = env.parse(source)
        except TemplateSyntaxError as exc:
            raise TemplateSyntaxProblem(exc.message or "syntax error", exc.lineno) from None
        for node in ast.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
            raise UnsafeTemplate(
                f"line {node.lineno}: include, import and extends are not allowed in a template"
            )
        for attr in ast.find_all(nodes.Getattr):
            if attr.attr.startswith("_"):
                raise UnsafeTemplate(f"line {attr.lineno}: {attr.attr!r} is not allowed in a template")
        return env.from_string(ast)

    def render(self, source: str, context: Mapping[str, Any], *, html: bool = False) -> str:
        """Fill the merge codes; MissingMergeCode, UnsafeTemplate or TemplateError on trouble."""
        template = self.compile(source, html)
        data = {k: wrap(k, v) for k, v in context.items()}
        try:
            out = template.render(data)
        except MissingMergeCode:
            raise
        except SecurityError as exc:
            raise UnsafeTemplate(f"not allowed in a template: {exc}") from None
        except UndefinedError as exc:
            raise UnsafeTemplate(f"not allowed in a template: {exc.message}") from None
        except TemplateError:
            raise
        except (TypeError, AttributeError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
            raise TemplateError(f"cannot render: {exc}") from None
        except RuntimeError as exc:  # "no loader for this environment": include/import/extends
            raise UnsafeTemplate(f"not allowed in a template: {exc}") from None
        if len(out) > MAX_OUTPUT:
            raise TemplateError(f"the rendered text is longer than {MAX_OUTPUT} characters")
        return out

    def validate(self, source: str, *, html: bool = False) -> TemplateInfo:
        """Check the syntax and list the merge codes a template uses (dotted, sorted)."""
        return self._validate(source, html)

    @lru_cache(maxsize=512)  # noqa: B019
    def _validate(self, source: str, html: bool) -> TemplateInfo:
        self.compile(source, html)
        try:
            ast = self._envs[html].parse(source)
        except TemplateSyntaxError as exc:
            raise TemplateSyntaxProblem(exc.message or "syntax error", exc.lineno) from None
        codes = set(meta.find_undeclared_variables(ast))
        for node in ast.find_all(nodes.Getattr):
            path = _dotted(node)
            if path:
                codes.add(path)
        for name in list(codes):
            if any(other.startswith(name + ".") for other in codes):
                codes.discard(name)
        return TemplateInfo(sorted(codes))

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
