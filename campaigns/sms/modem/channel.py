"""A GSM modem as an SMS channel: AT commands (27.005, PDU mode) over a serial port.

One command at a time (a lock); a reader task splits what the modem says into the answer to the
current command and unsolicited lines (+CMTI: a message arrived, +CDS: a status report, RDY: the
modem restarted). Status reports are matched to our message by the `+CMGS: <mr>` reference of each
part; inbound messages are read (+CMGR), reassembled when concatenated, handed over, then deleted.
A modem that stops answering, or says it restarted, is initialised again before the next command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from campaigns.sms.channel import (
    ChannelConnectionError,
    ChannelError,
    ChannelSink,
    DeliveryReport,
    InboundSms,
    OutboundSms,
    SendResult,
)
from campaigns.sms.gsm7 import MessageTooLong
from campaigns.sms.modem import at
from campaigns.sms.modem.pdu import PduError, decode_deliver, decode_status_report, encode_submit

log = logging.getLogger("campaigns.sms.modem")

CTRL_Z = b"\x1a"
ESC = b"\x1b"


@dataclass(slots=True)
class _Command:
    text: str
    done: asyncio.Future[at.Final]
    lines: list[str] = field(default_factory=list)
    prompt: asyncio.Future[None] | None = None


@dataclass(slots=True)
class _Outgoing:
    message_id: str
    parts: int
    delivered: set[int] = field(default_factory=set)
    failed: bool = False


class ModemChannel:
    """`[sms.channels.NAME] type = "modem"`, `port = "/dev/ttyUSB2"`."""

    one_at_a_time = True  # one AT command at a time: the sender claims a small window, in one lane

    def __init__(
        self,
        name: str,
        port: str,
        *,
        baudrate: int = 115200,
        smsc: str | None = None,
        pin: str | None = None,
        command_timeout: float = 10.0,
        send_timeout: float = 60.0,
        max_parts: int = 10,
        status_reports: bool = True,
    ) -> None:
        self.name = name
        self.port = port
        self.baudrate = baudrate
        self.smsc = smsc
        self.pin = pin
        self.command_timeout = command_timeout
        self.send_timeout = send_timeout
        self.max_parts = max_parts
        self.status_reports = status_reports
        self.signal: tuple[int, int] | None = None
        self.inits = 0
        self._sink: ChannelSink | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._current: _Command | None = None
        self._ready = False
        self._read_task: asyncio.Task[None] | None = None
        self._work: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._work_task: asyncio.Task[None] | None = None
        self._by_mr: OrderedDict[int, tuple[_Outgoing, int]] = OrderedDict()
        self._partial: dict[tuple[str, int], dict[int, tuple[str, int]]] = {}
        self._ref = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, sink: ChannelSink) -> None:
        """Open the port and initialise the modem; ChannelError naming the problem if it cannot."""

        self._sink = sink
        await self._open()
        self._work_task = asyncio.create_task(self._work_loop(), name=f"modem-{self.name}-work")
        async with self._lock:
            await self._init()
        self._work.put_nowait(("stored", None))

    async def _open(self) -> None:
        """Open (or reopen, after the device went away) the serial port and start reading it."""
        import serial_asyncio

        if self._writer is not None:
            self._writer.close()
        try:
            self._reader, self._writer = await serial_asyncio.open_serial_connection(
                url=self.port, baudrate=self.baudrate
            )
        except (OSError, ValueError) as exc:
            raise ChannelConnectionError(f"cannot open the modem's port {self.port}: {exc}") from None
        self._read_task = asyncio.create_task(self._read_loop(), name=f"modem-{self.name}-read")

    async def close(self) -> None:
        for task in (self._work_task, self._read_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._writer = self._reader = None

    # -- the dialogue --------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._reader is not None
        buf = b""
        cds_length: int | None = None
        while True:
            try:
                chunk = await self._reader.read(4096)
            except OSError as exc:  # serial.SerialException: the device went away
                chunk = b""
                log.warning("event=modem_port_error channel=%s error=%s", self.name, exc)
            if not chunk:
                log.warning("event=modem_port_closed channel=%s", self.name)
                self._ready = False
                return
            buf += chunk
            while True:
                buf = buf.lstrip(b"\r\n")
                cmd = self._current
                if (
                    buf.startswith(b">")
                    and cmd is not None
                    and cmd.prompt is not None
                    and not cmd.prompt.done()
                ):
                    buf = buf[1:].lstrip(b" ")
                    cmd.prompt.set_result(None)
                    continue
                end = min((i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0), default=-1)
                if end < 0:
                    break
                line = buf[:end].decode("ascii", errors="replace").strip()
                buf = buf[end + 1 :]
                if not line:
                    continue
                if cds_length is not None:
                    self._work.put_nowait(("cds", (cds_length, line)))
                    cds_length = None
                    continue
                cds_length = self._line(line)

    def _line(self, line: str) -> int | None:
        """Route one line; returns the TPDU length when a +CDS header announces a PDU line."""
        cds = at.parse_cds(line)
        if cds is not None:
            return cds
        cmti = at.parse_cmti(line)
        if cmti is not None:
            self._work.put_nowait(("cmti", cmti[1]))
            return None
        if at.is_boot(line):
            log.warning("event=modem_restarted channel=%s line=%s", self.name, line)
            self._ready = False
            self._work.put_nowait(("reinit", None))
            return None
        cmd = self._current
        if cmd is None or cmd.done.done():
            if line.startswith(("RING", "+CRING", "+CLIP")):
                return None
            log.info("event=modem_unsolicited channel=%s line=%r", self.name, line)
            return None
        if line == cmd.text:  # echo (before ATE0 takes effect, or after a reset)
            return None
        final = at.parse_final(line)
        if final is not None:
            cmd.done.set_result(final)
        else:
            cmd.lines.append(line)
        return None

    async def _command(self, text: str, *, timeout: float | None = None, pdu: str | None = None) -> list[str]:
        """Send one command (the lock is held by the caller) and return its lines; errors raise."""
        if self._writer is None:
            raise ChannelConnectionError("the modem's port is not open")
        loop = asyncio.get_running_loop()
        cmd = _Command(
            text, prompt=loop.create_future() if pdu is not None else None, done=loop.create_future()
        )
        self._current = cmd
        wait = timeout or self.command_timeout
        try:
            self._writer.write(text.encode() + b"\r")
            if pdu is not None:
                assert cmd.prompt is not None
                either: set[asyncio.Future[Any]] = {cmd.prompt, cmd.done}
                _, pending = await asyncio.wait(either, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if len(pending) == 2:
                    raise TimeoutError
                if not cmd.prompt.done():
                    final = cmd.done.result()
                    raise self._error(text, final)
                self._writer.write(pdu.encode() + CTRL_Z)
            final = await asyncio.wait_for(asyncio.shield(cmd.done), wait)
        except TimeoutError:
            self._ready = False
            if pdu is not None and cmd.prompt is not None and not cmd.prompt.done():
                self._writer.write(ESC)  # leave the prompt if it comes late
            raise ChannelConnectionError(
                f"the modem did not answer {text.split('=')[0]} within {wait:g} s"
            ) from None
        finally:
            self._current = None
        if not final.ok:
            raise self._error(text, final)
        return cmd.lines

    def _error(self, text: str, final: at.Final) -> ChannelError:
        code = f"{final.kind}:{final.code}" if final.code is not None else final.kind
        return ChannelError(f"{final.reason} ({text.split('=')[0]})", retryable=final.retryable, code=code)

    async def _init(self) -> None:
        """AT, ATE0, AT+CMEE=1, AT+CPIN?, AT+CSQ, AT+CMGF=0, AT+CNMI (lock held)."""
        await self._command("AT")
        await self._command("ATE0")
        await self._command("AT+CMEE=1")
        state = at.parse_cpin(await self._command("AT+CPIN?"))
        if state == "SIM PIN" and self.pin:
            await self._command(f'AT+CPIN="{self.pin}"')
            state = at.parse_cpin(await self._command("AT+CPIN?"))
        if state != "READY":
            raise ChannelError(
                f"the SIM is not ready ({state or 'no answer'}): "
                + ("set the channel's pin" if state == "SIM PIN" else "check the SIM card"),
                retryable=False,
                code="CPIN",
            )
        self.signal = at.parse_csq(await self._command("AT+CSQ"))
        await self._command("AT+CMGF=0")
        # +CMTI for a new message stored on the SIM, +CDS for a status report (no storage)
        await self._command("AT+CNMI=2,1,0,1,0")
        self._ready = True
        self.inits += 1
        log.info("event=modem_ready channel=%s signal=%s", self.name, self.signal)

    async def _ensure_ready(self) -> None:
        if self._read_task is None or self._read_task.done():
            await self._open()
        if not self._ready:
            await self._init()

    # -- sending -------------------------------------------------------------------------------

    async def send(self, message: OutboundSms) -> SendResult:
        """Each part through AT+CMGS; the `+CMGS: <mr>` references are kept to match reports."""
        self._ref = (self._ref + 1) % 256
        try:
            pdus = encode_submit(
                message.to,
                message.text,
                smsc=self.smsc,
                request_status_report=self.status_reports,
                reference=self._ref,
                max_parts=self.max_parts,
            )
        except MessageTooLong as exc:
            raise ChannelError(str(exc), retryable=False, code="too_long") from None
        except ValueError as exc:
            raise ChannelError(f"cannot encode: {exc}", retryable=False, code="encode") from None
        outgoing = _Outgoing(message.message_id, len(pdus))
        refs = []
        async with self._lock:
            await self._ensure_ready()
            for i, pdu in enumerate(pdus):
                lines = await self._command(
                    f"AT+CMGS={pdu.tpdu_length}", pdu=pdu.hex, timeout=self.send_timeout
                )
                mr = at.parse_cmgs(lines)
                if mr is None:
                    raise ChannelError("the modem accepted the message without a reference", retryable=False)
                refs.append(mr)
                self._by_mr[mr] = (outgoing, i)
                while len(self._by_mr) > 255:  # references wrap at 256
                    self._by_mr.popitem(last=False)
        return SendResult(provider_id="mr:" + ",".join(map(str, refs)), segments=len(pdus), status="sent")

    # -- what the modem tells us ---------------------------------------------------------------

    async def _work_loop(self) -> None:
        while True:
            kind, arg = await self._work.get()
            try:
                if kind == "cds":
                    await self._status_report(*arg)
                elif kind == "cmti":
                    async with self._lock:
                        await self._ensure_ready()
                        await self._read_stored(arg)
                elif kind == "reinit":
                    async with self._lock:
                        await self._ensure_ready()
                elif kind == "stored":
                    async with self._lock:
                        await self._read_all_stored()
            except asyncio.CancelledError:
                raise
            except ChannelError as exc:
                log.warning(
                    "event=modem_work_failed channel=%s kind=%s reason=%s", self.name, kind, exc.reason
                )
            except Exception:
                log.exception("event=modem_work_failed channel=%s kind=%s", self.name, kind)

    async def _status_report(self, length: int, pdu: str) -> None:
        try:
            report = decode_status_report(pdu, length)
        except PduError as exc:
            log.warning("event=modem_bad_status_report channel=%s error=%s pdu=%s", self.name, exc, pdu)
            return
        match = self._by_mr.get(report.reference)
        if match is None or self._sink is None:
            log.info("event=modem_report_unmatched channel=%s mr=%d", self.name, report.reference)
            return
        outgoing, part = match
        outcome = report.outcome
        if outcome == "pending":
            return
        if outcome == "failed":
            if outgoing.failed:
                return
            outgoing.failed = True
            status = "failed"
        else:
            outgoing.delivered.add(part)
            if len(outgoing.delivered) < outgoing.parts or outgoing.failed:
                return
            status = "delivered"
        await self._sink.on_delivery(
            DeliveryReport(
                channel=self.name,
                status=status,  # type: ignore[arg-type]
                message_id=outgoing.message_id,
                error_code=f"TP-ST {report.status:02X}" if status == "failed" else None,
                error_text="the network could not deliver it" if status == "failed" else None,
                at=report.discharge_time,
            )
        )

    async def _read_all_stored(self) -> None:
        """Every message on the SIM (lock held); one that cannot be handed over does not stop the rest."""
        for index, _stat, length, pdu in at.parse_cmgl(await self._command("AT+CMGL=4")):
            try:
                await self._inbound(index, length, pdu)
            except (ChannelError, asyncio.CancelledError):
                raise  # the modem itself is in trouble: the pass stops here
            except Exception:
                # kept on the SIM (not handed over yet): the next pass tries it again
                log.exception("event=modem_inbound_failed channel=%s index=%d", self.name, index)

    async def _read_stored(self, index: int) -> None:
        parsed = at.parse_cmgr(await self._command(f"AT+CMGR={index}"))
        if parsed is None:
            return
        _stat, length, pdu = parsed
        await self._inbound(index, length, pdu)

    async def _inbound(self, index: int, length: int, pdu: str) -> None:
        """Hand a received message over (once all its parts are here), then delete it (lock held)."""
        try:
            msg = decode_deliver(pdu, length)
        except Exception as exc:  # PduError; anything else is a decoder bug, and the same for the SIM
            # the PDU goes to the log (nothing else keeps it), then off the SIM so it cannot block the rest
            log.log(
                logging.WARNING if isinstance(exc, PduError) else logging.ERROR,
                "event=modem_bad_message channel=%s index=%d error=%s pdu=%s",
                self.name,
                index,
                f"{type(exc).__name__}: {exc}",
                pdu,
            )
            await self._command(f"AT+CMGD={index}")
            return
        text = msg.text
        ref = f"{msg.sender}:{msg.timestamp.isoformat()}"
        indexes = [index]
        if msg.concat is not None and msg.concat.total > 1:
            # parts stay on the SIM until the whole message is here (a restart reads them again)
            key = (msg.sender, msg.concat.reference)
            parts = self._partial.setdefault(key, {})
            parts[msg.concat.seq] = (msg.text, index)
            if len(parts) < msg.concat.total:
                return
            del self._partial[key]
            text = "".join(parts[i][0] for i in sorted(parts))
            indexes = [parts[i][1] for i in sorted(parts)]
            ref = f"{msg.sender}:{msg.concat.reference}:{msg.timestamp.isoformat()}"
        if self._sink is not None:
            await self._sink.on_inbound(
                InboundSms(
                    channel=self.name,
                    from_number=msg.sender,
                    to_number=None,
                    text=text,
                    provider_id=ref,
                    at=msg.timestamp,
                )
            )
        for i in indexes:
            await self._command(f"AT+CMGD={i}")
