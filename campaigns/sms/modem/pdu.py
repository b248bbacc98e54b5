"""SMS PDUs of 3GPP TS 23.040 (pure): SMS-SUBMIT encoding; SMS-SUBMIT, SMS-DELIVER and
SMS-STATUS-REPORT decoding.

The encoder packs what `campaigns.sms.gsm7.analyze` decided (GSM 03.38 septets through the gsm0338
codec, else UCS-2), one PDU per part, concatenated parts carrying a UDH (IEI 00: 8-bit reference,
total, sequence). The decoders are written separately, octet by octet, with their own copy of the
GSM 03.38 tables, so a test that decodes what the encoder made checks one against the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

from campaigns.sms.gsm7 import analyze

# -- encoding ----------------------------------------------------------------------------------

SUBMIT = 0x01
VPF_RELATIVE = 0x10
SRR = 0x20
UDHI = 0x40
DEFAULT_VALIDITY = 0xA7  # relative validity: 24 hours


@dataclass(frozen=True, slots=True)
class SubmitPdu:
    """One part to send: the hex for AT+CMGS and the TPDU length it announces (without the SMSC)."""

    hex: str
    tpdu_length: int


def encode_address(number: str) -> bytes:
    """TP-DA/OA (and, with a length in octets, the SMSC): digit count, type, swapped semi-octets."""
    digits = number.lstrip("+")
    if not digits.isdigit() or len(digits) > 20:
        raise ValueError(f"not a phone number: {number!r}")
    toa = 0x91 if number.startswith("+") else 0x81
    return bytes([len(digits), toa]) + _semi_octets(digits)


def _semi_octets(digits: str) -> bytes:
    padded = digits + ("F" if len(digits) % 2 else "")
    return bytes(int(padded[i + 1] + padded[i], 16) for i in range(0, len(padded), 2))


def _smsc(smsc: str | None) -> bytes:
    if not smsc:
        return b"\x00"  # the modem uses the SMSC stored on the SIM
    addr = encode_address(smsc)
    return bytes([len(addr) - 1]) + addr[1:]


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """GSM 7-bit packing, least significant bit first, after `fill_bits` zero bits."""
    value, nbits = 0, fill_bits
    for s in septets:
        value |= (s & 0x7F) << nbits
        nbits += 7
    return value.to_bytes((nbits + 7) // 8, "little") if nbits else b""


def encode_submit(
    to: str,
    text: str,
    *,
    smsc: str | None = None,
    request_status_report: bool = True,
    reference: int = 0,
    validity: int | None = DEFAULT_VALIDITY,
    max_parts: int = 10,
) -> list[SubmitPdu]:
    """The SMS-SUBMIT PDUs of a message (one per part); MessageTooLong past `max_parts`."""
    info = analyze(text, max_parts=max_parts)
    ucs2 = info.encoding == "ucs2"
    parts = info.parts
    total = len(parts)
    out = []
    for seq, part in enumerate(parts, start=1):
        first = SUBMIT | (SRR if request_status_report else 0)
        if validity is not None:
            first |= VPF_RELATIVE
        udh = b""
        if total > 1:
            first |= UDHI
            udh = bytes([5, 0x00, 3, reference & 0xFF, total, seq])
        if ucs2:
            body = part.encode("utf-16-be")
            ud = udh + body
            udl = len(ud)
        else:
            septets = part.encode("gsm03.38")
            if udh:
                fill = (7 - (len(udh) * 8) % 7) % 7
                ud = udh + pack_septets(septets, fill)
                udl = (len(udh) * 8 + fill) // 7 + len(septets)
            else:
                ud = pack_septets(septets)
                udl = len(septets)
        tpdu = (
            bytes([first, 0x00])
            + encode_address(to)
            + bytes([0x00, 0x08 if ucs2 else 0x00])
            + (bytes([validity]) if validity is not None else b"")
            + bytes([udl])
            + ud
        )
        out.append(SubmitPdu((_smsc(smsc) + tpdu).hex().upper(), len(tpdu)))
    return out


# -- decoding ----------------------------------------------------------------------------------

_GSM7 = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXT = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}


class PduError(ValueError):
    """A PDU that is not what it claims to be (truncated, wrong type, bad lengths)."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise PduError(f"truncated at octet {self.pos}")
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise PduError(
                f"truncated: {n} octets wanted at octet {self.pos}, {len(self.data) - self.pos} left"
            )
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)


def _hex(pdu: str) -> bytes:
    try:
        return bytes.fromhex(pdu.strip())
    except ValueError:
        raise PduError("not hexadecimal") from None


def unpack_septets(data: bytes, count: int, skip_bits: int = 0) -> list[int]:
    """`count` septets from packed octets, starting `skip_bits` in."""
    value = int.from_bytes(data, "little")
    return [(value >> (skip_bits + 7 * i)) & 0x7F for i in range(count)]


