"""What a rep sees when the phone rings: the caller's card, recent touches, open follow-ups."""

from __future__ import annotations

from typing import Any

from crm_link.contacts import CallerFile, PopHistory
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


async def lookup_caller(store: Store, number: str | None) -> CallerFile:
    """Every contact with this number (none for an unknown or withheld number), with what a pop
    shows of each, in one read."""
    if not number:
        return CallerFile([], {})
    return await store.contacts.caller_file(number, recent=RECENT_TOUCHES)


async def build_pop(
    store: Store,
    call: dict[str, Any],
    matches: list[Contact],
    viewer: User,
    *,
    history: PopHistory | None = None,
) -> dict[str, Any]:
    """The screen_pop message of CONTRACT.md for one viewer, from already looked-up matches.

    One match → its card, last touches and open follow-ups (a rep answering another rep's customer
    gets the card without the history); several → `contact: null` with `candidates` to choose from;
    none → `contact: null`, and the page offers "new prospect". `history`: the one match's, read
    with the lookup; without it, it is read now (one statement).
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
        if history is None:
            history = (await store.contacts.pop_file([contact.id], recent=RECENT_TOUCHES)).history.get(
                contact.id, PopHistory([], [], [])
            )
        if _may_see_history(viewer, contact):
            pop["recent_touches"] = history.touches
            pop["open_followups"] = history.followups
        else:
            pop["contact"]["restricted"] = True
        pop["survey"] = await survey_for(store, call, contact, history)
    elif matches:
        pop["candidates"] = [
            {"id": c.id, "name": c.name, "owner": c.owner_username, "url": f"/contacts/{c.id}"}
            for c in matches
        ]
    return pop


async def survey_for(
    store: Store, call: dict[str, Any], contact: Contact, history: PopHistory
) -> dict[str, Any] | None:
    """The survey this call asks: its call list's, else that of the customer's cadence follow-up due
    today whose step carries one; the current version, with its script and questions."""
    survey_id = await store.surveys.for_list(call["list_id"]) if call.get("list_id") else None
    if survey_id is None:
        survey_id = history.followup_survey(end_of_day(store.clock(), contact.time_zone or store.time_zone))
    if survey_id is None:
        return None
    row = await store.surveys.get(survey_id)
    return row.to_dict() if row.active else None
