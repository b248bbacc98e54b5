"""A user's manager (admin page, API, CLI) and escalations to `owner_manager`: a cadence's last
failed attempt and a dissatisfied survey go to the manager of the customer's owner, else the
managers' pool."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from crm_link.clock import ManualClock
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.settings import Settings
from tests.conftest import Api, make_api
from tests.test_cli import run
from tests.test_surveys import AFTER_SERVICE

NOW = datetime(2026, 6, 15, 14, 0, tzinfo=UTC)  # 09:00 in Chicago; cadence calls are due at 10:00


@pytest.fixture
async def mclient(aiohttp_client: Any, settings: Settings) -> Any:
    return await aiohttp_client(create_app(settings, clock=ManualClock(NOW)))


async def _team(client: Any) -> tuple[Api, Api, Api, Api, Api]:
    """An admin, two reps and two managers; nobody has a manager yet."""
    root = await make_api(client, "root", "admin")
    ann = await make_api(client, "ann", "rep")
    bob = await make_api(client, "bob", "rep")
    sam = await make_api(client, "sam", "manager")
    maria = await make_api(client, "maria", "manager")
    return root, ann, bob, sam, maria


async def _customer(api: Api, first: str, phone: str, owner: str) -> int:
    body = {
        "first_name": first,
        "last_name": "Buyer",
        "phones": [phone],
        "owner": owner,
        "attributes": {"delivery_date": NOW.date().isoformat()},
    }
    resp = await api.post("/api/v1/contacts", json=body)
    assert resp.status == 201, await resp.text()
    return int((await resp.json())["id"])


async def _day_ids(api: Api) -> list[int]:
    return [f["id"] for f in (await (await api.get("/api/v1/me/day")).json())["followups"]]


async def test_a_users_manager_over_the_api_and_the_admin_page(mclient: Any) -> None:
    root, ann, bob, sam, maria = await _team(mclient)
    resp = await root.patch(f"/api/v1/users/{ann.user.id}", json={"manager": "sam"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["manager"] == "sam"
    # only an active manager or admin, never oneself; nothing changes when refused
    for body in (
        {"manager": "bob", "display_name": "Renamed"},
        {"manager": "ghost"},
        {"manager": 5},
    ):
        resp = await root.patch(f"/api/v1/users/{ann.user.id}", json=body)
        assert resp.status == 400 and (await resp.json())["error"]["field"] == "manager", body
    resp = await root.patch(f"/api/v1/users/{sam.user.id}", json={"manager": "sam"})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "manager"
    users = {u["username"]: u for u in (await (await maria.get("/api/v1/users")).json())["items"]}
    assert users["ann"]["manager"] == "sam" and users["ann"]["name"] == "ann"
    assert users["bob"]["manager"] is None
    assert (await ann.patch(f"/api/v1/users/{bob.user.id}", json={"manager": "sam"})).status == 403
    # a new user may be given one at once
    resp = await root.post(
        "/api/v1/users",
        json={"username": "cy", "role": "rep", "password": "pw-long-enough", "manager": "maria"},
    )
    assert resp.status == 201 and (await resp.json())["manager"] == "maria"
    resp = await root.post(
        "/api/v1/users",
        json={"username": "di", "role": "rep", "password": "pw-long-enough", "manager": "bob"},
    )
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "manager"
    assert await mclient.server.app[STORE].users.by_username("di") is None

    # the admin's user page: a Manager picker of the managers and admins, the current one chosen
    html = await (await root.get(f"/admin/users/{ann.user.id}")).text()
    picker = re.search(r'<select name="manager">(.*?)</select>', html, re.S)
    assert picker is not None
    options = re.findall(r'<option value="([^"]*)"( selected)?', picker.group(1))
    assert [v for v, _ in options] == ["", "maria", "root", "sam"]
    assert [v for v, sel in options if sel] == ["sam"]
    form = {"display_name": "Ann Lee", "role": "rep", "manager": "maria"}
    resp = await root.post(f"/admin/users/{ann.user.id}", data=form, allow_redirects=False)
    assert resp.status == 303 and "error" not in resp.headers["Location"]
    assert (await mclient.server.app[STORE].users.get(ann.user.id)).manager == "maria"
    resp = await root.post(f"/admin/users/{ann.user.id}", data=form | {"manager": ""}, allow_redirects=False)
    assert (await mclient.server.app[STORE].users.get(ann.user.id)).manager is None


async def test_a_cadence_escalates_to_the_owners_manager_else_the_managers(mclient: Any) -> None:
    root, ann, bob, sam, maria = await _team(mclient)
    assert (await root.patch(f"/api/v1/users/{ann.user.id}", json={"manager": "sam"})).status == 200
    resp = await maria.post(
        "/api/v1/cadences",
        json={
            "name": "Delivery call",
            "date_field": "delivery_date",
            "steps": [{"offset": "+0d", "reason": "How is the car?"}],
            "max_attempts": 1,
            "escalate_to": "owner_manager",
        },
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["escalate_to"] == "owner_manager"
    bad = await maria.post(
        "/api/v1/cadences",
        json={
            "name": "x",
            "date_field": "delivery_date",
            "steps": [{"offset": "+1d"}],
            "escalate_to": "boss",
        },
    )
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "escalate_to"
    anns = await _customer(ann, "Sam", "+13125550101", "ann")
    bobs = await _customer(bob, "Pat", "+13125550102", "bob")
    (a,) = [
        f for f in (await (await ann.get("/api/v1/me/day")).json())["followups"] if f["contact_id"] == anns
    ]
    (b,) = [
        f for f in (await (await bob.get("/api/v1/me/day")).json())["followups"] if f["contact_id"] == bobs
    ]
    # Ann's customer: her manager Sam gets it, on his day only
    body = await (await ann.post(f"/api/v1/followups/{a['id']}/no-answer", json={})).json()
    assert (body["assignee"], body["pool"]) == ("sam", None)
    assert "no answer after 1 attempts" in body["escalated_reason"]
    assert a["id"] in await _day_ids(sam) and a["id"] not in await _day_ids(maria)
    # Bob has no manager: the managers' pool, on every manager's day
    body = await (await bob.post(f"/api/v1/followups/{b['id']}/no-answer", json={})).json()
    assert (body["assignee"], body["pool"]) == (None, "managers")
    assert b["id"] in await _day_ids(sam) and b["id"] in await _day_ids(maria)


async def test_a_dissatisfied_survey_goes_to_the_owners_manager(mclient: Any) -> None:
    root, ann, bob, _sam, maria = await _team(mclient)
    await root.patch(f"/api/v1/users/{bob.user.id}", json={"manager": "maria"})
    spec = AFTER_SERVICE | {"name": "To the manager", "escalate_to": "owner_manager"}
    resp = await maria.post("/api/v1/surveys", spec)
    assert resp.status == 201, await resp.text()
    sid = (await resp.json())["id"]
    assert (await (await maria.get(f"/api/v1/surveys/{sid}")).json())["escalate_to"] == "owner_manager"
    store = mclient.server.app[STORE]
    low = {"overall": 1, "reasons": ["price"]}
    made = []
    for api, first, phone in ((bob, "Pat", "+13125550102"), (ann, "Sam", "+13125550101")):
        contact = await _customer(api, first, phone, api.user.username)
        r = await api.post(f"/api/v1/surveys/{sid}/responses", {"contact_id": contact, "answers": low})
        assert r.status == 201, await r.text()
        made.append(await store.followups.get((await r.json())["followup_id"]))
    bobs, anns = made
    assert (bobs.assignee_username, bobs.pool) == ("maria", None) and "price" in bobs.note
    assert (anns.assignee_username, anns.pool) == (None, "managers")  # Ann has no manager


def test_the_cli_sets_and_clears_a_users_manager(tmp_path: Path) -> None:
    run(tmp_path, "init")
    run(tmp_path, "user", "add", "sam", "--role", "manager", "--password", "pw-long-enough")
    out = run(tmp_path, "user", "add", "ann", "--role", "rep", "--manager", "sam").stdout
    assert "added ann" in out
    listing = run(tmp_path, "user", "list").stdout
    (line,) = [x for x in listing.splitlines() if x.startswith("ann ")]
    assert "sam" in line.split()
    assert "no manager" in run(tmp_path, "user", "manager", "ann", "--none").stdout
    (line,) = [x for x in run(tmp_path, "user", "list").stdout.splitlines() if x.startswith("ann ")]
    assert "sam" not in line.split()
    assert "manager is sam" in run(tmp_path, "user", "manager", "ann", "sam").stdout
    bad = run(tmp_path, "user", "manager", "sam", "ann", check=2)
    assert bad.stderr.strip() == "switchboard: error: manager: ann is a rep, not a manager or admin"
    bad = run(tmp_path, "user", "add", "bo", "--role", "rep", "--manager", "ghost", check=2)
    assert "manager: no active user named 'ghost'" in bad.stderr
    assert "bo " not in run(tmp_path, "user", "list").stdout
