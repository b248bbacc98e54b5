"""The GSM modem channel over a real serial stack: a modem emulator on a pseudo-terminal pair."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from campaigns.sms.channel import (
    ChannelConnectionError,
    ChannelError,
    DeliveryReport,
    InboundSms,
    OutboundSms,
)
from campaigns.sms.modem.channel import ModemChannel
from campaigns.sms.modem.emulator import ModemEmulator
from crm_link.contacts import validate_contact
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.settings import SmsChannelSettings
from tests.conftest import make_api
from tests.sms.helpers import blast_when, reported


class Sink:
    """Collects what the channel hands over (the app's sink is SmsEvents, tested below)."""

    def __init__(self) -> None:
        self.reports: list[DeliveryReport] = []
        self.inbound: list[InboundSms] = []

    async def on_delivery(self, report: DeliveryReport) -> None:
        self.reports.append(report)

    async def on_inbound(self, message: InboundSms) -> None:
        self.inbound.append(message)


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


@pytest.fixture
async def modem() -> AsyncIterator[ModemEmulator]:
    async with ModemEmulator() as m:
        yield m


@pytest.fixture
async def channel(modem: ModemEmulator) -> AsyncIterator[tuple[ModemChannel, Sink]]:
    ch = ModemChannel("gsm", modem.port, command_timeout=1.0, send_timeout=1.0)
    sink = Sink()
    await ch.start(sink)
    yield ch, sink
    await ch.close()


async def test_init_send_and_delivery_report(
    modem: ModemEmulator, channel: tuple[ModemChannel, Sink]
) -> None:
    ch, sink = channel
    assert modem.commands[:7] == [
        "AT",
        "ATE0",
        "AT+CMEE=1",
        "AT+CPIN?",
        "AT+CSQ",
        "AT+CMGF=0",
        "AT+CNMI=2,1,0,1,0",
    ]
    assert ch.signal == (20, 99)
    result = await ch.send(OutboundSms("101", "+12125550147", "Your car is ready, Jane."))
    assert result.segments == 1 and result.provider_id == "mr:1"
    (got,) = modem.received
    assert (
        got.submit.to == "+12125550147"
        and got.submit.text == "Your car is ready, Jane."
        and got.submit.status_report
    )
    await until(lambda: len(sink.reports) == 1)
    assert sink.reports[0].message_id == "101" and sink.reports[0].status == "delivered"


async def test_long_unicode_message_goes_as_parts_and_reports_once(
    modem: ModemEmulator, channel: tuple[ModemChannel, Sink]
) -> None:
    ch, sink = channel
    text = "Merci Zoë! Your 2025 Accord 🚗 is ready — pick it up any time before 6pm. " * 3
    result = await ch.send(OutboundSms("7", "+12125550147", text))
    assert result.segments == len(modem.received) == 4
    parts = [r.submit for r in modem.received]
    assert {p.dcs for p in parts} == {0x08} and {p.concat.total for p in parts if p.concat} == {4}
    assert "".join(p.text for p in sorted(parts, key=lambda p: p.concat.seq if p.concat else 0)) == text
    await until(lambda: len(sink.reports) >= 1)
    await asyncio.sleep(0.1)
    assert [r.status for r in sink.reports] == ["delivered"]  # once, when every part is delivered


async def test_failed_delivery_and_cms_errors(
    modem: ModemEmulator, channel: tuple[ModemChannel, Sink]
) -> None:
    ch, sink = channel
    modem.status_for["+12125550148"] = 0x45  # permanent error at the SC
    await ch.send(OutboundSms("8", "+12125550148", "hello"))
    await until(lambda: len(sink.reports) == 1)
    assert sink.reports[0].status == "failed" and sink.reports[0].error_code == "TP-ST 45"
    modem.fail_next(38)
    with pytest.raises(ChannelError) as err:
        await ch.send(OutboundSms("9", "+12125550149", "hello"))
    assert err.value.retryable and "network out of order" in err.value.reason and err.value.code == "CMS:38"
    modem.fail_next(1)
    with pytest.raises(ChannelError) as err:
        await ch.send(OutboundSms("10", "+12125550149", "hello"))
    assert not err.value.retryable and "unassigned" in err.value.reason
    # the modem is still usable afterwards
    assert (await ch.send(OutboundSms("11", "+12125550149", "hello"))).segments == 1


async def test_inbound_messages_are_read_reassembled_and_deleted(
    modem: ModemEmulator, channel: tuple[ModemChannel, Sink]
) -> None:
    _, sink = channel
    modem.deliver("+12125550147", "STOP")
    long = "Can I bring the car in on Saturday morning instead? " * 4  # 2 GSM-7 parts
    modem.deliver("+12125550150", long)
    await until(lambda: len(sink.inbound) == 2)
    assert [(m.from_number, m.text) for m in sink.inbound] == [
        ("+12125550147", "STOP"),
        ("+12125550150", long),
    ]
    await until(lambda: not modem.stored)  # every part deleted from the SIM
    assert any(c.startswith("AT+CMGR=") for c in modem.commands)


# decodes to a concatenation element cut short by the header: a PduError, never an IndexError
BAD_PDU = (
    "07915155000000F0440B915155214365F70008621020304050003E040003070303"
    "D83DDE00D83DDEABD83DDE00D83DDE00D83DDE00"
)


async def test_a_bad_stored_message_is_deleted_and_the_pass_goes_on(
    modem: ModemEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    # on the SIM before the channel starts: the start-up pass (AT+CMGL) finds them in this order
    bad = modem.store_pdu(BAD_PDU)
    modem.deliver("+12125550147", "Is the car ready?")
    ch = ModemChannel("gsm", modem.port, command_timeout=1.0, send_timeout=1.0)
    sink = Sink()
    await ch.start(sink)
    try:
        await until(lambda: len(sink.inbound) == 1 and not modem.stored)
        assert [(m.from_number, m.text) for m in sink.inbound] == [("+12125550147", "Is the car ready?")]
        assert f"AT+CMGD={bad}" in modem.commands
        assert any(
            "event=modem_bad_message" in r.message and f"index={bad}" in r.message for r in caplog.records
        )
        # one arriving later (+CMTI) is dropped the same way, and the next one still comes through
        modem.store_pdu(BAD_PDU)
        modem.deliver("+12125550150", "STOP")
        await until(lambda: len(sink.inbound) == 2 and not modem.stored)
        assert sink.inbound[1].text == "STOP"
    finally:
        await ch.close()


async def test_reset_modem_is_initialised_again(
    modem: ModemEmulator, channel: tuple[ModemChannel, Sink]
) -> None:
    ch, sink = channel
    assert ch.inits == 1
    modem.reset()  # RDY: echo back on, text mode, no indications
    await until(lambda: ch.inits == 2)
    assert modem.pdu_mode and not modem.echo and modem.cnmi[3] == 1
    await ch.send(OutboundSms("12", "+12125550147", "after the reset"))
    await until(lambda: len(sink.reports) == 1)
    modem.deliver("+12125550147", "still here")
    await until(lambda: len(sink.inbound) == 1)


async def test_silent_modem_times_out_then_recovers(
    modem: ModemEmulator, channel: tuple[ModemChannel, Sink]
) -> None:
    ch, _ = channel
    modem.silent = True
    with pytest.raises(ChannelConnectionError) as err:
        await ch.send(OutboundSms("13", "+12125550147", "hello"))
    assert "did not answer" in err.value.reason and err.value.retryable
    modem.silent = False
    assert (await ch.send(OutboundSms("14", "+12125550147", "hello"))).segments == 1
    assert ch.inits == 2  # initialised again before sending


async def test_sim_pin_and_missing_port() -> None:
    async with ModemEmulator(pin="4321") as modem:
        locked = ModemChannel("gsm", modem.port, command_timeout=1.0)
        with pytest.raises(ChannelError) as err:
            await locked.start(Sink())
        assert "SIM PIN" in err.value.reason and not err.value.retryable
        await locked.close()
        unlocked = ModemChannel("gsm", modem.port, pin="4321", command_timeout=1.0)
        await unlocked.start(Sink())
        await unlocked.close()
    with pytest.raises(ChannelConnectionError) as err:
        await ModemChannel("gsm", "/dev/nonexistent-modem").start(Sink())
    assert "/dev/nonexistent-modem" in err.value.reason


async def test_blast_reply_and_stop_through_the_app(
    modem: ModemEmulator, aiohttp_client: Any, settings: Any
) -> None:
    settings.sms.quiet_start = settings.sms.quiet_end = "00:00"
    settings.sms.channels["gsm"] = SmsChannelSettings(
        name="gsm", type="modem", rate_per_second=50, options={"port": modem.port, "command_timeout": 2}
    )
    client = await aiohttp_client(create_app(settings))
    store = client.server.app[STORE]
    await make_api(client, "jsmith", "rep")
    mkt = await make_api(client, "kim", "marketing")
    ann = await store.contacts.create(
        validate_contact(
            {"first_name": "Ann", "phones": ["+12125550300"], "tags": ["t"], "owner": "jsmith"}, region="US"
        )
    )
    bo = await store.contacts.create(
        validate_contact({"first_name": "Bo", "phones": ["+12125550301"], "tags": ["t"]}, region="US")
    )
    modem.status_for["+12125550301"] = 0x41  # incompatible destination
    resp = await mkt.post(
        "/api/v1/sms/blasts",
        json={
            "name": "b",
            "text": "Hi {{ contact.first_name }}, service special Saturday",
            "channel": "gsm",
            "audience": {"tag": "t"},
        },
    )
    assert resp.status == 201, await resp.text()
    blast = await resp.json()
    body = await blast_when(mkt, blast["id"], lambda b: reported(b) == 2)
    assert body["counts"]["delivered"] == 1 and body["counts"]["failed"] == 1
    assert sorted(r.submit.text for r in modem.received) == [
        "Hi Ann, service special Saturday",
        "Hi Bo, service special Saturday",
    ]
    # Ann replies; Bo texts STOP: opted out, one confirmation goes back through the modem
    modem.deliver("+12125550300", "Saturday 9am works")
    modem.deliver("+12125550301", "STOP")
    async with asyncio.timeout(10):
        while not (await store.contacts.get(bo.id)).sms_opt_out or len(modem.received) < 3:
            await asyncio.sleep(0.05)
    assert [f.kind for f in await store.touches.open_followups(ann.id)] == ["sms_reply"]
    confirmation = modem.received[-1].submit
    assert confirmation.to == "+12125550301" and "unsubscribed" in confirmation.text
    history = (await store.touches.history(ann.id)).items
    assert {(t.kind, t.direction) for t in history} == {("sms", "outbound"), ("sms", "inbound")}


@pytest.mark.parametrize("policy", ["hold", "resend"])
async def test_rows_in_doubt_follow_the_channels_policy(
    modem: ModemEmulator, store: Any, policy: str
) -> None:
    from datetime import UTC, datetime

    from campaigns.sms.sender import ChannelWorker
    from crm_link.sms import OutboxRow

    row = await store.sms.enqueue(
        OutboxRow(to_e164="+12125550147", text="in doubt", channel="gsm", not_before=datetime.now(UTC))
    )
    await store.db.execute_many("UPDATE sms_outbox SET state = 'sending' WHERE id = ?", [(row.id,)])
    ch = ModemChannel("gsm", modem.port, command_timeout=1.0)
    await ch.start(Sink())
    worker = ChannelWorker(
        store,
        ch,
        name="gsm",
        rate_per_second=10,
        quiet_start="00:00",
        quiet_end="00:00",
        unknown_policy=policy,
    )
    await worker.recover()
    for _ in range(5):
        await worker.step()
    (state,) = await store.db.fetchall("SELECT state FROM sms_outbox WHERE id = ?", (row.id,))
    if policy == "hold":
        assert state[0] == "unknown" and modem.received == []  # an operator decides
    else:
        assert state[0] == "sent" and [r.submit.text for r in modem.received] == ["in doubt"]
    await ch.close()


async def test_a_modem_that_vanishes_is_reopened(tmp_path: Any) -> None:
    """The USB modem is unplugged and comes back (at the same device path, as udev names it)."""
    link = tmp_path / "ttyGSM"
    async with ModemEmulator() as first:
        link.symlink_to(first.port)
        ch = ModemChannel("gsm", str(link), command_timeout=1.0)
        sink = Sink()
        await ch.start(sink)
        await ch.send(OutboundSms("1", "+12125550147", "before"))
    # the port is gone: the channel notices when its reader ends
    async with ModemEmulator() as second:
        link.unlink()
        link.symlink_to(second.port)
        await until(lambda: ch._read_task is not None and ch._read_task.done())
        result = await ch.send(OutboundSms("2", "+12125550147", "after"))
        assert result.segments == 1 and [r.submit.text for r in second.received] == ["after"]
        assert second.commands[:2] == ["AT", "ATE0"]  # initialised from scratch
        await ch.close()
