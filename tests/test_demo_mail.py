"""The demo's mail sink: ready without a probe connection, keeps what it receives, and its
per-session chatter stays out of the service's log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from switchboard.app import create_app
from switchboard.demo import MAILBOX, demo_contexts, demo_routes
from switchboard.logs import setup_logging


async def test_demo_start_opens_no_smtp_session(
    aiohttp_server: Any, settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing connects to the sink and hangs up at start (that is what logged "Connection lost
    during _handle_client()" at every demo start); mail sent to it is kept for /demo/mail."""
    caplog.set_level(logging.DEBUG, logger="mail.log")
    settings.server.public_url = "http://127.0.0.1:1"
    app = create_app(settings, contexts=demo_contexts(settings, tmp_path, call_every=3600))
    demo_routes(app)
    await aiohttp_server(app)
    assert [r.getMessage() for r in caplog.records if r.name == "mail.log"] == []
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "sales@example.com", "ann@example.com", "Your visit"
    msg.set_content("See you Saturday")
    await aiosmtplib.send(msg, hostname=settings.smtp.host, port=settings.smtp.port, start_tls=False)
    assert [(m["to"], m["subject"]) for m in app[MAILBOX]] == [("ann@example.com", "Your visit")]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root, mail = logging.getLogger(), logging.getLogger("mail.log")
    saved = (root.handlers[:], root.level, mail.level, logging.getLogger("aiohttp.access").level)
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    mail.setLevel(saved[2])
    logging.getLogger("aiohttp.access").setLevel(saved[3])


def test_service_log_leaves_out_smtp_session_chatter(restore_logging: None) -> None:
    setup_logging("INFO")
    assert not logging.getLogger("mail.log").isEnabledFor(logging.INFO)
    assert logging.getLogger("mail.log").isEnabledFor(logging.WARNING)
    assert logging.getLogger("switchboard.app").isEnabledFor(logging.INFO)
