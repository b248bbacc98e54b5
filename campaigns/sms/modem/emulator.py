"""A GSM modem on a pseudo-terminal pair, for tests and the demo: the serial stack is real.

It speaks the AT dialogue of a common modem (echo until ATE0, CMEE, CPIN, CSQ, CMGF, CNMI, CMGS
with the `> ` prompt and Ctrl-Z, CMGR, CMGD, CMGL), decodes every SMS-SUBMIT it receives with the
independent decoder in `pdu` (and refuses one whose length does not match AT+CMGS with +CMS ERROR
304), answers `+CMGS: <mr>`, sends status reports (+CDS) and stores inbound messages (+CMTI).
Faults on demand: a +CMS error for the next send, a reset (RDY, settings lost), silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from dataclasses import dataclass
from datetime import UTC, datetime

from campaigns.sms.modem.pdu import PduError, Submit, build_deliver, build_status_report, decode_submit

CTRL_Z, ESC = 0x1A, 0x1B


@dataclass(frozen=True, slots=True)
class Received:
    """One SMS-SUBMIT the emulated modem accepted."""

    mr: int
    submit: Submit
    pdu: str


class ModemEmulator:
    """`async with ModemEmulator() as modem:` then open `modem.port` (the pty's slave path)."""

    def __init__(self, *, pin: str | None = None, report_delay: float = 0.02) -> None:
        self.pin = pin
        self.report_delay = report_delay
        self.received: list[Received] = []
        self.commands: list[str] = []
        self.status_for: dict[str, int] = {}  # number -> TP-ST to report (default 0x00 delivered)
        self.silent = False
        self._fail: list[int] = []
        self._master = self._slave = -1
        self.port = ""
        self._buf = b""
        self._pdu_length: int | None = None
        self._mr = 0
        self._storage: dict[int, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._defaults()

    def _defaults(self) -> None:
        self.echo = True
        self.pdu_mode = False
        self.cnmi: tuple[int, ...] = (0, 0, 0, 0, 0)
        self.unlocked = self.pin is None

    async def __aenter__(self) -> ModemEmulator:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        asyncio.get_running_loop().add_reader(self._master, self._readable)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._master >= 0:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1

    # -- faults and the network ------------------------------------------------------------------

    def fail_next(self, cms_code: int) -> None:
        """The next AT+CMGS is answered with +CMS ERROR: cms_code."""
        self._fail.append(cms_code)

    def reset(self) -> None:
        """The modem restarts: echo on, text mode, no indications; it says RDY."""
        self._defaults()
        self._pdu_length = None
        self._buf = b""
        self._write("\r\nRDY\r\n")

    def deliver(self, sender: str, text: str, when: datetime | None = None) -> list[int]:
        """A customer's message arrives: stored on the SIM, announced with +CMTI per part."""
        indexes = []
        ref = (len(self._storage) * 7 + 1) % 256
        for pdu in build_deliver(sender, text, when or datetime.now(UTC), reference=ref):
            index = max(self._storage, default=0) + 1
            self._storage[index] = pdu
            indexes.append(index)
            if self.cnmi[1] in (1, 2):
                self._write(f'\r\n+CMTI: "SM",{index}\r\n')
        return indexes

    def store_pdu(self, pdu: str) -> int:
        """A message stored on the SIM as it is (a damaged one, say), announced with +CMTI; its index."""
        index = max(self._storage, default=0) + 1
        self._storage[index] = pdu
        if self.cnmi[1] in (1, 2):
            self._write(f'\r\n+CMTI: "SM",{index}\r\n')
        return index

    @property
    def stored(self) -> dict[int, str]:
        return dict(self._storage)

    # -- the serial line -------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        if self._master >= 0:
            os.write(self._master, text.encode())

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, OSError):
            return
        if self.silent:
            return
        self._buf += data
        while self._buf:
            if self._pdu_length is not None:
                end = next((i for i, b in enumerate(self._buf) if b in (CTRL_Z, ESC)), -1)
                if end < 0:
                    return
                pdu, control = self._buf[:end].decode(errors="replace").strip(), self._buf[end]
                self._buf = self._buf[end + 1 :]
                length, self._pdu_length = self._pdu_length, None
                if control == ESC:
                    self._write("\r\nOK\r\n")  # sending cancelled
                else:
                    self._submit(length, pdu)
                continue
            end = self._buf.find(b"\r")
            if end < 0:
                return
            line = self._buf[:end].decode(errors="replace").strip()
            self._buf = self._buf[end + 1 :].lstrip(b"\n")
            if line:
                if self.echo:
                    self._write(line + "\r")
                self._command(line)

    def _ok(self, *lines: str) -> None:
        self._write("".join(f"\r\n{line}\r\n" for line in lines) + "\r\nOK\r\n")

    def _cms(self, code: int) -> None:
        self._write(f"\r\n+CMS ERROR: {code}\r\n")

    def _command(self, line: str) -> None:
        self.commands.append(line)
        upper = line.upper()
        if upper == "AT":
            self._ok()
        elif upper in ("ATE0", "ATE1"):
            self.echo = upper == "ATE1"
            self._ok()
        elif upper.startswith("AT+CMEE="):
            self._ok()
        elif upper == "AT+CPIN?":
            self._ok("+CPIN: READY" if self.unlocked else "+CPIN: SIM PIN")
        elif upper.startswith("AT+CPIN="):
            if line.split("=", 1)[1].strip('"') == self.pin:
                self.unlocked = True
                self._ok()
            else:
                self._write("\r\n+CME ERROR: 16\r\n")
        elif upper == "AT+CSQ":
            self._ok("+CSQ: 20,99")
        elif upper.startswith("AT+CMGF="):
            self.pdu_mode = line.endswith("0")
            self._ok()
        elif upper.startswith("AT+CNMI="):
            self.cnmi = tuple(int(x or 0) for x in line.split("=", 1)[1].split(","))
            self._ok()
        elif upper.startswith("AT+CMGS="):
            if not self.unlocked:
                self._cms(311)
            elif not self.pdu_mode:
                self._cms(302)
            else:
                try:
                    self._pdu_length = int(line.split("=", 1)[1])
                except ValueError:
                    self._cms(304)
                    return
                self._write("\r\n> ")
        elif upper.startswith("AT+CMGR="):
            index = int(line.split("=", 1)[1])
            pdu = self._storage.get(index)
            if pdu is None:
                self._cms(321)
            else:
                smsc_octets = int(pdu[:2], 16) + 1
                self._ok(f"+CMGR: 0,,{len(pdu) // 2 - smsc_octets}", pdu)
        elif upper.startswith("AT+CMGD="):
            self._storage.pop(int(line.split("=", 1)[1].split(",")[0]), None)
            self._ok()
        elif upper.startswith("AT+CMGL"):
            lines = []
            for index, pdu in sorted(self._storage.items()):
                smsc_octets = int(pdu[:2], 16) + 1
                lines += [f"+CMGL: {index},1,,{len(pdu) // 2 - smsc_octets}", pdu]
            self._ok(*lines)
        else:
            self._write("\r\nERROR\r\n")

    def _submit(self, length: int, pdu: str) -> None:
        try:
            submit = decode_submit(pdu)
        except PduError:
            self._cms(304)
            return
        if submit.tpdu_length != length:
            self._cms(304)  # AT+CMGS announced another length than the PDU has
            return
        if self._fail:
            self._cms(self._fail.pop(0))
            return
        self._mr = (self._mr + 1) % 256
        mr = self._mr
        self.received.append(Received(mr, submit, pdu))
        self._write(f"\r\n+CMGS: {mr}\r\n\r\nOK\r\n")
        if submit.status_report and self.cnmi[3] == 1:
            task = asyncio.get_running_loop().create_task(self._report(mr, submit.to))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _report(self, mr: int, to: str) -> None:
        await asyncio.sleep(self.report_delay)
        pdu = build_status_report(mr, to, self.status_for.get(to, 0x00), datetime.now(UTC))
        smsc_octets = int(pdu[:2], 16) + 1
        with contextlib.suppress(OSError):
            self._write(f"\r\n+CDS: {len(pdu) // 2 - smsc_octets}\r\n{pdu}\r\n")
