"""A message's MIME boundary is chosen when it is built, and can never occur inside its parts."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from typing import Any

import pytest

from templates.email_message import build_message, wire_message


def _build(html: str, text: str, *, wire: bool = True) -> bytes:
    kw: dict[str, Any] = dict(
        sender="Sales <sales@motors.example>",
        to_addr="jane@example.com",
        to_name="Jane Doe",
        subject="Hi",
        html=html,
        text=text,
        message_id="<1@motors.example>",
        unsubscribe_url=None,
        date=datetime(2026, 11, 23, 16, 0, tzinfo=UTC),
    )
    return wire_message(**kw).data if wire else build_message(**kw).as_bytes()


@pytest.mark.parametrize("wire", [True, False], ids=["written", "built"])
def test_parts_that_look_like_boundaries_come_back_whole(wire: bool) -> None:
    # lines a boundary search would have to rule out: our own prefix, and generator-style boundaries
    text = "--=_sb_0123456789abcdef01234567\n=_sb_\n--===============1234==\nmerci, Zoë\n"
    html = "<p>--=_sb_0123456789abcdef01234567--</p>\n<p>" + "x" * 200 + "</p>\n"
    raw = _build(html, text, wire=wire)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    boundary = parsed.get_boundary()
    assert boundary is not None and boundary.startswith("=_sb_")
    parts = [p for p in parsed.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    contents = [p.get_content().replace("\r\n", "\n") for p in parts]  # written: CRLF lines
    assert contents == [text, html]
    assert raw.count(b"--" + boundary.encode()) == 3  # two part openings and the closing one
    assert _build(html, text, wire=wire).split(b"boundary=")[1][:40] != raw.split(b"boundary=")[1][:40]
