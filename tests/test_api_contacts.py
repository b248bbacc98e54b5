"""The contacts API through real HTTP: create, find, history, notes, roles, and bad input."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Api, make_api


async def _create(api: Api, **kw: Any) -> dict[str, Any]:
    body = {"first_name": "Jane", "last_name": "Doe", "phones": ["+1 555 123 4567"]} | kw
    resp = await api.post("/api/v1/contacts", json=body)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_create_and_find_by_any_phone_format(admin: Api, rep: Api) -> None:
    created = await _create(
        admin, owner="jsmith", tags=["vip"], attributes={"vehicle": "2024 Civic"}, email="jane@example.com"
    )
    assert created["phones"][0] == {
        "raw": "+1 555 123 4567",
        "e164": "+15551234567",
        "valid": False,
        "kind": "unknown",
        "extension": None,
    }
    for fmt in ("5551234567", "(555) 123-4567", "+15551234567"):
        resp = await admin.get("/api/v1/contacts", params={"phone": fmt})
        items = (await resp.json())["items"]
        assert [c["id"] for c in items] == [created["id"]]
    resp = await admin.get("/api/v1/contacts/" + str(created["id"]))
    body = await resp.json()
    assert body["owner"] == "jsmith" and body["tags"] == ["vip"] and body["open_followups"] == []


async def test_pagination_walks_every_contact_once(admin: Api) -> None:
    for i in range(7):
        await _create(admin, first_name=f"P{i}", phones=[f"+1212555010{i}"])
    seen, cursor = [], None
    while True:
        params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        page = await (await admin.get("/api/v1/contacts", params=params)).json()
        seen += [c["first_name"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"P{i}" for i in range(7)]
    resp = await admin.get("/api/v1/contacts", params={"cursor": "not-a-cursor"})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "cursor"


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"first_name": "A", "phones": ["12"]}, "phones[0]", "invalid"),
        ({"first_name": "A", "phones": ["call me"]}, "phones[0]", "invalid"),
        ({"first_name": "A", "favourite_colour": "red"}, "favourite_colour", "invalid"),
        ({"first_name": 42}, "first_name", "invalid"),
        ({"first_name": "A", "email": "not-an-email"}, "email", "invalid"),
        ({"first_name": "A", "owner": "ghost"}, "owner", "invalid"),
        ({"first_name": "A", "time_zone": "Mars/Base"}, "time_zone", "invalid"),
        ({"first_name": "A", "do_not_call": "yes"}, "do_not_call", "invalid"),
        ({"first_name": "A", "tags": "x" * 100}, "tags[0]", "invalid"),
        ({}, "body", "invalid"),
    ],
)
async def test_bad_contact_input_names_the_field(admin: Api, body: dict, field: str, code: str) -> None:
    resp = await admin.post("/api/v1/contacts", json=body)
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["field"] == field and err["code"] == code and err["message"]
    assert (await (await admin.get("/api/v1/contacts")).json())["items"] == []  # nothing half-written


async def test_malformed_json_and_wrong_content_type(admin: Api) -> None:
    resp = await admin.client.post(
        "/api/v1/contacts",
        data=b"{not json",
        headers={"Authorization": f"Bearer {admin.token}", "Content-Type": "application/json"},
    )
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "malformed_json"
    resp = await admin.client.post(
        "/api/v1/contacts", data=b"first_name=x", headers={"Authorization": f"Bearer {admin.token}"}
    )
    assert resp.status == 415
    resp = await admin.post("/api/v1/contacts", json=[1, 2])
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "body"


async def test_duplicate_external_id_is_a_conflict(admin: Api) -> None:
    await _create(admin, external_id="DMS-1")
    resp = await admin.post("/api/v1/contacts", json={"first_name": "B", "external_id": "DMS-1"})
    assert resp.status == 409 and (await resp.json())["error"]["field"] == "external_id"


async def test_unauthenticated_and_bad_token(client: Any) -> None:
    resp = await client.get("/api/v1/contacts")
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthenticated"
    resp = await client.get("/api/v1/contacts", headers={"Authorization": "Bearer sb_nope"})
    assert resp.status == 401


async def test_reps_see_their_own_contacts_only(admin: Api, rep: Api, client: Any) -> None:
    other = await make_api(client, "agarcia", "rep")
    mine = await _create(admin, owner="jsmith")
    theirs = await _create(admin, first_name="Other", owner="agarcia", phones=["+12125550199"])
    items = (await (await rep.get("/api/v1/contacts")).json())["items"]
    assert [c["id"] for c in items] == [mine["id"]]
    resp = await rep.get(f"/api/v1/contacts/{theirs['id']}")
    assert resp.status == 403
    resp = await other.get(f"/api/v1/contacts/{theirs['id']}")
    assert resp.status == 200
    # a rep's new prospect is theirs
    created = await _create(rep, first_name="New", phones=["+12125550142"])
    assert created["owner"] == "jsmith"


async def test_only_admin_manages_users(admin: Api, rep: Api, manager: Api) -> None:
    body = {"username": "newrep", "role": "rep", "password": "long-enough-1"}
    assert (await rep.post("/api/v1/users", json=body)).status == 403
    assert (await manager.post("/api/v1/users", json=body)).status == 403
    resp = await admin.post("/api/v1/users", json=body)
    assert resp.status == 201
    resp = await admin.post("/api/v1/users", json=body)
    assert resp.status == 409 and (await resp.json())["error"]["field"] == "username"
    resp = await admin.post("/api/v1/users", json=body | {"username": "x2", "role": "boss"})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "role"


async def test_note_with_next_followup_shows_on_my_day(admin: Api, rep: Api) -> None:
    c = await _create(admin, owner="jsmith")
    resp = await rep.post(
        f"/api/v1/contacts/{c['id']}/touches",
        json={"summary": "Wants a test drive", "next_followup_at": "2020-01-01T15:00:00Z"},
    )
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "next_followup_at"
    soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    for _ in range(2):  # saving the same note twice: one touch, one follow-up
        resp = await rep.post(
            f"/api/v1/contacts/{c['id']}/touches",
            json={"summary": "Wants a test drive", "next_followup_at": soon, "idempotency_key": "td"},
        )
        assert resp.status in (200, 201)
    touch = await resp.json()
    assert touch["kind"] == "note" and touch["user"] == "jsmith"
    listed = await (await rep.get(f"/api/v1/followups?contact_id={c['id']}")).json()
    assert [(f["contact_id"], f["assignee"]) for f in listed["items"]] == [(c["id"], "jsmith")]
    history = await (await rep.get(f"/api/v1/contacts/{c['id']}/touches")).json()
    assert [t["summary"] for t in history["items"]] == ["Wants a test drive"]
    # the same idempotency key twice: one touch
    for _ in range(2):
        await rep.post(
            f"/api/v1/contacts/{c['id']}/touches",
            json={"summary": "Called", "kind": "call", "idempotency_key": "abc", "next_followup_at": "none"},
        )
    history = await (await rep.get(f"/api/v1/contacts/{c['id']}/touches")).json()
    assert len(history["items"]) == 2
    resp = await rep.post(
        f"/api/v1/contacts/{c['id']}/touches", json={"summary": "x", "next_followup_at": "tomorrow"}
    )
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "next_followup_at"


async def test_healthz(client: Any) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok" and body["connectors"]["store"] == "up"
