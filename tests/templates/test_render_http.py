"""Costly merge templates over real HTTP: a 4xx naming the field, and the service keeps answering."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from campaigns.sms.blasts import BlastService
from crm_link.clock import system_clock
from crm_link.contacts import validate_contact
from switchboard.app import create_app
from switchboard.keys import EMAIL, SMS, STORE
from switchboard.messaging import sms_render
from switchboard.web.sms import SmsRuntime
from templates.render import Renderer
from tests.conftest import make_api
from tests.sms.helpers import analyze

NESTED_LOOPS = "{% for a in 'x'*100000 %}{% for b in 'x'*100000 %}{% endfor %}{% endfor %}"


class Gate:
    """A render clock that holds the first render it sees until the test opens the gate, so a test
    can look at the service while a render is certainly in progress."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            self.opened.wait(30)
        return 0.0

    async def wait_entered(self) -> None:
        async with asyncio.timeout(10):
            while not self.entered.is_set():
                await asyncio.sleep(0.01)


@pytest.fixture
async def app_client(aiohttp_client: Any, settings: Any, inbox: Any) -> Any:
    """The real app with email (to aiosmtpd) and SMS blasts rendered by the real merge renderer."""
    settings.smtp.port = inbox.port
    renderers: dict[str, Renderer] = {"sms": Renderer()}

    async def sms(app: web.Application) -> AsyncIterator[None]:
        def render(text: str, contact: Any) -> str:
            return sms_render(renderers["sms"], {"name": "Switchboard Motors"}, system_clock)(text, contact)

        blasts = BlastService(
            app[STORE],
            channels=lambda: ["main"],
            render=render,
            analyze=analyze,
            quiet_start="21:00",
            quiet_end="08:00",
        )
        app[SMS] = SmsRuntime(blasts, {})
        yield

    client = await aiohttp_client(create_app(settings, contexts=[sms]))
    client.renderers = renderers
    return client


async def _contact(client: Any, **fields: Any) -> Any:
    data = {"first_name": "Jane", "phones": ["+12125550100"], "email": "jane@example.com", "owner": "jsmith"}
    return await client.server.app[STORE].contacts.create(validate_contact(data | fields, region="US"))


def _error(body: dict[str, Any]) -> dict[str, Any]:
    return body["error"]


async def test_costly_sms_texts_are_refused_naming_text(app_client: Any) -> None:
    rep = await make_api(app_client, "jsmith", "rep")
    mkt = await make_api(app_client, "kim", "marketing")
    c = await _contact(app_client)
    for text in (
        NESTED_LOOPS,
        "{{ 'a'|center(999999999) }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ (((9**100)**100)**100)**100 }}",
        "{" * 81,
    ):
        resp = await rep.post("/api/v1/sms/preview", json={"text": text, "contact_id": c.id})
        error = _error(await resp.json())
        assert (resp.status, error["code"], error["field"]) == (400, "template_too_costly", "text"), text
    resp = await mkt.post(
        "/api/v1/sms/blasts",
        json={"name": "b", "text": NESTED_LOOPS, "audience": {"contact_ids": [c.id]}, "channel": "main"},
    )
    error = _error(await resp.json())
    assert (resp.status, error["code"], error["field"]) == (400, "template_too_costly", "text")
    assert await app_client.server.app[STORE].sms.blasts() == []
    ok = await rep.post(
        "/api/v1/sms/preview", json={"text": "Hi {{ contact.first_name }}", "contact_id": c.id}
    )
    assert (await ok.json())["text"] == "Hi Jane"


async def test_costly_email_templates_are_refused_naming_the_part(app_client: Any, inbox: Any) -> None:
    rep = await make_api(app_client, "jsmith", "rep")
    c = await _contact(app_client)
    resp = await rep.post(
        "/api/v1/email/templates", json={"name": "x", "subject": "Hi", "html": NESTED_LOOPS}
    )
    error = _error(await resp.json())
    assert (resp.status, error["code"], error["field"]) == (400, "template_too_costly", "html")
    resp = await rep.post(
        "/api/v1/email/templates", json={"name": "x", "subject": "{{ 'a'|center(999999999) }}", "html": "h"}
    )
    assert _error(await resp.json())["field"] == "subject"
    # costly only for some customers' values: saved, then refused when rendered for one of them
    html = (
        "<p>Hi {{ contact.first_name }}</p>{% if contact.first_name == 'Jane' %}"
        + NESTED_LOOPS
        + "{% endif %}"
    )
    resp = await rep.post("/api/v1/email/templates", json={"name": "y", "subject": "Hi", "html": html})
    assert resp.status == 201
    tpl = await resp.json()
    resp = await rep.post(f"/api/v1/email/templates/{tpl['id']}/preview", json={"contact_id": c.id})
    error = _error(await resp.json())
    assert (resp.status, error["code"], error["field"]) == (400, "template_too_costly", "html")
    other = await _contact(app_client, first_name="Tom", phones=["+12125550101"], email="tom@example.com")
    resp = await rep.post(
        "/api/v1/email/send", json={"template_id": tpl["id"], "contact_ids": [other.id, c.id]}
    )
    error = _error(await resp.json())
    assert (resp.status, error["code"], error["field"]) == (400, "template_too_costly", "html")
    assert inbox.messages == []


async def _healthz_answers_during(client: Any, gate: Gate, bomb: Callable[[], Any]) -> dict[str, Any]:
    task = asyncio.create_task(bomb())
    try:
        await gate.wait_entered()  # the render is under way (held at its first clock reading)
        health = await client.get("/healthz")
        assert health.status == 200 and not task.done()
    finally:
        gate.opened.set()
    resp = await task
    assert resp.status == 400
    return _error(await resp.json())


async def test_healthz_answers_while_a_costly_sms_preview_renders(app_client: Any) -> None:
    rep = await make_api(app_client, "jsmith", "rep")
    c = await _contact(app_client)
    gate = Gate()
    app_client.renderers["sms"] = Renderer(monotonic=gate)
    error = await _healthz_answers_during(
        app_client,
        gate,
        lambda: rep.post("/api/v1/sms/preview", json={"text": NESTED_LOOPS, "contact_id": c.id}),
    )
    assert (error["code"], error["field"]) == ("template_too_costly", "text")


async def test_healthz_answers_while_a_costly_email_preview_renders(app_client: Any) -> None:
    rep = await make_api(app_client, "jsmith", "rep")
    c = await _contact(app_client)
    html = "{% if contact.first_name == 'Jane' %}" + NESTED_LOOPS + "{% endif %}"
    tpl = await (
        await rep.post("/api/v1/email/templates", json={"name": "y", "subject": "s", "html": html})
    ).json()
    gate = Gate()
    app_client.server.app[EMAIL].renderer = Renderer(monotonic=gate)
    error = await _healthz_answers_during(
        app_client,
        gate,
        lambda: rep.post(f"/api/v1/email/templates/{tpl['id']}/preview", json={"contact_id": c.id}),
    )
    assert (error["code"], error["field"]) == ("template_too_costly", "html")
