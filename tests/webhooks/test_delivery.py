"""Delivery over HTTP to the CRM stand-in: a CRM that fails and recovers, dead letters and re-drive
(API and page), the CRM's contact upsert and merges, the REST adapter's mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crm_link.contacts import validate_contact
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.sim.crm_standin import CrmStandIn
from tests.conftest import make_api
from tests.webhooks.conftest import all_delivered, assert_in_order_per_contact, hook, until


@pytest.fixture
async def crm_client(aiohttp_client: Any, settings: Any, crm: CrmStandIn) -> Any:
    hook(settings, crm)
    return await aiohttp_client(create_app(settings))


async def _notes(api: Any, contact_ids: list[int], n: int) -> None:
    for i in range(n):
        for cid in contact_ids:
            resp = await api.post(
                f"/api/v1/contacts/{cid}/touches", json={"kind": "note", "summary": f"n{i}"}
            )
            assert resp.status == 201, await resp.text()


async def _contacts(store: Any, n: int) -> list[int]:
    ids = []
    for i in range(n):
        c = await store.contacts.create(
            validate_contact({"first_name": f"C{i}", "external_id": f"X{i}"}, region="US")
        )
        ids.append(c.id)
    return ids


async def test_a_crm_down_then_back_gets_everything_once_in_order(crm_client: Any, crm: CrmStandIn) -> None:
    store = crm_client.server.app[STORE]
    mgr = await make_api(crm_client, "maria", "manager")
    crm.fail_status = 500
    ids = await _contacts(store, 5)
    await _notes(mgr, ids, 4)

    health = await until(_retrying(crm_client, store, crm))
    assert health["crm"]["subscribers"]["dms"]["state"] == "failing"
    assert "HTTP 500" in health["crm"]["subscribers"]["dms"]["last_error"]
    assert health["status"] == "ok"  # a CRM that is down does not make Switchboard unhealthy
    assert crm.events == {}
    crm.fail_status = None
    await until(lambda: all_delivered(store, crm))
    events = await store.crm_events.events_since(0, limit=10_000)
    assert sorted(crm.events) == sorted(e.uid for e in events) and len(events) >= 5 + 5 * 4
    assert crm.duplicates == 0 and crm.refused == []
    assert_in_order_per_contact(crm)
    for cid in ids:
        notes = [crm.events[u]["data"]["summary"] for u in crm.order if crm.events[u]["type"] == "note.logged"
                 and crm.events[u]["contact_id"] == cid]  # fmt: skip
        assert notes == ["n0", "n1", "n2", "n3"]


def _retrying(client: Any, store: Any, crm: CrmStandIn) -> Any:
    async def check() -> Any:
        health = await (await client.get("/healthz")).json()
        retried = [d for d in (await store.crm_events.deliveries(state="queued")).items if d.attempts >= 2]
        return health if retried and health["crm"]["backlog"] > 0 else None

    return check


async def test_dead_letters_are_listed_and_redriven(
    aiohttp_client: Any, settings: Any, crm: CrmStandIn
) -> None:
    hook(settings, crm)
    settings.crm.max_attempts = 2
    client = await aiohttp_client(create_app(settings))
    store = client.server.app[STORE]
    admin = await make_api(client, "admin", "admin")
    rep = await make_api(client, "jsmith", "rep")
    crm.fail_status = 503
    (cid,) = await _contacts(store, 1)

    async def dead() -> Any:
        body = await (await admin.get("/api/v1/crm/deliveries?state=dead")).json()
        return body["items"]

    (item,) = await until(dead)
    assert item["attempts"] == 2 and item["last_error"] == "HTTP 503: CRM unavailable (after 2 attempts)"
    assert item["event"]["type"] == "contact.created" and item["event"]["contact_id"] == cid
    assert (await rep.get("/api/v1/crm/deliveries")).status == 403
    resp = await admin.get("/api/v1/crm/deliveries?state=lost")
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "state"
    # a CRM that refuses the payload (4xx) is not retried: dead at once, with its answer
    crm.fail_status = 422
    await store.contacts.update(cid, validate_contact({"first_name": "Changed"}, region="US", partial=True))

    async def two_dead() -> Any:
        items = await dead()
        return items if len(items) == 2 else None

    items = await until(two_dead)
    assert items[0]["attempts"] == 1 and items[0]["last_error"].startswith("HTTP 422")
    page = await admin.client.get("/admin/crm", headers=admin._h())
    html = await page.text()
    assert page.status == 200 and "HTTP 422" in html and "Re-drive every dead delivery" in html
    crm.fail_status = None
    resp = await admin.post(f"/api/v1/crm/deliveries/{items[1]['id']}/redrive")
    assert (await resp.json()) == {"redriven": 1}
    resp = await admin.post(f"/api/v1/crm/deliveries/{items[1]['id']}/redrive")
    assert resp.status == 409
    resp = await admin.post("/api/v1/crm/deliveries/redrive", json={"subscriber": "dms"})
    assert (await resp.json()) == {"redriven": 1}
    resp = await admin.post("/api/v1/crm/deliveries/redrive", json={"subscriber": "nope"})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "subscriber"
    await until(lambda: all_delivered(store, crm))
    assert [crm.events[u]["type"] for u in crm.order] == ["contact.created", "contact.updated"]
    audit = await store.audit.recent(10, action="crm.redrive")
    assert len(audit) == 2 and audit[0]["user"] == "admin"


async def test_the_crm_upserts_contacts_by_its_id_per_row_and_idempotently(
    crm_client: Any, crm: CrmStandIn
) -> None:
    store = crm_client.server.app[STORE]
    admin = await make_api(crm_client, "admin", "admin")
    rep = await make_api(crm_client, "jsmith", "rep")
    rows = [
        {"external_id": "SAP-1", "first_name": "Ann", "phones": ["+1 212 555 0100"], "owner": "jsmith",
         "attributes": {"purchase_date": "2026-11-20", "mileage": 12000, "vip": True}},
        {"external_id": "SAP-2", "first_name": "Ben", "owner": "nobody"},
        {"first_name": "No id"},
        {"external_id": "SAP-3", "email": "not an email"},
        {"external_id": "SAP-4", "last_name": "Cole", "email": "cole@example.com"},
    ]  # fmt: skip
    resp = await admin.post("/api/v1/crm/contacts", json={"contacts": rows})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["counts"] == {"created": 2, "updated": 0, "unchanged": 0, "error": 3}
    r = body["results"]
    assert [x["status"] for x in r] == ["created", "error", "error", "error", "created"]
    assert r[1]["error"]["field"] == "contacts[1].owner" and "nobody" in r[1]["error"]["message"]
    assert r[2]["error"]["field"] == "contacts[2].external_id"
    assert r[3]["error"]["field"] == "contacts[3].email"
    ann = await store.contacts.get(r[0]["id"])
    assert (
        ann.attributes == {"purchase_date": "2026-11-20", "mileage": 12000, "vip": True}
        and ann.owner_id == rep.user.id
    )
    await until(lambda: all_delivered(store, crm))
    before = len(crm.events)
    # the same push again changes nothing and raises no event (no echo back to the CRM)
    again = await (await admin.post("/api/v1/crm/contacts", json={"contacts": [rows[0], rows[4]]})).json()
    assert [x["status"] for x in again["results"]] == ["unchanged", "unchanged"]
    changed = await (
        await admin.post("/api/v1/crm/contacts", json={"contacts": [{"external_id": "SAP-1", "attributes": {"mileage": 15000}}]})
    ).json()  # fmt: skip
    assert changed["results"][0]["status"] == "updated"
    assert (await store.contacts.get(ann.id)).attributes["mileage"] == 15000
    await until(lambda: all_delivered(store, crm))
    assert len(crm.events) == before + 1
    assert crm.of_type("contact.updated")[-1]["data"]["attributes"]["mileage"] == 15000
    assert (await rep.post("/api/v1/crm/contacts", json={"contacts": rows})).status == 403
    resp = await admin.post("/api/v1/crm/contacts", json={"contacts": []})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "contacts"


async def test_merging_two_contacts_moves_their_history_and_is_audited(
    crm_client: Any, crm: CrmStandIn
) -> None:
    store = crm_client.server.app[STORE]
    mgr = await make_api(crm_client, "maria", "manager")
    rep = await make_api(crm_client, "jsmith", "rep")
    keep = await store.contacts.create(
        validate_contact({"first_name": "Ann", "phones": ["+12125550100"], "tags": ["service"]}, region="US")
    )
    dup = await store.contacts.create(
        validate_contact({"external_id": "SAP-9", "first_name": "Ann", "last_name": "Lee", "email": "ann@example.com",
                          "phones": ["+12125550100", "+12125550199"], "tags": ["sales"],
                          "attributes": {"vin": "1HGCM"}}, region="US")
    )  # fmt: skip
    await _notes(mgr, [keep.id, dup.id], 2)
    await store.touches.add_followup(dup.id, store.clock(), note="call back")
    dup_followups = len(await store.touches.open_followups(dup.id))
    resp = await mgr.post(f"/api/v1/contacts/{keep.id}/merge", json={"from": dup.id})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (
        body["moved"]["touches"] == 2
        and body["moved"]["followups"] == dup_followups
        and body["moved"]["phones"] == 1
    )
    c = body["contact"]
    assert c["external_id"] == "SAP-9" and c["last_name"] == "Lee" and c["email"] == "ann@example.com"
    assert sorted(p["e164"] for p in c["phones"]) == ["+12125550100", "+12125550199"]
    assert sorted(c["tags"]) == ["sales", "service"] and c["attributes"] == {"vin": "1HGCM"}
    assert len((await store.touches.history(keep.id)).items) == 4
    assert len(await store.touches.open_followups(keep.id)) >= dup_followups
    assert (await mgr.get(f"/api/v1/contacts/{dup.id}")).status == 404
    (audit,) = await store.audit.recent(5, action="contact.merge")
    assert audit["user"] == "maria" and audit["detail"]["merged"]["external_id"] == "SAP-9"
    await until(lambda: all_delivered(store, crm))
    merged = crm.of_type("contact.merged")[0]
    assert merged["data"]["merged_id"] == dup.id and merged["data"]["contact_external_id"] == "SAP-9"
    last = [crm.events[u] for u in crm.order if crm.events[u]["contact_id"] == keep.id][-1]
    assert last["type"] == "contact.updated" and len(last["data"]["phones"]) == 2
    assert (await rep.post(f"/api/v1/contacts/{keep.id}/merge", json={"from": dup.id})).status == 403
    resp = await mgr.post(f"/api/v1/contacts/{keep.id}/merge", json={"from": keep.id})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "from"
    resp = await mgr.post(f"/api/v1/contacts/{keep.id}/merge", json={"from": dup.id})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "from"


MAPPING = {
    "routes": [
        {"events": ["contact.*"], "method": "PUT", "path": "/api/customers/{data.external_id}",
         "body": {"firstName": "$data.first_name", "lastName": "$data.last_name", "phone": "$data.phones",
                  "source": "switchboard", "price": "$$5"}},
        {"events": ["*"], "method": "POST", "path": "/api/activities",
         "body": {"eventId": "$id", "kind": "$type", "customer": "$data.contact_external_id",
                  "text": "$data.summary", "at": "$occurred_at"}},
    ]
}  # fmt: skip


async def test_the_rest_adapter_writes_their_json_to_their_paths(
    aiohttp_client: Any, settings: Any, crm: CrmStandIn, tmp_path: Path
) -> None:
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(MAPPING))
    w = hook(settings, crm)
    w.url, w.mapping = crm.url, str(mapping)
    client = await aiohttp_client(create_app(settings))
    store = client.server.app[STORE]
    mgr = await make_api(client, "maria", "manager")
    c = await store.contacts.create(
        validate_contact({"external_id": "DMS-7", "first_name": "Ann", "last_name": "Lee",
                          "phones": ["+12125550100"]}, region="US")
    )  # fmt: skip
    nobody = await store.contacts.create(validate_contact({"first_name": "No CRM id"}, region="US"))
    await _notes(mgr, [c.id], 1)

    async def arrived() -> bool:
        return "DMS-7" in crm.customers and any(a["kind"] == "note.logged" for a in crm.activities.values())

    await until(arrived)
    assert crm.customers["DMS-7"] == {"firstName": "Ann", "lastName": "Lee", "source": "switchboard", "price": "$5",
                                      "phone": [{"number": "+12125550100", "raw": "+12125550100", "kind": "fixed_or_mobile",
                                                 "valid": True}]}  # fmt: skip
    (act,) = [a for a in crm.activities.values() if a["kind"] == "note.logged"]
    assert act["kind"] == "note.logged" and act["customer"] == "DMS-7" and act["text"] == "n0"
    # a contact without the CRM's id cannot be PUT to /customers/{id}: dead-lettered with the reason
    admin = await make_api(client, "admin", "admin")

    async def dead() -> Any:
        return (await (await admin.get("/api/v1/crm/deliveries?state=dead")).json())["items"]

    (d,) = await until(dead)
    assert (
        d["event"]["contact_id"] == nobody.id
        and d["last_error"] == "mapping: data.external_id is empty for this event"
    )
