"""Email end to end against a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from crm_link.contacts import validate_contact
from switchboard.app import create_app
from switchboard.keys import EMAIL, STORE
from templates.email_service import EmailService
from templates.render import Renderer
from templates.smtp import SmtpSender
from tests.conftest import make_api


@pytest.fixture
async def mail_client(aiohttp_client: Any, settings: Any, inbox: Any) -> Any:
    settings.smtp.port = inbox.port
    settings.smtp.from_ = "Switchboard Motors <sales@motors.example>"
    settings.server.public_url = "https://crm.motors.example"
    client = await aiohttp_client(create_app(settings))
    client.server.app[EMAIL].retry_after = timedelta(0)
    return client


TEMPLATE = {
    "name": "Thanks",
    "subject": "Thank you, {{ contact.first_name }}!",
    "html": "<p>Hi {{ contact.first_name }}, how is the <b>{{ contact.attributes.vehicle }}</b>?</p>"
    '<p><a href="https://motors.example/service">Book service</a></p><p>{{ user.name }}</p>',
}


async def _job_done(api: Any, job_id: int) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            job = await (await api.get(f"/api/v1/email/jobs/{job_id}")).json()
            if job["state"] == "done":
                return job
            await asyncio.sleep(0.05)


async def test_merged_email_arrives_with_proper_headers_and_is_a_touch(mail_client: Any, inbox: Any) -> None:
    rep = await make_api(mail_client, "jsmith", "rep", display_name="John Smith")
    store = mail_client.server.app[STORE]
    c = await store.contacts.create(
        validate_contact(
            {
                "first_name": "Jane",
                "last_name": "Doe",
                "email": "jane@example.com",
                "owner": "jsmith",
                "attributes": {"vehicle": "2024 Civic"},
            },
            region="US",
        )
    )
    resp = await rep.post("/api/v1/email/templates", json=TEMPLATE)
    assert resp.status == 201
    tpl = await resp.json()
    assert tpl["merge_codes"] == ["contact.attributes.vehicle", "contact.first_name", "user.name"]
    preview = await (
        await rep.post(f"/api/v1/email/templates/{tpl['id']}/preview", json={"contact_id": c.id})
    ).json()
    assert (
        preview["subject"] == "Thank you, Jane!"
        and "2024 Civic" in preview["html"]
        and preview["missing"] == []
    )
    resp = await rep.post("/api/v1/email/send", json={"template_id": tpl["id"], "contact_ids": [c.id]})
    assert resp.status == 202
    job = await _job_done(rep, (await resp.json())["id"])
    assert job["counts"]["sent"] == 1
    (msg,) = inbox.messages
    assert msg["Subject"] == "Thank you, Jane!" and msg["To"] == "Jane Doe <jane@example.com>"
    assert msg["From"] == "Switchboard Motors <sales@motors.example>"
    assert msg["Message-ID"].endswith("@motors.example>") and msg["Date"]
    unsubscribe = msg["List-Unsubscribe"].strip()  # long headers are folded onto a second line
    assert unsubscribe.startswith("<https://crm.motors.example/email/unsubscribe/")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = [p.get_content() for p in msg.iter_parts()]
    assert (
        "Hi Jane, how is the 2024 Civic?" in text and "Book service (https://motors.example/service)" in text
    )
    assert "<b>2024 Civic</b>" in html and "John Smith" in html
    (touch,) = (await store.touches.history(c.id)).items
    assert touch.kind == "email" and touch.summary == "Thank you, Jane!"
    assert touch.payload["message_id"] == msg["Message-ID"]
    # one-click unsubscribe (RFC 8058) from the header's URL
    path = unsubscribe[1:-1].removeprefix("https://crm.motors.example")
    resp = await mail_client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert resp.status == 200
    assert (await store.contacts.get(c.id)).email_opt_out
    resp = await rep.post("/api/v1/email/send", json={"template_id": tpl["id"], "contact_ids": [c.id]})
    assert resp.status == 409
    assert (await mail_client.get("/email/unsubscribe/forged-token")).status == 404


async def test_4xx_is_retried_5xx_fails_with_reason(mail_client: Any, inbox: Any) -> None:
    rep = await make_api(mail_client, "jsmith", "rep")
    store = mail_client.server.app[STORE]
    a = await store.contacts.create(
        validate_contact({"first_name": "A", "email": "a@example.com"}, region="US")
    )
    b = await store.contacts.create(
        validate_contact({"first_name": "B", "email": "b@example.com"}, region="US")
    )
    tpl = await (
        await rep.post(
            "/api/v1/email/templates",
            json={"name": "t", "subject": "Hi {{ contact.first_name }}", "html": "<p>x</p>"},
        )
    ).json()
    inbox.fail_with = ["451 4.7.1 Greylisted, try again"]
    job = await _job_done(
        rep,
        (
            await (
                await rep.post("/api/v1/email/send", json={"template_id": tpl["id"], "contact_ids": [a.id]})
            ).json()
        )["id"],
    )
    assert job["counts"]["sent"] == 1 and [m["To"] for m in inbox.messages] == ["A <a@example.com>"]
    inbox.fail_with = ["550 5.1.1 No such user here"]
    job = await _job_done(
        rep,
        (
            await (
                await rep.post("/api/v1/email/send", json={"template_id": tpl["id"], "contact_ids": [b.id]})
            ).json()
        )["id"],
    )
    assert job["counts"]["failed"] == 1
    assert job["errors"] == [{"state": "failed", "reason": "5.1.1 No such user here", "count": 1}]
    assert (await store.touches.history(b.id)).items == []


async def test_bad_templates_and_missing_codes(mail_client: Any) -> None:
    rep = await make_api(mail_client, "jsmith", "rep")
    store = mail_client.server.app[STORE]
    resp = await rep.post(
        "/api/v1/email/templates", json={"name": "x", "subject": "hi", "html": "<p>\n{{ oops </p>"}
    )
    body = (await resp.json())["error"]
    assert resp.status == 400 and body["field"] == "html" and "line 2" in body["message"]
    resp = await rep.post(
        "/api/v1/email/templates", json={"name": "x", "subject": "{{ ''.__class__ }}", "html": "x"}
    )
    assert resp.status == 400 and "not allowed" in (await resp.json())["error"]["message"]
    resp = await rep.post(
        "/api/v1/email/templates",
        json={"name": "x", "subject": "s", "html": "{{ contact|attr('__class__') }}"},
    )
    bad = await resp.json()
    c = await store.contacts.create(
        validate_contact({"first_name": "A", "email": "a@example.com", "owner": "jsmith"}, region="US")
    )
    resp = await rep.post(f"/api/v1/email/templates/{bad['id']}/preview", json={"contact_id": c.id})
    assert resp.status == 400 and "not allowed" in (await resp.json())["error"]["message"]
    tpl = await (
        await rep.post(
            "/api/v1/email/templates",
            json={"name": "y", "subject": "Your {{ contact.attributes.vehicle }}", "html": "<p>x</p>"},
        )
    ).json()
    preview = await (
        await rep.post(f"/api/v1/email/templates/{tpl['id']}/preview", json={"contact_id": c.id})
    ).json()
    assert preview["missing"] == ["contact.attributes.vehicle"]
    resp = await rep.post("/api/v1/email/send", json={"template_id": tpl["id"], "contact_ids": [c.id]})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "missing_merge_code"
    dup = await rep.post("/api/v1/email/templates", json={"name": "Y", "subject": "s", "html": "h"})
    assert dup.status == 409 and (await dup.json())["error"]["field"] == "name"


async def test_restart_in_the_middle_of_1000_sends_each_once(store: Any, inbox: Any) -> None:
    tpl = await store.email.save_template(
        template_id=None,
        name="n",
        subject="Hi {{ contact.first_name }}",
        html="<p>{{ contact.first_name }}</p>",
        text="",
        merge_codes=[],
        user_id=None,
    )
    from crm_link.contacts import ContactFields

    await store.contacts.bulk_insert(
        [ContactFields(first_name=f"P{i}", email=f"p{i}@example.com") for i in range(1000)]
    )
    contacts = await store.contacts.get_many(list(range(1, 1001)))

    def service() -> EmailService:
        return EmailService(
            store,
            Renderer(),
            SmtpSender("127.0.0.1", inbox.port, rate_per_second=0),
            sender="S <s@motors.example>",
            public_url="https://crm.example",
            dealer={},
        )

    first = service()
    job_id = await first.send(tpl["id"], contacts, None)
    task = asyncio.create_task(first.run(idle_poll=0.05))
    async with asyncio.timeout(30):
        while len(inbox.messages) < 300:
            await asyncio.sleep(0.01)
    first.stop()  # a clean restart: finish the message in hand, give the rest back
    await task
    await first.smtp.close()
    second = service()
    task = asyncio.create_task(second.run(idle_poll=0.05))
    async with asyncio.timeout(60):
        while (await store.email.job(job_id))["state"] != "done":
            await asyncio.sleep(0.05)
    second.stop()
    await task
    await second.smtp.close()
    to = [m["To"] for m in inbox.messages]
    assert len(to) == len(set(to)) == 1000
    assert (await store.email.job(job_id))["counts"]["sent"] == 1000
    rows = await store.db.fetchall("SELECT count(DISTINCT source_key) FROM touches WHERE kind = 'email'")
    assert rows[0][0] == 1000


async def test_crash_while_sending_never_sends_twice(store: Any, inbox: Any) -> None:
    tpl = await store.email.save_template(
        template_id=None, name="n", subject="s", html="<p>x</p>", text="", merge_codes=[], user_id=None
    )
    from crm_link.contacts import ContactFields

    await store.contacts.bulk_insert(
        [ContactFields(first_name=f"P{i}", email=f"p{i}@example.com") for i in range(60)]
    )
    contacts = await store.contacts.get_many(list(range(1, 61)))
    svc = EmailService(
        store,
        Renderer(),
        SmtpSender("127.0.0.1", inbox.port, rate_per_second=0),
        sender="s@motors.example",
        public_url="https://crm.example",
        dealer={},
    )
    job_id = await svc.send(tpl["id"], contacts, None)
    inbox.block_after = 25
    task = asyncio.create_task(svc.run(idle_poll=0.05))
    await asyncio.wait_for(inbox.blocked.wait(), 20)
    task.cancel()  # killed while the SMTP server holds a message
    with pytest.raises(asyncio.CancelledError):
        await task
    svc.smtp.abort()
    inbox.block_after = None
    again = EmailService(
        store,
        Renderer(),
        SmtpSender("127.0.0.1", inbox.port, rate_per_second=0),
        sender="s@motors.example",
        public_url="https://crm.example",
        dealer={},
    )
    task = asyncio.create_task(again.run(idle_poll=0.05))
    async with asyncio.timeout(30):
        while (await store.email.job(job_id))["state"] != "done":
            await asyncio.sleep(0.05)
    again.stop()
    await task
    await again.smtp.close()
    counts = (await store.email.job(job_id))["counts"]
    to = [m["To"] for m in inbox.messages]
    assert len(to) == len(set(to))  # nobody twice
    assert counts["unknown"] == 1 and counts["sent"] == 59  # only the one in flight is in doubt


async def test_mail_merge_to_a_tag_skips_opted_out_and_addressless(mail_client: Any, inbox: Any) -> None:
    mkt = await make_api(mail_client, "kim", "marketing")
    store = mail_client.server.app[STORE]
    for data in (
        {"first_name": "A", "email": "a@example.com"},
        {"first_name": "B", "email": "b@example.com", "email_opt_out": True},
        {"first_name": "C", "phones": ["+12125550100"]},
    ):
        await store.contacts.create(validate_contact(data | {"tags": ["service"]}, region="US"))
    tpl = await (
        await mkt.post(
            "/api/v1/email/templates",
            json={"name": "svc", "subject": "Service time", "html": "<p>Hi {{ contact.first_name }}</p>"},
        )
    ).json()
    resp = await mkt.post("/api/v1/email/send", json={"template_id": tpl["id"], "tag": "service"})
    assert resp.status == 202
    job = await _job_done(mkt, (await resp.json())["id"])
    assert job["counts"]["sent"] == 1 and job["counts"]["skipped"] == 2
    assert {e["reason"] for e in job["errors"]} == {"unsubscribed from email", "no email address"}
    assert [m["To"] for m in inbox.messages] == ["A <a@example.com>"]
    resp = await mkt.post("/api/v1/email/send", json={"template_id": tpl["id"], "tag": "nobody"})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "tag"
    assert (
        await mkt.client.delete(
            f"/api/v1/email/templates/{tpl['id']}", headers={"Authorization": f"Bearer {mkt.token}"}
        )
    ).status == 204
    assert (await mkt.get(f"/api/v1/email/templates/{tpl['id']}")).status == 404


MERGE_HTML = (
    "<html><body><p>Dear {{ contact.first_name }} {{ contact.last_name }},</p>"
    + "<p>Thank you for choosing {{ dealer.name }} for your {{ contact.attributes.vehicle }}. " * 12
    + "</p><p>{{ user.name }}</p></body></html>"
)


async def test_a_mail_merge_to_thousands_never_stalls_the_loop(
    aiohttp_client: Any, settings: Any, inbox: Any
) -> None:
    """The loop keeps answering while a merge to 3,000 customers is queued and sent."""
    from crm_link.contacts import ContactFields
    from tests.loop_lag import LoopLag

    settings.smtp.port = inbox.port
    settings.smtp.rate_per_second = 0
    client = await aiohttp_client(create_app(settings))
    mkt = await make_api(client, "kim", "marketing")
    store = client.server.app[STORE]
    n = 3000
    await store.contacts.bulk_insert(
        [
            ContactFields(
                first_name=f"P{i}",
                last_name="Doe",
                email=f"p{i}@example.com",
                attributes={"vehicle": "Civic"},
            )
            for i in range(n)
        ]
    )
    tpl = await (
        await mkt.post(
            "/api/v1/email/templates",
            json={"name": "merge", "subject": "Hi {{ contact.first_name }}", "html": MERGE_HTML},
        )
    ).json()
    async with LoopLag() as lag:
        resp = await mkt.post(
            "/api/v1/email/send", json={"template_id": tpl["id"], "contact_ids": list(range(1, n + 1))}
        )
        assert resp.status == 202
        async with asyncio.timeout(100):
            while (job := (await store.email.job((await resp.json())["id"])))["state"] != "done":
                await asyncio.sleep(0.05)
    assert job["counts"]["sent"] == n and len(inbox.messages) == n, job
    assert lag.ticks > 10 and lag.max_busy < 0.25, f"the loop was held {lag.max_busy_ms:.0f} ms"


async def test_a_message_that_cannot_be_built_fails_alone_and_the_rest_go(
    mail_client: Any, inbox: Any
) -> None:
    """A merged subject with a line break (header injection) is refused for that customer only."""
    mkt = await make_api(mail_client, "kim", "marketing")
    store = mail_client.server.app[STORE]
    ids = []
    for name, note in (
        ("A", "your Civic"),
        ("B", "your Civic"),
        ("Eve", "x\r\nBcc: everyone@example.com"),
        ("C", "your Civic"),
        ("Jöhn", "your Civic"),  # this mail server does not take SMTPUTF8 addresses
        ("D", "your Civic"),
    ):
        c = await store.contacts.create(
            validate_contact(
                {"first_name": name, "email": f"{name.lower()}@example.com", "attributes": {"note": note}},
                region="US",
            )
        )
        ids.append(c.id)
    tpl = await (
        await mkt.post(
            "/api/v1/email/templates",
            json={"name": "n", "subject": "About {{ contact.attributes.note }}", "html": "<p>Hi</p>"},
        )
    ).json()
    resp = await mkt.post("/api/v1/email/send", json={"template_id": tpl["id"], "contact_ids": ids})
    job = await _job_done(mkt, (await resp.json())["id"])
    assert job["counts"]["sent"] == 4 and job["counts"]["failed"] == 2 and job["counts"]["sending"] == 0
    assert sorted(e["reason"] for e in job["errors"]) == [
        "subject cannot contain line breaks",
        "the address 'jöhn@example.com' is not ASCII (internationalized addresses are not supported)",
    ]
    assert sorted(m["To"] for m in inbox.messages) == [f"{n} <{n.lower()}@example.com>" for n in "ABCD"]
    assert all(m["Bcc"] is None for m in inbox.messages)


async def test_emails_in_doubt_after_a_crash_are_resent_once_an_operator_says_so(
    aiohttp_client: Any, settings: Any, inbox: Any
) -> None:
    """Killed while the mail server holds a message: after the restart that one is `unknown`; the
    job's sender (or a manager, or marketing) queues it again, and it arrives exactly once."""
    from crm_link.contacts import ContactFields
    from switchboard.app import open_store
    from tests.conftest import PASSWORD, Api

    settings.smtp.port = inbox.port
    settings.smtp.rate_per_second = 0
    settings.server.instance_id = "sb-1"  # the restart is the same instance (on PostgreSQL it takes
    # back at once what it held; another instance would wait for the lease to run out)
    n = 30
    async with open_store(settings) as store:
        owner = await store.users.add("jsmith", role="rep", password=PASSWORD)
        for name, role in (("agarcia", "rep"), ("kim", "marketing"), ("maria", "manager")):
            await store.users.add(name, role=role, password=PASSWORD)
        await store.contacts.bulk_insert(
            [ContactFields(first_name=f"P{i}", email=f"p{i}@example.com") for i in range(n)]
        )
        tpl = await store.email.save_template(
            template_id=None, name="n", subject="s", html="<p>x</p>", text="", merge_codes=[], user_id=None
        )
        svc = EmailService(
            store,
            Renderer(),
            SmtpSender("127.0.0.1", inbox.port, rate_per_second=0),
            sender="s@motors.example",
            public_url="https://crm.example",
            dealer={},
            owner="sb-1",
        )
        job_id = await svc.send(tpl["id"], await store.contacts.get_many(list(range(1, n + 1))), owner)
        inbox.block_after = 10
        task = asyncio.create_task(svc.run(idle_poll=0.05))
        await asyncio.wait_for(inbox.blocked.wait(), 20)
        task.cancel()  # the process dies while the mail server holds the 11th message
        with pytest.raises(asyncio.CancelledError):
            await task
        svc.smtp.abort()
    inbox.block_after = None
    client = await aiohttp_client(create_app(settings))  # the restart: what was in flight is in doubt
    store = client.server.app[STORE]

    async def api(name: str) -> Api:
        user = await store.users.by_username(name)
        return Api(client, await store.users.create_token(user.id, "test"), user)

    sender, other_rep, mkt, manager = [await api(u) for u in ("jsmith", "agarcia", "kim", "maria")]
    job = await _job_done(sender, job_id)
    assert (job["counts"]["sent"], job["counts"]["unknown"]) == (n - 1, 1)
    ((doubt,),) = await store.db.fetchall("SELECT to_addr FROM email_outbox WHERE state = 'unknown'")
    assert len(inbox.messages) == n - 1 and doubt not in {
        m["To"].addresses[0].addr_spec for m in inbox.messages
    }
    resp = await other_rep.post(f"/api/v1/email/jobs/{job_id}/resend-unknown")
    assert resp.status == 403
    assert (await manager.post("/api/v1/email/jobs/999/resend-unknown")).status == 404
    resp = await sender.post(f"/api/v1/email/jobs/{job_id}/resend-unknown")
    assert resp.status == 200 and (await resp.json())["requeued"] == 1
    job = await _job_done(sender, job_id)
    assert (job["counts"]["sent"], job["counts"]["unknown"]) == (n, 0)
    assert sorted(m["To"].addresses[0].addr_spec for m in inbox.messages) == sorted(
        f"p{i}@example.com" for i in range(n)
    )
    (entry,) = await store.audit.recent(action="email.job.resend_unknown")
    assert entry["user"] == "jsmith" and entry["object_id"] == str(job_id)
    for api_ in (mkt, manager):  # nothing is in doubt any more: nothing goes out again
        resp = await api_.post(f"/api/v1/email/jobs/{job_id}/resend-unknown")
        assert resp.status == 200 and (await resp.json())["requeued"] == 0
    assert len(inbox.messages) == n
