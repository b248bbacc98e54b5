"""The Asterisk Manager Interface wire protocol, with no I/O (h11-style).

Feed bytes with `AmiParser.feed()`; get back `Event`, `Response` and `Action` messages. Packets are
`Key: Value` lines ended by CRLF, a packet ends with an empty line, and the connection opens with
a banner line (`Asterisk Call Manager/11.0.0`). Bad lines are counted and skipped, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import overload

log = logging.getLogger("cti.ami")

BANNER_PREFIX = b"Asterisk Call Manager/"
MAX_PACKET = 1 << 20  # a packet larger than this is garbage; drop the buffer


class Headers(Mapping[str, str]):
    """The lines of one packet; lookups are exact first, then case-insensitive (Cdr spells UniqueID)."""

    __slots__ = ("_d", "_lower")

    def __init__(self, data: dict[str, str]) -> None:
        self._d = data
        self._lower: dict[str, str] | None = None

    def __getitem__(self, key: str) -> str:
        try:
            return self._d[key]
        except KeyError:
            if self._lower is None:
                self._lower = {k.lower(): v for k, v in self._d.items()}
            return self._lower[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return f"Headers({self._d!r})"


@dataclass(frozen=True, slots=True)
class Event:
    """An unsolicited (or list) event: `Event: Name` plus its headers."""

    name: str
    headers: Headers

    @property
    def action_id(self) -> str | None:
        return self.headers.get("ActionID")

    @overload
    def get(self, key: str) -> str | None: ...
    @overload
    def get(self, key: str, default: str) -> str: ...
    def get(self, key: str, default: str | None = None) -> str | None:
        return self.headers.get(key, default)


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to an action: `Response: Success|Error|Follows|Goodbye`."""

    status: str
    headers: Headers
    output: tuple[str, ...] = field(default=())

    @property
    def action_id(self) -> str | None:
        return self.headers.get("ActionID")

    @property
    def ok(self) -> bool:
        return self.status in ("Success", "Follows", "Goodbye")

    @property
    def message(self) -> str:
        return self.headers.get("Message", "") or ""

    @overload
    def get(self, key: str) -> str | None: ...
    @overload
    def get(self, key: str, default: str) -> str: ...
    def get(self, key: str, default: str | None = None) -> str | None:
        return self.headers.get(key, default)


@dataclass(frozen=True, slots=True)
class Action:
    """A request a client sent (what a server, such as our test PBX, parses)."""

    name: str
    headers: Headers
    variables: tuple[str, ...] = ()

    @property
    def action_id(self) -> str | None:
        return self.headers.get("ActionID")

    @overload
    def get(self, key: str) -> str | None: ...
    @overload
    def get(self, key: str, default: str) -> str: ...
    def get(self, key: str, default: str | None = None) -> str | None:
        return self.headers.get(key, default)


Message = Event | Response | Action


class AmiParser:
    """Turns a byte stream into messages; any split of the stream gives the same messages."""

    def __init__(self, expect_banner: bool = True) -> None:
        self._buf = b""
        self._scanned = 0  # bytes of _buf already searched for a packet end
        self._expect_banner = expect_banner
        self.banner: str | None = None
        self.bad_lines = 0
        self.dropped_bytes = 0

    def feed(self, data: bytes) -> list[Message]:
        """Add bytes; return every complete message they finish."""
        buf = self._buf + data if self._buf else data
        if self._expect_banner:
            if len(buf) < len(BANNER_PREFIX) and BANNER_PREFIX.startswith(buf):
                self._buf = buf
                return []
            if buf.startswith(BANNER_PREFIX):
                end = buf.find(b"\r\n")
                if end < 0:
                    self._buf = buf
                    return []
                self.banner = buf[:end].decode("utf-8", "replace")
                buf = buf[end + 2 :]
            self._expect_banner = False
        out: list[Message] = []
        start = 0
        search = max(0, self._scanned - 3)
        while True:
            end = buf.find(b"\r\n\r\n", max(start, search))
            if end < 0:
                break
            msg = self._packet(buf[start:end])
            if msg is not None:
                out.append(msg)
            start = end + 4
        rest = buf[start:]
        self._scanned = len(rest)
        if len(rest) > MAX_PACKET:
            self.dropped_bytes += len(rest)
            log.warning("event=ami_oversized_packet bytes=%d", len(rest))
            rest = b""
            self._scanned = 0
        self._buf = rest
        return out

    def _packet(self, raw: bytes) -> Message | None:
        text = raw.decode("utf-8", "replace")
        headers: dict[str, str] = {}
        output: list[str] = []
        variables: list[str] = []
        for line in text.split("\r\n"):
            key, sep, value = line.partition(": ")
            if not sep:
                if line.endswith(":") and line.count(":") == 1:
                    key, value = line[:-1], ""
                elif line == "--END COMMAND--" or (line and "Response" in headers and line[0] != " "):
                    output.append(line)  # legacy `Response: Follows` command output
                    continue
                elif not line:
                    continue
                else:
                    self.bad_lines += 1
                    continue
            if not key or " " in key:
                self.bad_lines += 1
                continue
            if key == "Output":
                output.append(value)
            elif key == "Variable":
                variables.append(value)
                headers.setdefault(key, value)
            elif key in headers:
                headers[key] = headers[key] + "\n" + value
            else:
                headers[key] = value
        if "Event" in headers:
            return Event(headers["Event"], Headers(headers))
        if "Response" in headers:
            return Response(headers["Response"], Headers(headers), tuple(output))
        if "Action" in headers:
            return Action(headers["Action"], Headers(headers), tuple(variables))
        if headers or output:
            self.bad_lines += 1
        return None


def _clean(value: object) -> str:
    text = str(value)
    if "\r" in text or "\n" in text:
        raise ValueError(f"AMI header values cannot contain line breaks: {text!r}")
    return text


def encode_action(
    name: str,
    action_id: str,
    headers: Mapping[str, object] | None = None,
    variables: Mapping[str, object] | None = None,
) -> bytes:
    """An action packet; `variables` become repeated `Variable: name=value` lines."""
    lines = [f"Action: {_clean(name)}", f"ActionID: {_clean(action_id)}"]
    for key, value in (headers or {}).items():
        if value is None:
            continue
        lines.append(f"{_clean(key)}: {_clean(value)}")
    for key, value in (variables or {}).items():
        lines.append(f"Variable: {_clean(key)}={_clean(value)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def encode_message(kind: str, value: str, headers: Mapping[str, object]) -> bytes:
    """A server-side packet (`Response: Success` / `Event: Name`) with its headers."""
    lines = [f"{kind}: {_clean(value)}"] + [
        f"{_clean(k)}: {_clean(v)}" for k, v in headers.items() if v is not None
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
