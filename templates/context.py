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
