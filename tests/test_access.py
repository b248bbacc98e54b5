"""Who may call what: every registered route × every role against the access table, and the per-object rules."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from crm_link.contacts import validate_contact
from crm_link.touches import TouchInput
from switchboard.app import create_app
from switchboard.demo import demo_routes
from switchboard.keys import ASTERISK, STORE
from switchboard.settings import Settings
from switchboard.web.access import RULES, rule_for
from tests.conftest import make_api

ROLES = ("rep", "manager", "marketing", "admin")
# values for the path parameters of dynamic routes: ids nobody has, so allowed callers get 404/400
PARAMS = {
    "id": "987654",
    "call_id": "1700000000.42",
    "token": "not-a-token",
    "action": "pause",
    "filename": "app.css",
}


def _twilio(settings: Settings) -> Settings:
    settings.twilio.enabled = True
    settings.twilio.account_sid = "AC" + "1" * 32
    settings.twilio.auth_token.__init__("twilio-token")  # type: ignore[misc]
    settings.server.public_url = "https://crm.example.com"
    return settings


def _full_app(settings: Settings) -> web.Application:
    """The app with every route it can register: Twilio on, the demo's pages added."""
    app = create_app(_twilio(settings))
    demo_routes(app)
    return app


def _url(route: web.AbstractRoute) -> str:
    resource = route.resource
    assert resource is not None
    canonical = resource.canonical
    if canonical == "/static":
        return "/static/app.css"
    info = resource.get_info()
    if "path" in info:
        return str(info["path"])
    url = canonical
    for name, value in PARAMS.items():
        url = url.replace("{" + name + "}", value)
    assert resource._match(url) is not None, f"{url} does not match {canonical}"  # type: ignore[attr-defined]
    return url


def test_every_route_has_a_rule_and_every_rule_a_route(settings: Settings) -> None:
    app = _full_app(settings)
    registered = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    missing = sorted(k for k in registered if rule_for(*k) is None)
    assert missing == [], f"routes without an access rule in switchboard/web/access.py: {missing}"
    stale = sorted(k for k in RULES if k not in registered)
    assert stale == [], f"rules for routes the app does not register: {stale}"


async def test_route_role_matrix(aiohttp_client: Any, settings: Settings) -> None:
    """Each route answered as its rule says, for rep, manager, marketing, admin and anonymous."""
    client = await aiohttp_client(_full_app(settings))
    tokens = {role: (await make_api(client, f"u_{role}", role)).token for role in ROLES}
    routes = [r for r in client.server.app.router.routes() if r.resource is not None]
    assert len(routes) > 100
    wrong = []
    for route in routes:
        rule = rule_for(route.method, route.resource.canonical)
        assert rule is not None, route
        url = _url(route)
        statuses = {}
        for role in (*ROLES, None):
            headers = {"Authorization": f"Bearer {tokens[role]}"} if role else {}
            resp = await client.request(route.method, url, headers=headers, allow_redirects=False)
            body = await resp.read()
            statuses[role] = resp.status
            where = f"{route.method} {url} as {role or 'anonymous'} -> {resp.status} {body[:120]!r}"
            if rule.is_public:
                continue
            if role is None:
                to_login = resp.status == 303 and resp.headers["Location"].startswith("/login")
                if not (resp.status == 401 or to_login):
                    wrong.append(f"{where}: expected 401 or the login page")
            elif role in rule.roles:
                if resp.status in (401, 403, 500):
                    wrong.append(f"{where}: the role is allowed")
            elif resp.status != 403 or (route.method != "HEAD" and b'"forbidden"' not in body):
                wrong.append(f"{where}: expected 403 forbidden")
        if rule.is_public and len(set(statuses.values())) != 1:
            wrong.append(f"{route.method} {url}: public, yet answers differ by role: {statuses}")
    assert wrong == []


async def test_a_route_without_a_rule_is_refused(aiohttp_client: Any, settings: Settings) -> None:
    app = create_app(settings)

    async def secret(request: web.Request) -> web.Response:
        return web.Response(text="secret")

    app.router.add_get("/api/v1/unlisted", secret)
    client = await aiohttp_client(app)
    admin = await make_api(client, "boss", "admin")
    resp = await admin.get("/api/v1/unlisted")
    assert resp.status == 403 and "no access rule" in (await resp.json())["error"]["message"]


# -- per-object rules ----------------------------------------------------------------------------


