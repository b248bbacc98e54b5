"""The sandboxed merge-code renderer: values, missing codes by name, filters, validation, SSTI refusal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from templates.render import MissingMergeCode, Renderer, TemplateError, TemplateSyntaxProblem, UnsafeTemplate

CTX = {
    "contact": {
        "first_name": "Jane",
        "last_name": "Doe",
        "time_zone": "America/Chicago",
        "phone": "(555) 123-4567",
        "attributes": {"vehicle": "2024 Civic", "purchase_date": "2026-11-18"},
    },
    "user": {"name": "John Smith"},
    "dealer": {"name": "Switchboard Motors"},
}


@pytest.fixture
def r() -> Renderer:
    return Renderer()


def test_merge_values_and_filters(r: Renderer) -> None:
    out = r.render(
        "Hi {{ contact.first_name }}, how is the {{ contact.attributes.vehicle }} since "
        "{{ contact.attributes.purchase_date | date }}? {{ user.name }}, {{ dealer.name }}",
        CTX,
    )
    assert out == "Hi Jane, how is the 2024 Civic since November 18, 2026? John Smith, Switchboard Motors"
    assert r.render("{{ contact.nickname | default('there') }}", CTX) == "there"
    assert r.render("{{ '2026-11-22T15:00:00Z' | datetime('%H:%M %Z') }}", CTX) == "09:00 CST"


def test_missing_code_is_named_never_blank(r: Renderer) -> None:
    with pytest.raises(MissingMergeCode) as exc:
        r.render("Your {{ contact.attributes.trade_in }} is ready", CTX)
    assert exc.value.code == "contact.attributes.trade_in"
    assert r.missing_codes(
        "{{ contact.attributes.trade_in }} {{ user.email }} {{ contact.first_name }}", CTX
    ) == ["contact.attributes.trade_in", "user.email"]


def test_a_code_with_no_value_is_missing_not_none_or_blank(r: Renderer) -> None:
    """A customer with no first name gets no "Hi None!" and no "Hi !": the code is named as
    missing (as `missing_codes` says), unless the template gives it a default or tests for it."""
    for empty in (None, ""):
        ctx = {"contact": {"first_name": empty, "attributes": {"vehicle": empty}}}
        for source, html in (
            ("Hi {{ contact.first_name }}!", False),
            ("<p>Hi {{ contact.first_name }}</p>", True),
            ("Hi {{ contact.first_name ~ '!' }}", False),
            ("Hi {{ contact.first_name.upper() }}", False),
        ):
            with pytest.raises(MissingMergeCode) as exc:
                r.render(source, ctx, html=html)
            assert exc.value.code == "contact.first_name"
        with pytest.raises(MissingMergeCode) as exc:
            r.render("Your {{ contact.attributes.vehicle }}", ctx)
        assert exc.value.code == "contact.attributes.vehicle"
        assert r.missing_codes("Hi {{ contact.first_name }}!", ctx) == ["contact.first_name"]
        assert r.render("Hi {{ contact.first_name | default('there') }}!", ctx) == "Hi there!"
        assert r.render(
            "{% if contact.first_name %}Hi {{ contact.first_name }}{% else %}Hello{% endif %}", ctx
        ) == ("Hello")
        assert r.render("{{ contact.first_name or 'friend' }}", ctx) == "friend"
    assert r.render("{{ contact.attributes.visits }} visits", {"contact": {"attributes": {"visits": 0}}}) == (
        "0 visits"
    )


def test_html_is_escaped_sms_is_not(r: Renderer) -> None:
    ctx = {"contact": {"first_name": "<b>Tom & Jerry</b>"}}
    assert r.render("{{ contact.first_name }}", ctx, html=True) == "&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;"
    assert r.render("{{ contact.first_name }}", ctx) == "<b>Tom & Jerry</b>"


def test_validation_lists_codes_and_finds_syntax_errors(r: Renderer) -> None:
    info = r.validate(
        "Hi {{ contact.first_name }}\n{{ contact.attributes.vehicle | default('car') }} {{ user.name }}"
    )
    assert info.merge_codes == ["contact.attributes.vehicle", "contact.first_name", "user.name"]
    with pytest.raises(TemplateSyntaxProblem) as exc:
        r.validate("line one\nline two {{ contact.first_name \nline three")
    assert exc.value.line in (2, 3) and "line" in str(exc.value)


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",  # dunder walk to object's subclasses
        "{{ contact.__class__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",  # jinja globals → module globals
        "{{ joiner.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'].popen('id') }}",
        "{{ self._TemplateReference__context.cycler }}",  # the template's own context
        "{{ self.__init__.__globals__ }}",
        "{{ contact | attr('__class__') }}",  # attr filter
        "{{ contact | attr('\\x5f\\x5fclass\\x5f\\x5f') }}",  # escaped underscores
        "{{ '{0.__class__.__init__.__globals__}'.format(contact) }}",  # str.format
        "{{ ('a' * 99999999) }}",  # resource abuse
        "{{ 10 ** 100000000 }}",
        "{% for i in range(999999999) %}x{% endfor %}",
        "{% include '/etc/passwd' %}",  # file access through the loader
        "{% extends 'base.html' %}",
        "{% import 'os' as os %}",
        "{{ config.items() }}",  # Flask-style globals
        "{{ request.application.__globals__ }}",
        "{{ contact.attributes.update({'x': 1}) }}",  # mutating the context
    ],
)
def test_sandbox_escapes_fail_clearly(r: Renderer, payload: str) -> None:
    with pytest.raises(TemplateError) as exc:
        r.render(payload, CTX)
    message = str(exc.value)
    assert "root:" not in message and "uid=" not in message
    assert isinstance(exc.value, UnsafeTemplate | MissingMergeCode)


@given(st.text(min_size=1, max_size=200))
def test_any_customer_value_renders_or_fails_cleanly(value: str) -> None:
    r = Renderer()  # (an empty value is a missing merge code: test_a_code_with_no_value_is_missing…)
    out = r.render("<p>{{ contact.first_name }}</p>", {"contact": {"first_name": value}}, html=True)
    inner = out[3:-4]
    assert "<" not in inner and ">" not in inner and '"' not in inner


@given(st.text(max_size=80))
def test_any_template_text_is_a_result_or_a_template_error(source: str) -> None:
    try:
        Renderer().render(source, CTX)
    except TemplateError:
        pass
