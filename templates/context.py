"""What merge codes can reach: the contact, its owner, the sender, the dealership, now."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from crm_link.models import Contact, User
from crm_link.phones import format_national


def user_data(user: User | None) -> dict[str, Any]:
    if user is None:
        return {}
    return {"name": user.name, "username": user.username, "email": user.email, "extension": user.extension}


def contact_data(contact: Contact) -> dict[str, Any]:
    phone = contact.phones[0].e164 if contact.phones else None
    return {
        "id": contact.id,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "name": contact.name,
        "email": contact.email,
        "phone": format_national(phone) if phone else None,
        "phones": [p.e164 for p in contact.phones],
        "tags": contact.tags,
        "time_zone": contact.time_zone,
        "attributes": dict(contact.attributes),
        "owner": {"name": contact.owner_name, "username": contact.owner_username},
    }


def merge_context(
    contact: Contact,
    *,
    sender: User | None = None,
    owner: User | None = None,
    dealer: dict[str, Any] | None = None,
    now: datetime,
) -> dict[str, Any]:
    """The context a template renders against for one customer."""
    data = contact_data(contact)
    if owner is not None:
        data["owner"] = user_data(owner)
    return {
        "contact": data,
        "user": user_data(sender),
        "dealer": dict(dealer or {}),
        "now": now.isoformat(),
    }


# Every merge code a template can use; `contact.attributes.*` keys are free-form.
KNOWN_CODES = (
    *(f"contact.{k}" for k in ("id", "first_name", "last_name", "name", "email", "phone", "phones")),
    *(f"contact.{k}" for k in ("tags", "time_zone", "attributes")),
    *(f"contact.owner.{k}" for k in ("name", "username", "email", "extension")),
    *(f"user.{k}" for k in ("name", "username", "email", "extension")),
    *(f"dealer.{k}" for k in ("name", "phone", "address", "website")),
    "contact",
    "contact.owner",
    "user",
    "dealer",
    "now",
)
FREE_PREFIXES = ("contact.attributes.",)


def unknown_codes(codes: list[str]) -> list[tuple[str, str | None]]:
    """The merge codes no customer can have (a misspelling), each with the closest known code."""
    import difflib

    known = set(KNOWN_CODES)
    out: list[tuple[str, str | None]] = []
    for code in codes:
        if code in known or code.startswith(FREE_PREFIXES):
            continue
        # a method on a known value (contact.first_name.upper) is the renderer's business
        if any(code.startswith(k + ".") for k in known if k.count(".") >= 1 and k not in ("contact.owner",)):
            continue
        close = difflib.get_close_matches(code, KNOWN_CODES, n=1, cutoff=0.6)
        out.append((code, close[0] if close else None))
    return out


def unknown_codes_message(found: list[tuple[str, str | None]]) -> str:
    """'unknown merge code contact.frist_name (did you mean contact.first_name?)', for each."""
    parts = [
        f"unknown merge code {code}" + (f" (did you mean {hint}?)" if hint else "") for code, hint in found
    ]
    return "; ".join(parts)
