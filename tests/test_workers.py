"""Background workers are supervised: a crashed worker is restarted and `/healthz` says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from campaigns.sms.channel import ChannelSink, OutboundSms, SendResult
from campaigns.sms.sender import ChannelWorker
from crm_link.sms import OutboxRow
from switchboard.app import create_app
from switchboard.keys import STORE, SUPERVISOR


class FlakyChannel:
    """An SMS channel whose first look-up of a message in doubt blows up (a bug, not a ChannelError);
    later calls work. It sends by remembering."""

    def __init__(self) -> None:
        self.name = "flaky"
        self.lookups = 0
        self.sent: list[OutboundSms] = []
        self.fail_always = False

    async def start(self, sink: ChannelSink) -> None:
        pass

    async def reconcile(self, to: str, text: str, since: datetime) -> str | None:
        self.lookups += 1
        if self.lookups == 1 or self.fail_always:
            raise RuntimeError("provider answered something unreadable")
        return None

    async def send(self, message: OutboundSms) -> SendResult:
        self.sent.append(message)
        return SendResult(provider_id=f"F{len(self.sent)}", segments=1)

    async def close(self) -> None:
        pass


async def _health(client: Any, done: Any) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            resp = await client.get("/healthz")
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
            if done(body):
                return body
            await asyncio.sleep(0.02)


def _flaky_app(settings: Any, channel: FlakyChannel) -> web.Application:
    async def flaky_ctx(app: web.Application) -> AsyncIterator[None]:
        store = app[STORE]
        # a message left `sending` by a crash: the worker's start looks it up at the provider
        row = await store.sms.enqueue(
            OutboxRow(to_e164="+12125550300", text="Hi", channel="flaky", not_before=datetime.now(UTC))
        )
        assert row is not None
        await store.db.execute_many("UPDATE sms_outbox SET state = 'sending' WHERE id = ?", [(row.id,)])
        worker = ChannelWorker(
            store, channel, name="flaky", rate_per_second=100, quiet_start="00:00", quiet_end="00:00"
        )
        app[SUPERVISOR].start("sms:flaky", worker.run)
        yield
        worker.stop()
        await app[SUPERVISOR].stop("sms:flaky")

    app = create_app(settings, contexts=[flaky_ctx])
    app[SUPERVISOR].backoff_min = 0.05
    app[SUPERVISOR].backoff_max = 0.2
    return app


async def test_a_crashed_worker_is_restarted_and_reported(aiohttp_client: Any, settings: Any) -> None:
    channel = FlakyChannel()
    client = await aiohttp_client(_flaky_app(settings, channel))
    body = await _health(client, lambda b: b["workers"]["sms:flaky"]["restarts"] >= 1)
    body = await _health(client, lambda b: b["workers"]["sms:flaky"]["state"] == "running")
    flaky = body["workers"]["sms:flaky"]
    assert flaky["restarts"] == 1
    assert flaky["last_error"] == "RuntimeError: provider answered something unreadable"
    assert body["status"] == "ok"
    assert set(body) >= {"status", "connectors", "workers"}
    # the other long-lived workers are listed with their real state too
    assert body["workers"]["dialer"]["state"] == "running"
    assert body["workers"]["email"]["state"] == "running"
    # after the restart the message in doubt was looked up again (not found) and sent once
    store = client.server.app[STORE]
    async with asyncio.timeout(10):
        while [m.to for m in channel.sent] != ["+12125550300"]:
            await asyncio.sleep(0.02)
    # the channel has it; the row says so once the worker's write after the send commits
    async with asyncio.timeout(10):
        while [r["state"] for r in await store.db.fetchall("SELECT state FROM sms_outbox")] == ["sending"]:
            await asyncio.sleep(0.02)
    rows = await store.db.fetchall("SELECT state FROM sms_outbox")
    assert [r["state"] for r in rows] == ["sent"]
    assert [m.to for m in channel.sent] == ["+12125550300"]


async def test_a_worker_that_keeps_crashing_makes_health_degraded(aiohttp_client: Any, settings: Any) -> None:
    channel = FlakyChannel()
    channel.fail_always = True
    client = await aiohttp_client(_flaky_app(settings, channel))
    body = await _health(
        client,
        lambda b: (
            b["workers"]["sms:flaky"]["restarts"] >= 2 and b["workers"]["sms:flaky"]["state"] == "restarting"
        ),
    )
    assert body["status"] == "degraded"
    assert "unreadable" in body["workers"]["sms:flaky"]["last_error"]
    assert body["workers"]["dialer"]["state"] == "running"
