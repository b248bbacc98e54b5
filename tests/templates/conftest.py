"""The SMTP server the email tests send to: aiosmtpd on loopback."""

from __future__ import annotations

import asyncio
import email
import socket
from email.policy import default
from typing import Any

import pytest
from aiosmtpd.controller import Controller


class Inbox:
    """An aiosmtpd handler that keeps what it accepts and can answer with errors first."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop  # the tests' loop (the server runs its own, in a thread)
        self.messages: list[email.message.EmailMessage] = []
        self.received: list[tuple[str, list[str], bytes]] = []  # (MAIL FROM, RCPT TO, bytes) as received
        self.fail_with: list[str] = []  # responses to give to the next DATA commands
        self.connections: set[int] = set()
        self.block_after: int | None = None
        self.port = 0  # set once the server listens
        self.blocked = asyncio.Event()
        self.refuse: set[str] = set()  # recipients refused at RCPT TO with a permanent 550

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.connections.add(id(session))
        if self.fail_with:
            return self.fail_with.pop(0)
        if self.block_after is not None and len(self.messages) >= self.block_after:
            self.loop.call_soon_threadsafe(self.blocked.set)  # wakes the tests' loop now
            while self.block_after is not None:  # held until the test sets block_after to None
                await asyncio.sleep(0.01)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        self.messages.append(email.message_from_bytes(envelope.content, policy=default))
        return "250 OK"


@pytest.fixture
async def inbox() -> Any:

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = Inbox(asyncio.get_running_loop())
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    handler.port = port
    yield handler
    controller.stop()
