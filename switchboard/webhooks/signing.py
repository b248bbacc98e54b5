"""Webhook signatures (pure): `Switchboard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
`<t>.<body>`, so a receiver can check who sent the body and refuse a replay outside its window."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Switchboard-Signature"
EVENT_ID_HEADER = "Switchboard-Event-Id"
EVENT_TYPE_HEADER = "Switchboard-Event-Type"


class SignatureError(ValueError):
    """A signature that is missing, malformed, wrong or outside the replay window."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def parse(header: str) -> tuple[int, list[str]]:
    """The timestamp and the v1 signatures of a header (several v1 while a secret is rotated)."""
    ts: int | None = None
    sigs: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit() and len(value) <= 12:
            ts = int(value)
        elif key == "v1" and len(value) == 64:
            sigs.append(value.lower())
    if ts is None or not sigs:
        raise SignatureError("malformed signature header")
    return ts, sigs


def verify(secret: str, header: str, body: bytes, *, now: float, window_s: int = 300) -> int:
    """Check a header against `body`; the signed timestamp, or SignatureError."""
    ts, sigs = parse(header)
    if abs(now - ts) > window_s:
        raise SignatureError(f"timestamp {ts} is outside the {window_s} s window")
    expected = sign(secret, ts, body).rpartition("v1=")[2]
    if not any(hmac.compare_digest(expected, s) for s in sigs):
        raise SignatureError("signature does not match")
    return ts
