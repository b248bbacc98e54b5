"""Encoding and segmenting, checked against an independent count and the gsm0338 decoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns.sms.gsm7 import MessageTooLong, analyze

GSM_BASIC = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
GSM_EXT = "^{}\\[~]|€\f"


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a" * 160, "gsm7", 1),
        ("a" * 161, "gsm7", 2),
        ("a" * 306, "gsm7", 2),
        ("a" * 307, "gsm7", 3),
        ("€" * 80, "gsm7", 1),  # 160 septets
        ("€" * 81, "gsm7", 2),
        ("ж" * 70, "ucs2", 1),
        ("ж" * 71, "ucs2", 2),
        ("😀" * 35, "ucs2", 1),  # 70 UTF-16 units
        ("😀" * 36, "ucs2", 2),
    ],
)
def test_segment_counts(text: str, encoding: str, segments: int) -> None:
    a = analyze(text)
    assert (a.encoding, a.segments) == (encoding, segments)
    assert "".join(a.parts) == text


def test_curly_quote_warns_with_the_gsm7_alternative() -> None:
    a = analyze("Don’t miss Saturday’s service special! " * 3)
    assert a.encoding == "ucs2"
    assert any("RIGHT SINGLE QUOTATION MARK" in w and "'" in w for w in a.warnings)
    assert any("instead of" in w for w in a.warnings)


def test_too_long_is_an_error_never_a_truncation() -> None:
    with pytest.raises(MessageTooLong, match="needs 11 GSM7 segments; at most 10"):
        analyze("a" * (153 * 10 + 1))
    assert analyze("a" * (153 * 10)).segments == 10
    with pytest.raises(MessageTooLong):
        analyze("a" * 200, max_parts=1)


@given(st.text(alphabet=GSM_BASIC + GSM_EXT, max_size=700))
def test_gsm7_parts_never_split_an_escape_and_fit(text: str) -> None:
    try:
        a = analyze(text, max_parts=100)
    except MessageTooLong:
        return
    assert a.encoding == "gsm7" and "".join(a.parts) == text
    limit = 160 if a.segments == 1 else 153
    for part in a.parts:
        encoded = part.encode("gsm03.38")
        assert len(encoded) <= limit
        assert encoded.decode("gsm03.38") == part  # an independent decoder agrees
        assert not encoded.endswith(b"\x1b")  # no escape left dangling at a part's end


@given(
    st.text(min_size=1, max_size=300).filter(
        lambda t: any(ord(c) > 0x7F and c not in GSM_BASIC + GSM_EXT for c in t)
    )
)
def test_ucs2_parts_never_split_a_surrogate_pair(text: str) -> None:
    try:
        a = analyze(text, max_parts=100)
    except MessageTooLong:
        return
    if a.encoding != "ucs2":
        return
    limit = 70 if a.segments == 1 else 67
    for part in a.parts:
        units = part.encode("utf-16-be")
        assert len(units) // 2 <= limit
        assert units.decode("utf-16-be") == part
