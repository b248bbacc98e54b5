"""The SMS survey reply parser, pure: every way of writing a score on the scale is read as it,
anything else is not an answer, and no text makes it raise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from followups.sms_reply import STARS, WORDS, parse_score

NAMES = {v: k for k, v in WORDS.items()}


def _forms(n: int, hi: int) -> list[str]:
    forms = [str(n), f" {n} ", f"{n}!", f"{n}.", f"{n}/{hi}", f"{n} / {hi}", f"{n} out of {hi}", f"{n} stars"]
    forms += [f"I'd give it a {n}", f"Thanks, {n}", f"{n}⭐", f"score: {n}"]
    if n in NAMES:
        forms += [
            NAMES[n],
            NAMES[n].upper(),
            NAMES[n].title() + "!",
            f"{NAMES[n]} out of {NAMES.get(hi, hi)}",
        ]
    if 1 <= n <= 10:
        forms += ["⭐" * n, "⭐\ufe0f" * n, "★" * n, " ".join("⭐" * n)]
    return forms


@given(st.sampled_from([(1, 5), (0, 10), (1, 10)]), st.data())
def test_every_form_of_a_score_on_the_scale_is_read(scale: tuple[int, int], data: st.DataObject) -> None:
    lo, hi = scale
    n = data.draw(st.integers(lo, hi))
    text = data.draw(st.sampled_from(_forms(n, hi)))
    assert parse_score(text, lo, hi) == n, text


@given(st.integers(-1000, 1000).filter(lambda n: not 1 <= n <= 5))
def test_a_number_off_the_scale_is_no_answer(n: int) -> None:
    assert parse_score(str(n), 1, 5) is None
    assert parse_score(f"{abs(n) % 10 + 6}/5", 1, 5) is None


@pytest.mark.parametrize(
    "text",
    [
        "thanks!",
        "Call me back please",
        "STOP",
        "4 or 5",
        "4.5",
        "3/10",
        "Call me at 5",
        "5 ⭐⭐⭐",
        "it was fine, but the car was dirty 2",
        "",
        "/",
        "4 /",
        "٣",
    ],
)
def test_texts_that_are_not_only_a_score_are_no_answer(text: str) -> None:
    assert parse_score(text, 1, 5) is None


@given(st.text(alphabet=st.characters().filter(lambda c: not c.isdigit() and c not in STARS)))
def test_text_without_digits_number_words_or_stars_is_no_answer(text: str) -> None:
    if not any(w in text.lower() for w in WORDS):
        assert parse_score(text, 0, 10) is None


@given(st.text(max_size=300), st.integers(0, 5), st.integers(6, 12))
def test_any_text_gives_a_score_on_the_scale_or_none(text: str, lo: int, hi: int) -> None:
    got = parse_score(text, lo, hi)
    assert got is None or lo <= got <= hi
