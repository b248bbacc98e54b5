"""The AT dialogue of 3GPP TS 27.005/27.007 as text (pure): result codes, responses, unsolicited
lines, and what each +CMS / +CME error means."""

from __future__ import annotations

import re
from dataclasses import dataclass

# +CMS ERROR <err> (27.005 §3.2.5; values below 128 are TS 24.011 RP causes, 128–255 TS 23.040
# TP-FCS values): a clear reason and whether sending again later can help
CMS_ERRORS: dict[int, tuple[str, bool]] = {
    1: ("unassigned (unallocated) number", False),
    8: ("operator determined barring", False),
    10: ("call barred", False),
    21: ("short message transfer rejected by the network", False),
    27: ("destination out of service", True),
    28: ("unidentified subscriber", False),
    29: ("facility rejected", False),
    30: ("unknown subscriber", False),
    38: ("network out of order", True),
    41: ("temporary network failure", True),
    42: ("network congestion", True),
    47: ("network resources unavailable", True),
    50: ("requested facility not subscribed", False),
    69: ("requested facility not implemented", False),
    81: ("invalid short message reference value", False),
    95: ("invalid message", False),
    96: ("invalid mandatory information", False),
    97: ("message type non-existent or not implemented", False),
    98: ("message not compatible with the protocol state", False),
    99: ("information element non-existent or not implemented", False),
    111: ("protocol error", False),
    127: ("interworking error", False),
    128: ("telematic interworking not supported", False),
    129: ("short message type 0 not supported", False),
    143: ("unspecified TP-PID error", False),
    144: ("data coding scheme (alphabet) not supported", False),
    159: ("unspecified TP-DCS error", False),
    175: ("unspecified TP-command error", False),
    176: ("TPDU not supported", False),
    192: ("SC busy", True),
    193: ("no SC subscription", False),
    194: ("SC system failure", True),
    195: ("invalid SME address", False),
    196: ("destination SME barred", False),
    197: ("SM rejected: duplicate SM", False),
    208: ("SIM SMS storage full", True),
    300: ("modem failure", True),
    301: ("SMS service of the modem reserved", True),
    302: ("operation not allowed", False),
    303: ("operation not supported", False),
    304: ("invalid PDU mode parameter", False),
    305: ("invalid text mode parameter", False),
    310: ("SIM not inserted", False),
    311: ("SIM PIN required", False),
    312: ("PH-SIM PIN required", False),
    313: ("SIM failure", False),
    314: ("SIM busy", True),
    315: ("SIM wrong", False),
    316: ("SIM PUK required", False),
    317: ("SIM PIN2 required", False),
    318: ("SIM PUK2 required", False),
    320: ("memory failure", True),
    321: ("invalid memory index", False),
    322: ("memory full", True),
    330: ("SMSC address unknown", False),
    331: ("no network service", True),
    332: ("network timeout", True),
    340: ("no +CNMA acknowledgement expected", False),
    500: ("unknown error", True),
}
CME_ERRORS: dict[int, str] = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    14: "SIM busy",
    15: "SIM wrong",
    16: "incorrect password",
    30: "no network service",
    31: "network timeout",
    100: "unknown",
}


@dataclass(frozen=True, slots=True)
class Final:
    """A final result code: OK, or an error with its code and reason."""

    ok: bool
    kind: str = "OK"  # OK | ERROR | CMS | CME
    code: int | None = None

    @property
    def reason(self) -> str:
        if self.kind == "CMS" and self.code is not None:
            return CMS_ERRORS.get(self.code, (f"+CMS ERROR {self.code}", True))[0]
        if self.kind == "CME" and self.code is not None:
            return CME_ERRORS.get(self.code, f"+CME ERROR {self.code}")
        return "the modem answered ERROR" if not self.ok else "OK"

    @property
    def retryable(self) -> bool:
        if self.kind == "CMS" and self.code is not None:
            return CMS_ERRORS.get(self.code, ("", True))[1]
        return self.kind not in ("CME",)


_ERR = re.compile(r"^\+(CMS|CME) ERROR:\s*(\d+)\s*$")


def parse_final(line: str) -> Final | None:
    """The final result code a line is, if it is one."""
    if line == "OK":
        return Final(True)
    if line in ("ERROR", "NO CARRIER"):
        return Final(False, "ERROR")
    m = _ERR.match(line)
    if m:
        return Final(False, m.group(1), int(m.group(2)))
    if line.startswith(("+CMS ERROR:", "+CME ERROR:")):  # verbose errors (CMEE=2)
        return Final(False, line[1:4], None)
    return None


# unsolicited result codes: a message arrived, a status report, a modem (re)start
BOOT_LINES = ("RDY", "START", "+CFUN: 1", "PB DONE", "SMS DONE", "^SYSSTART", "+PBREADY")


def is_boot(line: str) -> bool:
    """A line a modem prints when it has just (re)started: its settings are gone."""
    return line in BOOT_LINES


def parse_cmti(line: str) -> tuple[str, int] | None:
    """`+CMTI: "SM",3` → ("SM", 3)."""
    m = re.match(r'^\+CMTI:\s*"?([A-Z]+)"?\s*,\s*(\d+)\s*$', line)
    return (m.group(1), int(m.group(2))) if m else None


def parse_cds(line: str) -> int | None:
    """`+CDS: 25` (a PDU line follows) → 25, the TPDU length."""
    m = re.match(r"^\+CDS:\s*(\d+)\s*$", line)
    return int(m.group(1)) if m else None


def parse_cmgs(lines: list[str]) -> int | None:
    """The message reference of `+CMGS: <mr>`."""
    for line in lines:
        m = re.match(r"^\+CMGS:\s*(\d+)", line)
        if m:
            return int(m.group(1))
    return None


def parse_cmgr(lines: list[str]) -> tuple[int, int, str] | None:
    """`+CMGR: <stat>,[<alpha>],<length>` then the PDU → (stat, length, pdu)."""
    for i, line in enumerate(lines):
        m = re.match(r"^\+CMGR:\s*(\d+)\s*,[^,]*,\s*(\d+)\s*$", line)
        if m and i + 1 < len(lines):
            return int(m.group(1)), int(m.group(2)), lines[i + 1].strip()
    return None


def parse_cmgl(lines: list[str]) -> list[tuple[int, int, int, str]]:
    """`+CMGL: <index>,<stat>,[<alpha>],<length>` + PDU, for each stored message."""
    out = []
    for i, line in enumerate(lines):
        m = re.match(r"^\+CMGL:\s*(\d+)\s*,\s*(\d+)\s*,[^,]*,\s*(\d+)\s*$", line)
        if m and i + 1 < len(lines):
            out.append((int(m.group(1)), int(m.group(2)), int(m.group(3)), lines[i + 1].strip()))
    return out


def parse_csq(lines: list[str]) -> tuple[int, int] | None:
    """`+CSQ: <rssi>,<ber>` (rssi 0–31, 99 = unknown)."""
    for line in lines:
        m = re.match(r"^\+CSQ:\s*(\d+)\s*,\s*(\d+)", line)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def parse_cpin(lines: list[str]) -> str | None:
    """`+CPIN: READY` → "READY" (or SIM PIN, SIM PUK …)."""
    for line in lines:
        if line.startswith("+CPIN:"):
            return line.split(":", 1)[1].strip()
    return None
