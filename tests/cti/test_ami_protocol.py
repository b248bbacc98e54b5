"""The AMI parser against byte-exact transcripts of a real Asterisk: whole, chunked, byte by byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cti.ami.protocol import Action, AmiParser, Event, Response, encode_action, encode_message
from tests.cti.conftest import TRANSCRIPTS


def _kinds(messages: list) -> list[tuple[str, str, dict]]:
    out = []
    for m in messages:
        name = m.name if isinstance(m, Event | Action) else m.status
        out.append((type(m).__name__, name, dict(m.headers)))
    return out


def _whole(data: bytes) -> list:
    return AmiParser().feed(data)


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_split_anywhere_gives_the_same_messages(path) -> None:
    data = path.read_bytes()
    whole = _whole(data)
    assert whole and isinstance(whole[0], Response) and whole[0].message == "Authentication accepted"
    p = AmiParser()
    one_by_one = []
    for i in range(len(data)):
        one_by_one += p.feed(data[i : i + 1])
    assert _kinds(one_by_one) == _kinds(whole)
    assert p.banner == "Asterisk Call Manager/11.0.0" and p.bad_lines == 0
    # trailing partial packet stays buffered until it completes
    p2 = AmiParser()
    head = p2.feed(data + b"Event: Partial\r\nFoo: bar")
    assert _kinds(head) == _kinds(whole)
    assert [(k, n) for k, n, _ in _kinds(p2.feed(b"\r\n\r\n"))] == [("Event", "Partial")]


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=200))
def test_random_chunks(cuts: list[int]) -> None:
    data = TRANSCRIPTS[0].read_bytes()
    expected = _kinds(_whole(data))
    p, out, i, k = AmiParser(), [], 0, 0
    while i < len(data):
        n = cuts[k % len(cuts)]
        out += p.feed(data[i : i + n])
        i, k = i + n, k + 1
    assert _kinds(out) == expected


def test_command_output_and_cdr_spelling() -> None:
    msgs = _whole(next(p for p in TRANSCRIPTS if p.stem == "status-idle").read_bytes())
    cmd = next(m for m in msgs if isinstance(m, Response) and m.message == "Command output follows")
    assert cmd.output[0].startswith("Asterisk 22.10.1")
    cdr = next(m for m in _whole(TRANSCRIPTS[0].read_bytes()) if isinstance(m, Event) and m.name == "Cdr")
    assert cdr.get("Uniqueid") == cdr.headers["UniqueID"]  # case-insensitive lookup


def test_garbage_is_counted_and_skipped() -> None:
    p = AmiParser()
    out = p.feed(
        b"Asterisk Call Manager/11.0.0\r\n\x00\xff garbage line\r\nno colon here\r\n\r\n"
        b"Event: Hangup\r\nUniqueid: 1.1\r\n\r\n: empty key\r\n\r\n"
    )
    assert [(k, n) for k, n, _ in _kinds(out)] == [("Event", "Hangup")]
    assert p.bad_lines >= 2


header_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40).map(str.strip)


@given(
    name=st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,20}", fullmatch=True),
    headers=st.dictionaries(
        st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True), header_text, max_size=8
    ),
    variables=st.dictionaries(st.from_regex(r"[A-Z_]{1,10}", fullmatch=True), header_text, max_size=3),
)
def test_encode_parse_round_trip(name: str, headers: dict, variables: dict) -> None:
    headers = {
        k: v
        for k, v in headers.items()
        if k.lower() not in ("action", "actionid", "variable", "output", "event", "response")
    }
    (action,) = AmiParser(expect_banner=False).feed(encode_action(name, "id-1", headers, variables))
    assert isinstance(action, Action) and action.name == name and action.action_id == "id-1"
    for k, v in headers.items():
        assert action.get(k) == v
    assert list(action.variables) == [f"{k}={v}" for k, v in variables.items()]
    (event,) = AmiParser(expect_banner=False).feed(encode_message("Event", name, headers))
    assert isinstance(event, Event) and event.name == name


def test_line_breaks_cannot_be_injected() -> None:
    with pytest.raises(ValueError, match="line breaks"):
        encode_action("Originate", "1", {"Exten": "123\r\nAction: Command"})
