"""A message's MIME boundary is chosen when it is built, and can never occur inside its parts."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

from templates.email_message import build_message


def _build(html: str, text: str) -> bytes:
    msg = build_message(
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
    return msg.as_bytes()


def test_parts_that_look_like_boundaries_come_back_whole() -> None:
    # lines a boundary search would have to rule out: our own prefix, and generator-style boundaries
    text = "--=_sb_0123456789abcdef01234567\n=_sb_\n--===============1234==\nmerci, Zoë\n"
    html = "<p>--=_sb_0123456789abcdef01234567--</p>\n<p>" + "x" * 200 + "</p>\n"
    raw = _build(html, text)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    boundary = parsed.get_boundary()
    assert boundary is not None and boundary.startswith("=_sb_")
    parts = [p for p in parsed.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content() == text and parts[1].get_content() == html
    assert raw.count(b"--" + boundary.encode()) == 3  # two part openings and the closing one
    assert _build(html, text).split(b"boundary=")[1][:40] != raw.split(b"boundary=")[1][:40]
