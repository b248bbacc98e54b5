"""The render budget: templates that would burn CPU, memory or output are refused early and clearly."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from templates.render import MAX_OUTPUT, Limits, Renderer, TemplateError, TemplateTooCostly

CTX = {"contact": {"first_name": "Jane", "attributes": {"vehicle": "2024 Civic"}}}


@pytest.fixture
def r() -> Renderer:
    return Renderer()


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        # the ones found: a 10^10-turn loop, a 1 GB center, a 1 GB % width, a 95M-digit power, deep nesting
        ("{% for a in 'x'*100000 %}{% for b in 'x'*100000 %}{% endfor %}{% endfor %}", "too much work"),
        ("{{ 'a'|center(999999999) }}", "center"),
        ("{{ '%0999999999d' % 1 }}", "width 999999999"),
        ("{{ (((9**100)**100)**100)**100 }}", "number would be too large"),
        ("{" * 81, "nested too deeply"),
        # their relatives
        ("{{ '{:999999999}'.format(1) }}", "width 999999999"),
        ("{{ 'x'.ljust(999999999) }}", "ljust"),
        ("{{ 'x'.zfill(10**9) }}", "zfill"),
        ("{{ 'x\\t'.expandtabs(10**8) }}", "expandtabs"),
        ("{{ 'x'|indent(999999999) }}", "indent"),
        ("{{ ('x '*50000)|wordwrap(1, wrapstring='y'*100000) }}", "wordwrap"),
        ("{{ '%*d' % (999999999, 1) }}", "'*' width"),
        ("{{ '%s'|format('x'*150000) ~ 'x'*100000 }}", "~"),
        ("{{ ('x'*200000).join(['a']*200000) }}", "*"),
        ("{{ ['x'*200000]*200000 }}", "*"),
        ("{{ 'x'*100000 + 'x'*100001 }}", "+"),
        ("{% set s = 'x'*150000 %}{{ s.replace('', s) }}", "replace"),
        ("{% set s = 'x'*150000 %}{{ s|replace('', s) }}", "replace"),
        ("{% set s = 'x'*100000 %}{{ s.translate({120: s}) }}", "translate"),
        ("{% set s = 'x'*100000 %}{{ (s, s, s)|join }}", "join"),
        ("{{ ('{0}'*60000).format('x'*100000) }}", "too much text"),
        ("{% set s = 'x'*100000 %}{% set s %}{{s}}{{s}}{{s}}{% endset %}{{ s }}", "written out"),
        ("{% set s = 'x'*100000 %}{% for i in s %}{{ s|upper|length }}{% endfor %}", "too much text"),
        ("{{ [1]|batch(999999999, 'x')|list }}", "batch"),
        ("{{ [1]|slice(999999999)|list }}", "slice"),
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "nested too deeply"),
        (
            "{% macro m() %}{% for i in 'x'*1000 %}{% endfor %}{% endmacro %}"
            "{% for i in 'x'*1000 %}{{ m() }}{% endfor %}",
            "too much work",
        ),
        ("{% for i in 'x'*300 %}" * 25 + "{% endfor %}" * 25, "nested too deeply"),
        ("{{ " + "(" * 300 + "1" + ")" * 300 + " }}", "nested too deeply"),
        ("{% for i in 'x'*50000 %}xxxxx{% endfor %}", "longer than"),
    ],
)
def test_costly_templates_are_refused_naming_the_problem(r: Renderer, payload: str, says: str) -> None:
    with pytest.raises(TemplateTooCostly) as exc:
        r.render(payload, CTX)
    assert says in str(exc.value)


def test_recursive_loops_are_refused(r: Renderer) -> None:
    with pytest.raises(TemplateError, match="recursive loops"):
        r.render("{% for x in [[1]] recursive %}{{ loop(x) }}{% endfor %}", CTX)


def test_the_wall_clock_stops_what_the_counts_let_through() -> None:
    ticks = itertools.count()
    r = Renderer(limits=Limits(seconds=100.0), monotonic=lambda: float(next(ticks)) * 10)
    with pytest.raises(TemplateTooCostly, match="longer than 100 s"):
        r.render("{% for i in 'x' * 5000 %}{{ i }}{% endfor %}", CTX)


def test_ordinary_templates_still_render(r: Renderer) -> None:
    out = r.render(
        "Hi {{ contact.first_name }}: {{ contact.attributes.vehicle|upper }} {{ 'a' ~ 'b' }} "
        "{{ '%05d' % 42 }} {{ '{:>4}'.format('x') }} {{ 2 ** 10 }} {{ [1, 2]|join(',') }} "
        "[{{ 'x'|center(5) }}] {% for c in 'abc' %}{{ loop.index }}{{ c }}{% else %}-{% endfor %} "
        "{{ 'a b'|replace('a', 'c') }} {{ [1, 2, 3]|batch(2)|list }} {{ 'x' * 3 }}",
        CTX,
    )
    assert out == "Hi Jane: 2024 CIVIC ab 00042    x 1024 1,2 [  x  ] 1a2b3c c b [[1, 2], [3]] xxx"
    assert r.render("<p>{{ contact.first_name ~ '<b>' }}</p>", CTX, html=True) == "<p>Jane&lt;b&gt;</p>"
    long = "y" * (MAX_OUTPUT - 10)
    assert r.render("{{ contact.note }}!", {"contact": {"note": long}}) == long + "!"


def test_a_costly_template_is_found_when_saved(r: Renderer) -> None:
    with pytest.raises(TemplateTooCostly):
        r.check_cost("Hi {{ contact.first_name }} {{ 'a'|center(999999999) }}")
    r.check_cost("Hi {{ contact.first_name }}, your {{ contact.attributes.vehicle }}")
    r.check_cost("{{ contact.age + 1 }}")  # a type problem with the sample value is not a cost problem


_PIECES = st.sampled_from(
    [
        "*{n}",
        "**{n}",
        "~s",
        "+s",
        "|center({n})",
        "|indent({n})",
        "|wordwrap({w}, wrapstring=s)",
        "|replace('x', s)",
        ".replace('', s)",
        ".ljust({n})",
        "|list",
        "|join(s)",
        "|batch({n}, s)|list",
        "|string",
        "|forceescape",
    ]
)


@settings(deadline=None, max_examples=150)
@given(
    start=st.sampled_from(["'x'", "s", "[s]", "9", "'%0{n}d'", "'{{:{n}}}'"]),
    pieces=st.lists(
        st.tuples(_PIECES, st.integers(min_value=-5, max_value=10**12), st.integers(1, 100)), max_size=6
    ),
    size=st.integers(min_value=0, max_value=300_000),
)
def test_any_chain_of_amplifiers_renders_within_limits_or_is_refused(
    start: str, pieces: list[tuple[str, int, int]], size: int
) -> None:
    expr = "(" + start.format(n=abs(pieces[0][1]) if pieces else 3) + ")"
    for piece, n, w in pieces:
        expr = "(" + expr + piece.format(n=n, w=w) + ")"
    source = "{% set s = 'x' * " + str(size) + " %}{{ " + expr + " }}"
    try:
        out = Renderer().render(source, CTX)
    except TemplateError:
        return
    assert len(out) <= MAX_OUTPUT
