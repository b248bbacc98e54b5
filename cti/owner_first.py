"""Owner-first ringing on Asterisk: what the dialplan dials before its queue (pure).

The dialplan asks Switchboard who owns the caller (`CURL` of `/asterisk/owner`) and dials that
salesperson alone for a while before `Queue()`; Asterisk's own events then ring and pop them like
any other call. The answer is a Dial argument list, `PJSIP/1002,20`, or empty for "queue now".
"""

from __future__ import annotations

from collections.abc import Sequence

from crm_link.models import Contact, User


def owner_dial(
    matches: Sequence[Contact],
    owner: User | None,
    interface: str | None,
    *,
    busy: bool,
    seconds: int,
) -> str:
    """`INTERFACE,SECONDS` to ring the caller's own salesperson first, or "" when the caller is not
    exactly one known customer with an active owner who has a phone and is free (or owner-first is off)."""
    if seconds <= 0 or len(matches) != 1 or owner is None or not owner.active or busy:
        return ""
    if not interface or any(ch in interface for ch in ",()&|\r\n"):
        return ""  # nothing to ring, or something that is not one Dial target
    return f"{interface},{seconds}"
