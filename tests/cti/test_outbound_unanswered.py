"""Click-to-call that the customer does not answer, and the rep's own phone not answering.

Scripted on the test PBX over a real AMI socket, with the events a real Asterisk sends for an
Originate whose dialled leg ends BUSY / NOANSWER.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crm_link.contacts import validate_contact
from cti.ami.server import AmiTestServer
from switchboard.keys import STORE
from tests.conftest import make_api
from tests.cti.conftest import start_pbx_app


@pytest.fixture
async def pbx_app(aiohttp_server: Any, settings: Any, pbx: AmiTestServer) -> Any:
    return await start_pbx_app(aiohttp_server, settings, pbx, {})


async def _ended_history(store: Any, contact_id: int, n: int) -> list[Any]:
    async with asyncio.timeout(10):
        while True:
            items = (await store.touches.history(contact_id)).items
            if len(items) >= n and all(t.ended_at is not None for t in items):
                return items
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("outcome", "status", "cause"), [("noanswer", "no answer", 19), ("busy", "busy", 17)]
)
async def test_unanswered_click_to_call_is_on_the_rep_and_the_customer(
    pbx_app: Any, pbx: AmiTestServer, aiohttp_client: Any, outcome: str, status: str, cause: int
) -> None:
    client = await aiohttp_client(pbx_app)
    rep = await make_api(client, "jsmith", "rep", extension="1001", display_name="John Smith")
    store = pbx_app.app[STORE]
    pat = await store.contacts.create(
        validate_contact(
            {"first_name": "Pat", "last_name": "Taylor", "phones": ["+15557654321"]}, region="US"
        )
    )
    pbx.outcomes["+15557654321"] = outcome
    resp = await rep.post("/api/v1/calls", json={"contact_id": pat.id})
    assert resp.status == 202, await resp.text()
    (t,) = await _ended_history(store, pat.id, 1)
    assert (t.direction, t.status, t.username, t.number, t.contact_id) == (
        "outbound",
        status,
        "jsmith",
        "+15557654321",
        pat.id,
    )
    assert t.payload["hangup_cause"] == cause
    assert t.summary == ("Busy" if outcome == "busy" else "No answer") + ", called by John Smith"


async def test_reps_phone_not_answering_writes_no_orphan_touch(
    pbx_app: Any, pbx: AmiTestServer, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(pbx_app)
    rep = await make_api(client, "jsmith", "rep", extension="1001")
    store = pbx_app.app[STORE]
    pat = await store.contacts.create(
        validate_contact(
            {"first_name": "Pat", "last_name": "Taylor", "phones": ["+15557654321"]}, region="US"
        )
    )
    pbx.agent_outcomes["PJSIP/1001"] = "noanswer"
    assert (await rep.post("/api/v1/calls", json={"contact_id": pat.id})).status == 202
    await pbx.wait_idle()  # the PBX has sent every event of the unanswered leg
    # a second call, answered: once its touch is written, the first call's events were all handled
    pbx.agent_outcomes.clear()
    assert (await rep.post("/api/v1/calls", json={"contact_id": pat.id})).status == 202
    (t,) = await _ended_history(store, pat.id, 1)
    assert t.status == "answered"
    rows = await store.db.fetchall("SELECT count(*) FROM touches")
    assert rows[0][0] == 1  # nothing without a number, contact or user
