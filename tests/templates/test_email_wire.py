"""A message written straight to its bytes reads back as what was written, and arrives as sent."""

from __future__ import annotations

import email
import email.header
import email.policy
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from templates.email_message import build_message, wire_message
from templates.render import TemplateError
from templates.smtp import SmtpSender
from tests.templates.conftest import Inbox

DATE = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
# one header line: no line breaks (those are refused), anything else
one_line = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=200)
# bodies: any text, with the line starts SMTP and mailbox files treat specially well represented
body_line = st.one_of(
    st.text(max_size=120),
    st.sampled_from([".", "..", ".x", "From me", "From ", ">From x", " ", "\t", "=", "=_sb_", "--"]),
    st.text(alphabet="x ", min_size=70, max_size=300),
)
body = st.lists(body_line, min_size=1, max_size=12).flatmap(
    lambda lines: st.sampled_from(["\n", "\r\n", "\r"]).map(lambda eol: eol.join(lines))
)
address = st.emails().filter(lambda a: len(a) <= 254)


def _wire(**kw: Any) -> Any:
    args: dict[str, Any] = dict(
        sender="Switchboard Motors <sales@motors.example>",
        to_addr="jane@example.com",
        to_name="Jane Doe",
        subject="Hi",
        html="<p>Hi</p>",
        text="Hi",
        message_id="<1.2@motors.example>",
        unsubscribe_url="https://crm.example/email/unsubscribe/abc",
        date=DATE,
    )
    return wire_message(**(args | kw))


def _lines(value: str) -> str:
    return value.replace("\r\n", "\n").replace("\r", "\n")


def _rfc2047(raw_value: str) -> str:
    """A header value decoded by the letter of RFC 2047 (space between encoded words dropped)."""
    return str(email.header.make_header(email.header.decode_header(raw_value)))


def _raw_header(data: bytes, name: str) -> str:
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    m = re.search(rf"^{name}: (.*?)\r\n(?! )", head + "\r\n", re.MULTILINE | re.DOTALL)
    assert m is not None
    return m.group(1).replace("\r\n", "")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(to_name=one_line, subject=one_line, to_addr=address, text=body, html=body)
@example(
    to_name="Åsa Ölund-Very-Long-Name With Many Parts and more parts to exceed",
    subject="Héllo there, a very long subject line that goes on and on and on past seventy-eight columns",
    to_addr="jane@example.com",
    text="hi\nFrom me\n.\n..x\nFrom " + "z" * 80 + "\n",
    html="<p>" + "y" * 2000 + "</p>",
)
@example(to_name="", subject="", to_addr="j@x.example", text=" ", html="")
@example(to_name='Doe, "Jane" (VIP)', subject="=?utf-8?q?x?=", to_addr="j@x.example", text="a", html="b")
@example(to_name="x" * 100, subject="y" * 100, to_addr="j@x.example", text="a", html="b")
def test_what_is_written_reads_back_the_same(
    to_name: str, subject: str, to_addr: str, text: str, html: str
) -> None:
    out = _wire(to_name=to_name, subject=subject, to_addr=to_addr, text=text or "-", html=html)
    data = out.data
    assert (out.sender, out.recipient) == ("sales@motors.example", to_addr)
    assert data.isascii() and data.endswith(b"\r\n")
    assert b"\r" not in data.replace(b"\r\n", b"") and b"\n" not in data.replace(b"\r\n", b"")
    head, _, rest = data.partition(b"\r\n\r\n")
    # headers within 78 columns (a long address alone on its line is longer), the parts within 76
    assert all(len(line) <= max(78, len(to_addr) + 6) for line in head.split(b"\r\n"))
    assert all(len(line) <= 76 for line in rest.split(b"\r\n") if not line.startswith(b"--=_sb_"))

    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg.defects == []
    assert msg["Subject"] == subject
    assert msg["From"] == "Switchboard Motors <sales@motors.example>"
    assert msg["Date"].datetime == DATE and msg["Message-ID"] == "<1.2@motors.example>"
    assert msg["List-Unsubscribe"] == "<https://crm.example/email/unsubscribe/abc>"
    (to,) = msg["To"].addresses
    assert to.addr_spec == to_addr
    raw_to = _raw_header(data, "To")
    name = " ".join(to_name.split())  # a name's runs of whitespace are written as one space
    if raw_to.count("=?utf-8?") <= 1:
        assert to.display_name == name
    else:
        # the email package's address parser puts a space between two encoded words of a display
        # name (RFC 2047 drops it): read such a name as mail readers do
        assert _rfc2047(raw_to.rpartition(" <")[0]) == name
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert [p.get_content_charset() for p in parts] == ["utf-8", "utf-8"]
    assert _lines(parts[0].get_content()) == _lines(text or "-")
    assert _lines(parts[1].get_content()) == _lines(html)


