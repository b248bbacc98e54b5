"""What a rep sees when the phone rings: the caller's card, recent touches, open follow-ups."""

from __future__ import annotations

import asyncio
from typing import Any

from crm_link.followups import end_of_day
from crm_link.models import Contact, User
from crm_link.store import Store

RECENT_TOUCHES = 5


def contact_card(contact: Contact) -> dict[str, Any]:
    """The contact as the pop shows it."""
    return {
        "id": contact.id,
        "name": contact.name,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "owner": contact.owner_username,
        "owner_name": contact.owner_name,
        "email": contact.email,
        "phones": [p.e164 for p in contact.phones],
        "tags": contact.tags,
        "attributes": contact.attributes,
        "do_not_call": contact.do_not_call,
        "time_zone": contact.time_zone,
        "url": f"/contacts/{contact.id}",
    }


def _may_see_history(viewer: User, contact: Contact) -> bool:
    return viewer.role != "rep" or contact.owner_id in (None, viewer.id)


async def lookup_caller(store: Store, number: str | None) -> list[Contact]:
    """Every contact with this number (empty for an unknown or withheld number)."""
    if not number:
        return []
    return await store.contacts.find_by_phone(number)


async def build_pop(
    store: Store, call: dict[str, Any], matches: list[Contact], viewer: User
) -> dict[str, Any]:
    """The screen_pop message of CONTRACT.md for one viewer, from already looked-up matches.

    One match → its card, last touches and open follow-ups (a rep answering another rep's customer
    gets the card without the history); several → `contact: null` with `candidates` to choose from;
    none → `contact: null`, and the page offers "new prospect".
    """
    pop: dict[str, Any] = {
        "type": "screen_pop",
        "call": call,
        "contact": None,
        "candidates": [],
        "recent_touches": [],
        "open_followups": [],
    }
    if len(matches) == 1:
        contact = matches[0]
        pop["contact"] = contact_card(contact)
        if _may_see_history(viewer, contact):
            # independent reads, asked together: they queue on the reader's thread at once instead
            # of one loop-to-thread round trip after the other
            history, followups, pop["survey"] = await asyncio.gather(
                store.touches.history(contact.id, limit=RECENT_TOUCHES),
                store.touches.open_followups(contact.id),
                survey_for(store, call, contact),
            )
            pop["recent_touches"] = [
                {
                    "kind": t.kind,
                    "direction": t.direction,
                    "at": t.to_dict()["at"],
                    "summary": t.summary,
                    "status": t.status,
                }
                for t in history.items
            ]
            pop["open_followups"] = [
                {"due_at": f.to_dict()["due_at"], "note": f.note, "kind": f.kind} for f in followups
            ]
        else:
            pop["contact"]["restricted"] = True
            pop["survey"] = await survey_for(store, call, contact)
    elif matches:
        pop["candidates"] = [
            {"id": c.id, "name": c.name, "owner": c.owner_username, "url": f"/contacts/{c.id}"}
            for c in matches
        ]
    return pop


async def survey_for(store: Store, call: dict[str, Any], contact: Contact) -> dict[str, Any] | None:
    """The survey this call asks: its call list's, else that of the customer's cadence follow-up due
    today whose step carries one; the current version, with its script and questions."""
    survey_id = await store.surveys.for_list(call["list_id"]) if call.get("list_id") else None
    if survey_id is None:
        until = end_of_day(store.clock(), contact.time_zone or store.time_zone)
        survey_id = await store.surveys.for_contact_followup(contact.id, until)
    if survey_id is None:
        return None
    row = await store.surveys.get(survey_id)
    return row.to_dict() if row.active else None