def gsm7_to_text(septets: list[int]) -> str:
    out, escape = [], False
    for s in septets:
        if escape:
            out.append(_GSM7_EXT.get(s, " "))  # an unknown escape shows as a space (23.038)
            escape = False
        elif s == 0x1B:
            escape = True
        else:
            out.append(_GSM7[s])
    return "".join(out)


def _digits(octets: bytes, count: int) -> str:
    swapped = "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in octets)
    return swapped[:count]


def _address(r: _Reader) -> str:
    length, toa = r.byte(), r.byte()
    if (toa & 0x70) == 0x50:  # alphanumeric, GSM 7-bit packed; length counts semi-octets
        raw = r.take((length + 1) // 2)
        return gsm7_to_text(unpack_septets(raw, length * 4 // 7))
    digits = _digits(r.take((length + 1) // 2), length)
    return ("+" if (toa & 0x70) == 0x10 else "") + digits


def _timestamp(octets: bytes) -> datetime:
    def bcd(b: int) -> int:
        return (b & 0x0F) * 10 + (b >> 4)

    yy, mo, dd, hh, mi, ss = (bcd(b) for b in octets[:6])
    tz = octets[6]
    quarters = (tz & 0x07) * 10 + (tz >> 4)
    offset = timedelta(minutes=15 * quarters) * (-1 if tz & 0x08 else 1)
    try:
        return datetime(2000 + yy, mo, dd, hh, mi, ss, tzinfo=timezone(offset))
    except ValueError:
        raise PduError(f"bad time stamp {octets.hex()}") from None


def _skip_smsc(r: _Reader, tpdu_length: int | None) -> str | None:
    if tpdu_length is not None and len(r.data) == tpdu_length:
        return None  # the modem sent the TPDU alone
    n = r.byte()
    if n == 0:
        return None
    toa = r.byte()
    digits = _digits(r.take(n - 1), (n - 1) * 2).rstrip("F")
    return ("+" if (toa & 0x70) == 0x10 else "") + digits


@dataclass(frozen=True, slots=True)
class Concat:
    reference: int
    total: int
    seq: int


def _user_data(r: _Reader, dcs: int, udl: int, udhi: bool) -> tuple[str, Concat | None]:
    data = r.rest()
    if (dcs & 0xC0) == 0x00:
        alphabet = (dcs >> 2) & 0x03
    elif (dcs & 0xF0) == 0xF0:
        alphabet = 1 if dcs & 0x04 else 0
    else:
        alphabet = 0
    concat, header_len = None, 0
    if udhi:
        if not data:
            raise PduError("UDHI set but no user data")
        udhl = data[0]
        header = data[1 : 1 + udhl]
        if len(header) != udhl:
            raise PduError("user data header longer than the user data")
        header_len = udhl + 1
        i = 0
        while i + 1 < len(header):
            iei, ln = header[i], header[i + 1]
            ie = header[i + 2 : i + 2 + ln]
            if len(ie) != ln:
                raise PduError(f"header element {iei:02X} longer than the user data header")
            if iei == 0x00 and ln == 3:
                concat = Concat(ie[0], ie[1], ie[2])
            elif iei == 0x08 and ln == 4:
                concat = Concat(ie[0] << 8 | ie[1], ie[2], ie[3])
            i += 2 + ln
    if alphabet == 0:
        skip_bits = ((header_len * 8 + 6) // 7) * 7 if header_len else 0
        count = udl - skip_bits // 7
        if count < 0 or (skip_bits + 7 * count + 7) // 8 > len(data):
            raise PduError("user data length does not match the user data")
        return gsm7_to_text(unpack_septets(data, count, skip_bits)), concat
    body = data[header_len:udl]
    if len(data) < udl:
        raise PduError("user data length does not match the user data")
    if alphabet == 2:
        return body.decode("utf-16-be", errors="replace"), concat
    return body.decode("latin-1"), concat


@dataclass(frozen=True, slots=True)
class Submit:
    to: str
    text: str
    status_report: bool
    reference: int
    dcs: int
    concat: Concat | None
    tpdu_length: int


def decode_submit(pdu: str) -> Submit:
    """An SMS-SUBMIT as a modem receives it after AT+CMGS (SMSC prefix included)."""
    r = _Reader(_hex(pdu))
    _skip_smsc(r, None)
    start = r.pos
    first = r.byte()
    if first & 0x03 != 0x01:
        raise PduError(f"not an SMS-SUBMIT (first octet {first:02X})")
    mr = r.byte()
    to = _address(r)
    r.byte()  # TP-PID
    dcs = r.byte()
    vpf = (first >> 3) & 0x03
    r.take({0: 0, 2: 1, 1: 7, 3: 7}[vpf])
    udl = r.byte()
    text, concat = _user_data(r, dcs, udl, bool(first & UDHI))
    return Submit(to, text, bool(first & SRR), mr, dcs, concat, len(r.data) - start)


@dataclass(frozen=True, slots=True)
class Deliver:
    sender: str
    text: str
    timestamp: datetime
    concat: Concat | None
    smsc: str | None


def decode_deliver(pdu: str, tpdu_length: int | None = None) -> Deliver:
    """An SMS-DELIVER (what AT+CMGR returns for a received message)."""
    r = _Reader(_hex(pdu))
    smsc = _skip_smsc(r, tpdu_length)
    first = r.byte()
    if first & 0x03 != 0x00:
        raise PduError(f"not an SMS-DELIVER (first octet {first:02X})")
    sender = _address(r)
    r.byte()  # TP-PID
    dcs = r.byte()
    ts = _timestamp(r.take(7))
    udl = r.byte()
    text, concat = _user_data(r, dcs, udl, bool(first & UDHI))
    return Deliver(sender, text, ts, concat, smsc)


@dataclass(frozen=True, slots=True)
class StatusReport:
    reference: int
    recipient: str
    status: int
    service_centre_time: datetime
    discharge_time: datetime

    @property
    def outcome(self) -> str:
        """delivered (0x00–0x1F), pending (0x20–0x3F: the SC still tries), failed (0x40 and up)."""
        if self.status < 0x20:
            return "delivered"
        return "pending" if self.status < 0x40 else "failed"


def decode_status_report(pdu: str, tpdu_length: int | None = None) -> StatusReport:
    """An SMS-STATUS-REPORT (+CDS). `tpdu_length` is the length +CDS announced: when the PDU is
    exactly that long the modem left the SMSC out."""
    r = _Reader(_hex(pdu))
    _skip_smsc(r, tpdu_length)
    first = r.byte()
    if first & 0x03 != 0x02:
        raise PduError(f"not an SMS-STATUS-REPORT (first octet {first:02X})")
    mr = r.byte()
    recipient = _address(r)
    scts = _timestamp(r.take(7))
    dt = _timestamp(r.take(7))
    return StatusReport(mr, recipient, r.byte(), scts, dt)


# -- building what a network sends (the modem emulator and tests use these) --------------------


def _ts_octets(when: datetime) -> bytes:
    when = when.astimezone(when.tzinfo or UTC)
    off = when.utcoffset() or timedelta(0)
    quarters = int(abs(off.total_seconds()) // 900)

    def bcd(n: int) -> int:
        return (n % 10) << 4 | (n // 10)

    tz = bcd(quarters) | (0x08 if off < timedelta(0) else 0)
    return bytes(
        bcd(v) for v in (when.year % 100, when.month, when.day, when.hour, when.minute, when.second)
    ) + bytes([tz])


def build_deliver(
    sender: str, text: str, when: datetime, *, smsc: str = "+15550000000", reference: int = 0
) -> list[str]:
    """SMS-DELIVER PDUs (with the SMSC) of a message a customer sent, concatenated if long."""
    info = analyze(text, max_parts=255)
    ucs2 = info.encoding == "ucs2"
    out = []
    for seq, part in enumerate(info.parts, start=1):
        udh = bytes([5, 0, 3, reference & 0xFF, len(info.parts), seq]) if len(info.parts) > 1 else b""
        if ucs2:
            ud = udh + part.encode("utf-16-be")
            udl = len(ud)
        else:
            septets = part.encode("gsm03.38")
            fill = (7 - (len(udh) * 8) % 7) % 7 if udh else 0
            ud = udh + pack_septets(septets, fill)
            udl = ((len(udh) * 8 + fill) // 7 if udh else 0) + len(septets)
        first = 0x04 | (UDHI if udh else 0)  # TP-MMS: no more messages
        tpdu = (
            bytes([first])
            + encode_address(sender)
            + bytes([0, 0x08 if ucs2 else 0])
            + _ts_octets(when)
            + bytes([udl])
            + ud
        )
        out.append((_smsc(smsc) + tpdu).hex().upper())
    return out


def build_status_report(
    reference: int, recipient: str, status: int, when: datetime, *, smsc: str | None = "+15550000000"
) -> str:
    """An SMS-STATUS-REPORT PDU (with the SMSC unless None)."""
    tpdu = (
        bytes([0x06, reference & 0xFF])
        + encode_address(recipient)
        + _ts_octets(when)
        + _ts_octets(when)
        + bytes([status])
    )
    return ((_smsc(smsc) if smsc is not None else b"") + tpdu).hex().upper()