@settings(max_examples=100, deadline=None)
@given(
    to_name=st.text(st.characters(codec="ascii", categories=["L", "N"]), max_size=30), text=body, html=body
)
def test_it_is_the_message_the_email_package_builds(to_name: str, text: str, html: str) -> None:
    # for what the email package's generator writes faithfully (no line starting "From ", which it
    # turns into ">From "), both forms read back the same
    text, html = text.replace("From ", "from "), html.replace("From ", "from ")
    kw: dict[str, Any] = dict(to_name=to_name, subject=f"Hi {to_name}", text=text or "-", html=html)
    ours = email.message_from_bytes(_wire(**kw).data, policy=email.policy.default)
    theirs = email.message_from_bytes(
        build_message(
            sender="Switchboard Motors <sales@motors.example>",
            to_addr="jane@example.com",
            message_id="<1.2@motors.example>",
            unsubscribe_url="https://crm.example/email/unsubscribe/abc",
            date=DATE,
            **kw,
        ).as_bytes(),
        policy=email.policy.default,
    )
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post"):
        assert ours[name] == theirs[name], name
    assert [_lines(p.get_content()) for p in ours.iter_parts()] == [
        _lines(p.get_content()) for p in theirs.iter_parts()
    ]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("to_addr", "zoë@example.com", "not ASCII"),
        ("to_addr", "jane doe@example.com", "spaces or control characters"),
        ("to_addr", "jane\x00@example.com", "spaces or control characters"),
        ("to_name", "Jane\nBcc: x@example.com", "line breaks"),
        ("subject", "Hi\r\nBcc: x@example.com", "line breaks"),
        ("unsubscribe_url", "https://crm.example/un subscribe", "not a plain URL"),
    ],
)
def test_what_cannot_be_written_is_refused(field: str, value: str, reason: str) -> None:
    with pytest.raises(TemplateError, match=reason):
        _wire(**{field: value})


async def test_the_server_receives_the_bytes_as_written(inbox: Inbox) -> None:
    texts = [".\n..two\n.three\nFrom here\n", "x" * 3000, "merci, Zoë\r\n.\r\n"]
    sent = [
        _wire(
            to_addr=f"p{i}@example.com",
            to_name=f"Zoë {i}",
            subject=f"Ça va {i} ?",
            text=t,
            html=f"<p>{t}</p>",
        )
        for i, t in enumerate(texts)
    ]
    smtp = SmtpSender("127.0.0.1", inbox.port, rate_per_second=0, connections=2)
    try:
        outcomes = [await smtp.send(m) for m in sent]
    finally:
        await smtp.close()
    assert [o.status for o in outcomes] == ["sent"] * 3
    assert inbox.received == [("sales@motors.example", [m.recipient], m.data) for m in sent]
    for i, (t, msg) in enumerate(zip(texts, inbox.messages, strict=True)):
        assert msg["Subject"] == f"Ça va {i} ?" and msg["To"].addresses[0].display_name == f"Zoë {i}"
        assert _lines(next(msg.iter_parts()).get_content()) == _lines(t)
