"""Proper email messages: multipart/alternative, Message-ID, Date, one-click unsubscribe (RFC 8058)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from html.parser import HTMLParser

from templates.render import TemplateError


class _Text(HTMLParser):
    BLOCK = frozenset({"p", "div", "br", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "hr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self.skip += 1
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in self.BLOCK:
            self.out.append("\n")
        elif tag == "a":
            self.href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self.skip = max(0, self.skip - 1)
        elif tag in ("p", "div", "h1", "h2", "h3", "table", "ul", "ol"):
            self.out.append("\n")
        elif tag == "a" and self.href:
            if not self.href.startswith("mailto:") and self.href not in "".join(self.out[-1:]):
                self.out.append(f" ({self.href})")
            self.href = None

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """A readable plain-text part from an HTML body (links as "text (url)", lists as "- ")."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.out).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def unsubscribe_token(secret: str, contact_id: int) -> str:
    """A token naming the contact, signed so nobody can unsubscribe someone else."""
    body = str(contact_id).encode()
    sig = hmac.new(secret.encode(), b"unsubscribe:" + body, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(body + b"." + sig).decode().rstrip("=")


def verify_unsubscribe_token(secret: str, token: str) -> int | None:
    """The contact id of a genuine token, else None (compared in constant time)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body, _, sig = raw.partition(b".")
        contact_id = int(body)
    except (ValueError, TypeError):
        return None
    expected = hmac.new(secret.encode(), b"unsubscribe:" + body, hashlib.sha256).digest()[:16]
    return contact_id if hmac.compare_digest(sig, expected) else None


def _no_breaks(value: str, field: str) -> str:
    if "\r" in value or "\n" in value:
        raise TemplateError(f"{field} cannot contain line breaks")
    return value


_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP  # readable in a raw view, safe for any line length


def _addr(name: str, addr: str) -> str:
    if not addr.isascii():  # an internationalized address needs SMTPUTF8, which we do not send
        raise TemplateError(
            f"the address {addr!r} is not ASCII (internationalized addresses are not supported)"
        )
    return formataddr((name, addr), charset="utf-8") if name else addr


def build_message(
    *,
    sender: str,
    to_addr: str,
    to_name: str,
    subject: str,
    html: str,
    text: str | None,
    message_id: str,
    unsubscribe_url: str | None,
    date: datetime,
) -> Message:
    """A multipart/alternative message (text first, then HTML) with the headers mail servers expect.

    Built with the email package's MIME classes: about three times faster than EmailMessage's
    content manager, which matters in a mail merge.
    """
    name, addr = parseaddr(sender)
    # the boundary is chosen here, not by the generator: it would search the whole message for its
    # own random boundary with a regular expression compiled afresh for each message (a tenth of the
    # sending loop's time in a merge); "=_" never occurs in quoted-printable parts, so it is safe
    msg = MIMEMultipart("alternative", boundary=f"=_sb_{secrets.token_hex(12)}")
    msg["From"] = _addr(name, addr)
    msg["To"] = _addr(_no_breaks(to_name, "name"), _no_breaks(to_addr, "to"))
    subject = _no_breaks(subject, "subject")
    msg["Subject"] = Header(subject, "utf-8").encode() if not subject.isascii() else subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    if unsubscribe_url:
        msg["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.attach(MIMEText(text if text else html_to_text(html), "plain", _UTF8_QP))  # type: ignore[arg-type]
    msg.attach(MIMEText(html, "html", _UTF8_QP))  # type: ignore[arg-type]
    return msg


def new_message_id(domain: str) -> str:
    return make_msgid(domain=domain)