async def _contact(store: Any, owner: str | None, phone: str = "+12125550147") -> Any:
    return await store.contacts.create(
        validate_contact(
            {"first_name": "Pat", "last_name": "Lee", "phones": [phone], "owner": owner}, region="US"
        )
    )


async def test_rep_cannot_dispose_another_reps_call(client: Any, rep: Any, manager: Any) -> None:
    store = client.server.app[STORE]
    other = await make_api(client, "agarcia", "rep")
    pat = await _contact(store, "agarcia")
    await store.touches.record(
        TouchInput(
            source_key="asterisk:1700000000.42",
            kind="call",
            direction="inbound",
            started_at=datetime.now(UTC),
            contact_id=pat.id,
            channel="asterisk",
            status="missed",
            number="+12125550147",
        )
    )
    path = "/api/v1/calls/1700000000.42/disposition"
    resp = await rep.post(path, json={"disposition": "do not call"})
    assert resp.status == 403
    assert "+12125550147" not in await resp.text()
    assert (await store.contacts.get(pat.id)).do_not_call is False
    # the customer's own rep and a manager may
    assert (await other.post(path, json={"note": "called back"})).status == 200
    assert (await manager.post(path, json={"disposition": "do not call"})).status == 200
    assert (await store.contacts.get(pat.id)).do_not_call is True


async def test_rep_edits_only_templates_they_wrote(
    client: Any, rep: Any, marketing: Any, manager: Any
) -> None:
    body = {"name": "Spring", "subject": "Hi {{ contact.first_name }}", "html": "<p>Hi</p>", "text": "Hi"}
    theirs = await (await marketing.post("/api/v1/email/templates", json=body)).json()
    mine = await (await rep.post("/api/v1/email/templates", json=body | {"name": "Mine"})).json()
    put = rep.client.put
    headers = rep._h()
    resp = await put(
        f"/api/v1/email/templates/{theirs['id']}", json=body | {"subject": "pwned"}, headers=headers
    )
    assert resp.status == 403
    got = await (await rep.get(f"/api/v1/email/templates/{theirs['id']}")).json()
    assert got["subject"] == body["subject"]
    resp = await put(
        f"/api/v1/email/templates/{mine['id']}", json=body | {"name": "Mine", "text": "Yo"}, headers=headers
    )
    assert resp.status == 200
    resp = await put(
        f"/api/v1/email/templates/{theirs['id']}", json=body | {"text": "edited"}, headers=manager._h()
    )
    assert resp.status == 200


async def test_rep_reads_only_their_own_email_jobs(client: Any, rep: Any, manager: Any) -> None:
    store = client.server.app[STORE]
    other = await make_api(client, "agarcia", "rep")
    pat = await store.contacts.create(
        validate_contact({"first_name": "Pat", "email": "pat@example.com", "owner": "agarcia"}, region="US")
    )
    body = {"name": "T", "subject": "Hi {{ contact.first_name }}", "html": "<p>Hi</p>", "text": "Hi"}
    template = await (await other.post("/api/v1/email/templates", json=body)).json()
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    resp = await other.post(
        "/api/v1/email/send", json={"template_id": template["id"], "contact_ids": [pat.id], "send_at": later}
    )
    assert resp.status == 202, await resp.text()
    job_id = (await resp.json())["id"]
    assert (await rep.get(f"/api/v1/email/jobs/{job_id}")).status == 403
    assert (await other.get(f"/api/v1/email/jobs/{job_id}")).status == 200
    assert (await manager.get(f"/api/v1/email/jobs/{job_id}")).status == 200


@pytest.mark.parametrize("owner", ["agarcia", "AGarcia "])
async def test_rep_cannot_create_a_contact_for_someone_else(
    client: Any, rep: Any, manager: Any, owner: str
) -> None:
    await make_api(client, "agarcia", "rep")
    body = {"first_name": "Pat", "phones": ["+12125550147"], "owner": owner}
    resp = await rep.post("/api/v1/contacts", json=body)
    assert resp.status == 403 and (await resp.json())["error"]["field"] == "owner"
    assert (await rep.post("/api/v1/contacts", json=body | {"owner": "jsmith"})).status == 201
    resp = await manager.post("/api/v1/contacts", json=body | {"phones": ["+12125550148"]})
    assert resp.status == 201 and (await resp.json())["owner"] == "agarcia"


# -- someone on a call with a customer may open the record -----------------------------------------


