"""PDUs: the encoder against published vectors and against the separately written decoders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from campaigns.sms.gsm7 import MessageTooLong
from campaigns.sms.modem.pdu import (
    PduError,
    build_deliver,
    build_status_report,
    decode_deliver,
    decode_status_report,
    decode_submit,
    encode_submit,
    pack_septets,
)

GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXT = "^{}\\[~]|€\f"
numbers = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)


def test_published_submit_vector() -> None:
    # the widely published example: "hellohello" to +1 512 555 1234, no validity, no report
    (pdu,) = encode_submit("+15125551234", "hellohello", request_status_report=False, validity=None)
    assert pdu.hex == "0001000B915121551532F400000AE8329BFD4697D9EC37"
    assert pdu.tpdu_length == 22
    decoded = decode_submit(pdu.hex)
    assert (decoded.to, decoded.text, decoded.status_report, decoded.concat) == (
        "+15125551234",
        "hellohello",
        False,
        None,
    )


def test_published_deliver_vector() -> None:
    d = decode_deliver("07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07")
    assert d.sender == "+31641600986" and d.text == "How are you?" and d.smsc == "+31624000000"
    assert d.timestamp.replace(tzinfo=None) == datetime(2002, 8, 26, 19, 37, 41)


def test_published_status_report_vector() -> None:
    # +CDS: 25 / 06000B9102218157 16F2 … 00: delivered; the modem left out the SMSC
    r = decode_status_report("06000B910221815716F2709021510121807090215101718000", 25)
    assert (r.reference, r.recipient, r.status, r.outcome) == (0, "+20121875612", 0, "delivered")
    tz = timezone(timedelta(hours=2))
    assert r.service_centre_time == datetime(2007, 9, 12, 15, 10, 12, tzinfo=tz)
    assert r.discharge_time == datetime(2007, 9, 12, 15, 10, 17, tzinfo=tz)


def test_status_categories_and_sender_names() -> None:
    when = datetime(2026, 11, 23, 9, 30, tzinfo=timezone(timedelta(hours=-6)))
    for status, outcome in ((0x00, "delivered"), (0x21, "pending"), (0x45, "failed"), (0x60, "failed")):
        r = decode_status_report(build_status_report(7, "+15125551234", status, when))
        assert (r.reference, r.outcome, r.discharge_time) == (7, outcome, when)
    # an alphanumeric sender (type D0: GSM-7 packed, the length in semi-octets)
    name = pack_septets("Dealer".encode("gsm03.38"))  # 42 bits: 11 semi-octets
    pdu = (
        "00" + "04" + "0B" + "D0" + name.hex() + "0000" + "62113290030000" + "02" + pack_septets(b"Hi").hex()
    )
    d = decode_deliver(pdu)
    assert (d.sender, d.text, d.smsc) == ("Dealer", "Hi", None)


def test_long_messages_are_concatenated_with_a_header() -> None:
    text = "Service special this Saturday! " * 10  # 310 GSM-7 characters → 3 parts of ≤ 153
    pdus = encode_submit("+12125550147", text, reference=42)
    decoded = [decode_submit(p.hex) for p in pdus]
    assert [(d.concat.reference, d.concat.total, d.concat.seq) for d in decoded if d.concat] == [
        (42, 3, 1),
        (42, 3, 2),
        (42, 3, 3),
    ]
    assert "".join(d.text for d in decoded) == text
    assert all(p.tpdu_length <= 140 + 14 for p in pdus)
    with pytest.raises(MessageTooLong):
        encode_submit("+12125550147", "x" * 2000, max_parts=3)


def test_bad_pdus_are_refused() -> None:
    with pytest.raises(PduError):
        decode_submit("00 11")
    with pytest.raises(PduError):
        decode_submit("0001000B915121551532F400000AE8329B")  # truncated user data
    with pytest.raises(PduError):
        decode_deliver("0001000B915121551532F400000AE8329BFD4697D9EC37")  # a SUBMIT, not a DELIVER
    with pytest.raises(PduError):
        decode_status_report("zz")


def _roundtrip(to: str, text: str) -> None:
    pdus = encode_submit(to, text, reference=9, max_parts=255)
    decoded = [decode_submit(p.hex) for p in pdus]
    assert "".join(d.text for d in decoded) == text
    assert all(d.to == to for d in decoded)
    for p, d in zip(pdus, decoded, strict=True):
        assert d.tpdu_length == p.tpdu_length
        header = 2 + 2 + (len(to) - 1 + 1) // 2 + 4  # first, MR, address, PID, DCS, VP, UDL
        assert p.tpdu_length - header <= 140  # at most 140 octets of user data
    if len(pdus) > 1:
        assert [d.concat.seq for d in decoded if d.concat] == list(range(1, len(pdus) + 1))


@settings(max_examples=300, deadline=None)
@given(numbers, st.text(alphabet=GSM_BASIC + GSM_EXT, min_size=1, max_size=700))
def test_gsm7_roundtrip(to: str, text: str) -> None:
    _roundtrip(to, text)


@settings(max_examples=300, deadline=None)
@given(numbers, st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=300))
@example("+1000000", "\x1b")  # found by hypothesis: ESC is the extension-table escape, not a character
def test_any_text_roundtrip(to: str, text: str) -> None:
    _roundtrip(to, text)


@settings(max_examples=100, deadline=None)
@given(numbers, st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=400))
def test_deliver_builder_and_decoder_agree(sender: str, text: str) -> None:
    when = datetime(2026, 11, 23, 9, 30, 5, tzinfo=UTC)
    parts = [decode_deliver(p) for p in build_deliver(sender, text, when, reference=3)]
    assert "".join(p.text for p in parts) == text and all(
        p.sender == sender and p.timestamp == when for p in parts
    )


# a concatenation element cut short by the header's own length (IEI 00, length 3, one octet left)
SHORT_IE = (
    "07915155000000F0440B915155214365F70008621020304050003E040003070303"
    "D83DDE00D83DDEABD83DDE00D83DDE00D83DDE00"
)


def test_a_header_element_longer_than_the_header_is_a_pdu_error() -> None:
    with pytest.raises(PduError, match="element"):
        decode_deliver(SHORT_IE)


DECODERS = (
    lambda pdu, n: decode_deliver(pdu, n),
    lambda pdu, n: decode_status_report(pdu, n),
    lambda pdu, _n: decode_submit(pdu),
)


@settings(max_examples=400)
@given(st.binary(max_size=200), st.one_of(st.none(), st.integers(0, 300)))
@example(bytes.fromhex(SHORT_IE), None)
def test_decoders_raise_only_pdu_error_on_any_bytes(data: bytes, length: int | None) -> None:
    for decode in DECODERS:
        try:
            decode(data.hex().upper(), length)
        except PduError:
            pass


@settings(max_examples=300)
@given(st.sampled_from(["deliver", "report"]), st.data())
def test_decoders_raise_only_pdu_error_on_damaged_real_pdus(kind: str, data: st.DataObject) -> None:
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    if kind == "deliver":
        text = data.draw(st.text(min_size=1, max_size=400))
        pdu = bytearray.fromhex(build_deliver("+12125550147", text, when, reference=9)[0])
    else:
        pdu = bytearray.fromhex(build_status_report(3, "+12125550147", 0x00, when))
    for _ in range(data.draw(st.integers(1, 4))):  # flip a few octets, then maybe cut it short
        i = data.draw(st.integers(0, len(pdu) - 1))
        pdu[i] = data.draw(st.integers(0, 255))
    pdu = pdu[: data.draw(st.integers(0, len(pdu)))]
    for decode in DECODERS:
        try:
            decode(pdu.hex(), None)
        except PduError:
            pass