@pytest.fixture
async def pbx_client(aiohttp_client: Any, settings: Settings, pbx: Any) -> Any:
    settings.asterisk.enabled = True
    settings.asterisk.port = pbx.port
    settings.asterisk.secret.__init__("crm-secret")  # type: ignore[misc]
    settings.asterisk.username = "switchboard"
    settings.interfaces = {"Local/agent1@agents/n": "jsmith"}
    client = await aiohttp_client(create_app(settings))
    await client.server.app[ASTERISK].client.wait_connected(5)
    return client


async def test_rep_on_a_queue_call_opens_the_callers_record(pbx_client: Any, pbx: Any) -> None:
    """jsmith answers a queue call from agarcia's customer: the pop's link opens, the call is logged, audited."""
    client = pbx_client
    store = client.server.app[STORE]
    rep = await make_api(client, "jsmith", "rep", extension="1001")
    bystander = await make_api(client, "bwong", "rep")
    await make_api(client, "agarcia", "rep")
    pat = await _contact(store, "agarcia", "+15551234567")
    await client.server.app[ASTERISK].directory.reload()
    assert (await rep.get(f"/api/v1/contacts/{pat.id}")).status == 403
    ws = await client.ws_connect(f"/ws/agent?token={rep.token}")
    await ws.receive(timeout=5)
    call = asyncio.create_task(
        pbx.inbound_call(
            "+15551234567",
            agents=["Local/agent1@agents/n"],
            answer="Local/agent1@agents/n",
            ring_seconds=1,
            talk_seconds=300,
        )
    )
    pop = json.loads((await ws.receive(timeout=10)).data)
    assert pop["type"] == "screen_pop" and pop["contact"]["id"] == pat.id
    update = json.loads((await ws.receive(timeout=10)).data)
    assert update["call"]["state"] == "answered"
    # on the call: the record opens (page and API) and the call can be logged on it
    assert (await rep.get(pop["contact"]["url"])).status == 200
    assert (await rep.get(f"/api/v1/contacts/{pat.id}")).status == 200
    assert (await rep.get(f"/api/v1/contacts/{pat.id}/touches")).status == 200
    resp = await rep.post(f"/api/v1/contacts/{pat.id}/touches", json={"summary": "asked about the service"})
    assert resp.status == 201
    # nobody else on the team gains anything
    assert (await bystander.get(f"/api/v1/contacts/{pat.id}")).status == 403
    linkedid = await call
    async with asyncio.timeout(10):
        while (
            touch := await store.touches.by_source_key(f"asterisk:{linkedid}")
        ) is None or not touch.ended_at:
            await asyncio.sleep(0.02)
    # just after the call (wrap-up): still open, and the call takes its disposition
    assert (await rep.get(f"/api/v1/contacts/{pat.id}")).status == 200
    resp = await rep.post(
        f"/api/v1/calls/{linkedid}/disposition", json={"disposition": "sold", "note": "bought"}
    )
    assert resp.status == 200
    assert (await bystander.post(f"/api/v1/calls/{linkedid}/disposition", json={"note": "x"})).status == 403
    audit = await store.audit.recent(50, action="contact.open_on_call")
    assert len(audit) >= 5 and {a["user"] for a in audit} == {"jsmith"}
    assert all(a["object_id"] == str(pat.id) and a["detail"]["call"] == f"asterisk:{linkedid}" for a in audit)
    await ws.close()


@pytest.mark.parametrize(("ended_ago", "status"), [(timedelta(minutes=1), 200), (timedelta(minutes=16), 403)])
async def test_access_after_a_call_lasts_the_wrap_up_window(
    client: Any, rep: Any, ended_ago: timedelta, status: int
) -> None:
    store = client.server.app[STORE]
    await make_api(client, "agarcia", "rep")
    pat = await _contact(store, "agarcia")
    ended = datetime.now(UTC) - ended_ago
    await store.touches.record(
        TouchInput(
            source_key="asterisk:1700000000.7",
            kind="call",
            direction="inbound",
            started_at=ended - timedelta(minutes=3),
            ended_at=ended,
            contact_id=pat.id,
            user_id=rep.user.id,
            channel="asterisk",
            status="answered",
            number="+12125550147",
        )
    )
    assert (await rep.get(f"/contacts/{pat.id}")).status == status
    assert (await rep.get(f"/api/v1/contacts/{pat.id}")).status == status
