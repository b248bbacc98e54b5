"""SMS through Kannel's HTTP interface: the stand-in for failure paths, and Debian's real Kannel."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from campaigns.sms.channel import ChannelConnectionError, ChannelError, OutboundSms
from campaigns.sms.kannel import KannelChannel, parse_kannel_dlr
from campaigns.sms.kannel_standin import KannelStandIn
from crm_link.contacts import validate_contact
from switchboard.app import create_app
from switchboard.keys import SMS_EVENTS, STORE
from switchboard.settings import SmsChannelSettings
from tests.conftest import FIXTURES, free_port, make_api


@pytest.fixture
async def kannel() -> AsyncIterator[KannelStandIn]:
    async with KannelStandIn() as k:
        yield k


@pytest.fixture
async def sms_app(aiohttp_server: Any, aiohttp_client: Any, settings: Any, kannel: KannelStandIn) -> Any:
    port = free_port()
    settings.server.public_url = f"http://127.0.0.1:{port}"
    settings.sms.quiet_start = settings.sms.quiet_end = "00:00"  # no quiet hours in these tests
    settings.sms.channels["main"] = SmsChannelSettings(
        name="main",
        type="kannel",
        rate_per_second=100,
        options={
            "sendsms_url": kannel.sendsms_url,
            "username": "tester",
            "password": "secret",
            "secret": "chan-secret",
            "from": "12345",
        },
    )
    server = await aiohttp_server(create_app(settings), port=port)
    client = await aiohttp_client(server)
    kannel.inbound_url = f"{settings.server.public_url}/sms/kannel/incoming?channel=main&secret=chan-secret"
    return client


async def _until(check: Any, timeout: float = 10) -> Any:
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(0.02)
    return result


async def test_blast_through_kannel_with_dlrs_and_stop(sms_app: Any, kannel: KannelStandIn) -> None:
    store = sms_app.server.app[STORE]
    mkt = await make_api(sms_app, "kim", "marketing")
    ids = []
    for i, name in enumerate(("Ann", "Zoë")):
        c = await store.contacts.create(
            validate_contact(
                {"first_name": name, "phones": [f"+1212555020{i}"], "tags": ["service"], "time_zone": "UTC"},
                region="US",
            )
        )
        ids.append(c.id)
    kannel.dlr_type["+12125550201"] = 2  # Zoë's handset is off
    resp = await mkt.post(
        "/api/v1/sms/blasts",
        json={
            "name": "Saturday",
            "text": "Hi {{ contact.first_name }} ✓",
            "channel": "main",
            "audience": {"tag": "service"},
        },
    )
    assert resp.status == 201, await resp.text()
    blast = await resp.json()

    async def final() -> Any:
        b = await (await mkt.get(f"/api/v1/sms/blasts/{blast['id']}")).json()
        return b if b["counts"]["delivered"] + b["counts"]["failed"] == 2 else None

    body = await _until(final)
    assert body["counts"]["delivered"] == 1 and body["counts"]["failed"] == 1
    sent = {q["to"]: q for q in kannel.received}
    assert sent["+12125550200"]["text"] == "Hi Ann ✓" and sent["+12125550200"]["coding"] == "2"
    assert sent["+12125550200"]["from"] == "12345" and "%d" in sent["+12125550200"]["dlr-url"]
    # the customer answers STOP: opted out, one confirmation
    assert kannel.inbound_url is not None
    await kannel.inject_inbound(kannel.inbound_url, "+12125550200", "12345", "STOP", msg_id="in-1")
    await kannel.inject_inbound(kannel.inbound_url, "+12125550200", "12345", "STOP", msg_id="in-1")
    await _until(lambda: _opted_out(store, ids[0]))
    await _until(lambda: _count(kannel, "+12125550200", 2))
    await asyncio.sleep(0.2)
    assert [q["text"] for q in kannel.received if q["to"] == "+12125550200"][1].startswith(
        "You are unsubscribed"
    )
    assert len([q for q in kannel.received if q["to"] == "+12125550200"]) == 2
    history = (await store.touches.history(ids[0])).items
    assert {(t.kind, t.direction) for t in history} == {("sms", "outbound"), ("sms", "inbound")}


async def _opted_out(store: Any, cid: int) -> bool:
    return (await store.contacts.get(cid)).sms_opt_out


async def _count(kannel: KannelStandIn, to: str, n: int) -> bool:
    return len([q for q in kannel.received if q["to"] == to]) >= n


async def test_webhooks_refuse_forgeries_and_name_bad_fields(sms_app: Any) -> None:
    resp = await sms_app.get("/sms/kannel/dlr?channel=main&secret=wrong&id=1&type=1")
    assert resp.status == 403 and (await resp.json())["error"]["field"] == "secret"
    resp = await sms_app.get("/sms/kannel/dlr?channel=main&secret=chan-secret&id=1&type=7")
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "type"
    resp = await sms_app.get("/sms/kannel/incoming?channel=main&secret=chan-secret&text=hi")
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "from"
    resp = await sms_app.get("/sms/kannel/dlr?channel=nope&secret=x&id=1&type=1")
    assert resp.status == 404
    # the id is the one we put in the dlr-url: our message id, a whole number SQLite can hold
    for bad in ("99999999999999999999", "9223372036854775808", "-1", "0", "abc", "1e3", "١٢"):
        resp = await sms_app.get(
            "/sms/kannel/dlr", params={"channel": "main", "secret": "chan-secret", "id": bad, "type": "1"}
        )
        assert resp.status == 400 and (await resp.json())["error"]["field"] == "id", (bad, await resp.text())
    resp = await sms_app.get("/sms/kannel/dlr?channel=main&secret=chan-secret&id=9223372036854775807&type=1")
    assert resp.status == 200  # a well-formed id that matches nothing is acknowledged (and logged)


async def test_gateway_failures(kannel: KannelStandIn) -> None:
    channel = KannelChannel(
        "k", kannel.sendsms_url, "tester", "secret", sender=None, dlr_url="http://127.0.0.1:9/dlr", secret="s"
    )
    await channel.start(None)  # type: ignore[arg-type]
    try:
        kannel.fail_auth = True
        with pytest.raises(ChannelError) as exc:
            await channel.send(OutboundSms("1", "+12125550100", "hi"))
        assert (
            not exc.value.retryable and exc.value.code == "403" and "Authorization failed" in exc.value.reason
        )
        kannel.fail_auth = False
        kannel.status_next = 503
        with pytest.raises(ChannelError) as exc:
            await channel.send(OutboundSms("2", "+12125550100", "hi"))
        assert exc.value.retryable
        result = await channel.send(OutboundSms("3", "+12125550100", "hi " * 100))
        assert result.segments == 2
        with pytest.raises(ChannelError) as exc:
            await channel.send(OutboundSms("4", "+12125550100", "x" * 2000))
        assert exc.value.code == "too_long"
    finally:
        await channel.close()
    down = KannelChannel(
        "k", "http://127.0.0.1:9/cgi-bin/sendsms", "u", "p", sender=None, dlr_url="x", secret="s"
    )
    await down.start(None)  # type: ignore[arg-type]
    with pytest.raises(ChannelConnectionError):
        await down.send(OutboundSms("5", "+12125550100", "hi"))
    await down.close()


def test_dlr_order_and_duplicates_never_move_backwards() -> None:
    assert parse_kannel_dlr({"id": "7", "type": "1"}, "k").status == "delivered"
    assert parse_kannel_dlr({"id": "7", "type": "8"}, "k").status == "sent"
    failed = parse_kannel_dlr({"id": "7", "type": "16", "answer": "NACK/0x0b"}, "k")
    assert failed.status == "failed" and failed.error_text == "NACK/0x0b"


@given(st.dictionaries(st.sampled_from(["id", "type", "answer", "ts", "x"]), st.text(max_size=12)))
def test_dlr_parser_gives_a_report_or_names_the_field(query: dict[str, str]) -> None:
    try:
        report = parse_kannel_dlr(query, "k")
    except ValueError as exc:
        assert str(exc).split(":")[0] in ("id", "type")
    else:
        assert report.status in ("delivered", "failed", "sent")
        assert report.message_id is not None and 1 <= int(report.message_id) < 2**63


# --- the real Kannel (Debian's bearerbox + smsbox + fakesmsc) ---------------------------------

BINARIES = ("/usr/sbin/bearerbox", "/usr/sbin/smsbox", "/usr/lib/kannel/test/fakesmsc")


def _wait_http(url: str, needle: str, seconds: float = 20) -> None:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if needle in resp.read().decode(errors="replace"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never said {needle!r}")


def _wait_port(port: int, seconds: float = 20) -> None:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def real_kannel(tmp_path: Path) -> Iterator[str]:
    if not all(os.path.exists(b) for b in BINARIES):
        if os.environ.get("CI"):
            pytest.fail("Kannel is not installed; .ci/run installs the kannel and kannel-extras packages")
        pytest.skip("Kannel is not installed (apt-get install kannel kannel-extras)")
    # free ports, so that two Kannels (another test run, a benchmark) never meet on one machine
    admin, box, smsc, sendsms = (free_port() for _ in range(4))
    conf = (FIXTURES / "kannel" / "kannel.conf").read_text().replace("LOGDIR", str(tmp_path))
    for line, port in (("admin-port = 13000", admin), ("smsbox-port = 13001", box), ("port = 10000", smsc),
                       ("bearerbox-port = 13001", box), ("sendsms-port = 13013", sendsms)):  # fmt: skip
        assert line in conf, line
        conf = conf.replace(line, line.split("=")[0] + f"= {port}")
    (tmp_path / "kannel.conf").write_text(conf)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen(
                [BINARIES[0], str(tmp_path / "kannel.conf")],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait_http(f"http://127.0.0.1:{admin}/status.txt?password=adminpw", "Status: running")
        procs.append(
            subprocess.Popen(
                [BINARIES[1], str(tmp_path / "kannel.conf")],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait_port(sendsms)
        procs.append(
            subprocess.Popen(
                [BINARIES[2], "-r", str(smsc), "-m", "0", "1 2 text x"],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        yield f"http://127.0.0.1:{sendsms}/cgi-bin/sendsms"
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


async def test_real_kannel_delivers_and_reports(real_kannel: str) -> None:
    got: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def dlr(request: web.Request) -> web.Response:
        await got.put(dict(request.query))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/sms/kannel/dlr", dlr)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    channel = KannelChannel(
        "real",
        real_kannel,
        "tester",
        "secret",
        sender="100",
        dlr_url=f"http://127.0.0.1:{port}/sms/kannel/dlr",
        secret="s3",
    )
    await channel.start(None)  # type: ignore[arg-type]
    try:
        # message ids are outbox row ids, as the sender gives them
        texts = {"101": "Service special this Saturday!", "102": "Привет, Zoë ✓", "103": "long " * 80}
        for mid, text in texts.items():
            result = await channel.send(OutboundSms(mid, "+12125550100", text))
            assert result.status == "sent"
        delivered: dict[str, str] = {}
        async with asyncio.timeout(20):
            while len(delivered) < len(texts):
                q = await got.get()
                assert q["channel"] == "real" and q["secret"] == "s3"
                report = parse_kannel_dlr(q, "real")
                assert report.message_id is not None
                if report.status == "delivered":
                    delivered[report.message_id] = report.status
        assert set(delivered) == set(texts)
    finally:
        await channel.close()
        await runner.cleanup()


async def test_a_blast_through_real_kannel_ends_delivered_with_one_touch_each(
    real_kannel: str, aiohttp_server: Any, settings: Any
) -> None:
    """dlr-mask 31: Kannel calls back twice per message (accepted by the SMSC, then delivered) while
    the blast is still sending; the reports are written in batches, and every message ends
    `delivered` with exactly one touch, whose status follows it."""
    from campaigns.sms.blasts import BlastSpec
    from crm_link.contacts import ContactFields
    from crm_link.phones import Phone
    from switchboard.keys import SMS

    port = free_port()
    settings.server.public_url = f"http://127.0.0.1:{port}"
    settings.sms.quiet_start = settings.sms.quiet_end = "00:00"
    settings.sms.channels["main"] = SmsChannelSettings(
        name="main",
        type="kannel",
        rate_per_second=1000,
        options={
            "sendsms_url": real_kannel,
            "username": "tester",
            "password": "secret",
            "secret": "chan-secret",
            "from": "100",
            "connections": 8,
        },
    )
    server = await aiohttp_server(create_app(settings), port=port)
    store, sms = server.app[STORE], server.app[SMS]
    n = 300
    await store.contacts.bulk_insert(
        [
            ContactFields(
                present={"first_name", "phones", "tags"},
                first_name=f"C{i}",
                time_zone="UTC",
                phones=[Phone(f"+1212555{i:04d}", f"+1212555{i:04d}", True, "mobile")],
                tags=["all"],
            )
            for i in range(n)
        ]
    )
    blast = await sms.blasts.create(
        BlastSpec(name="b", text="Hi {{ contact.first_name }}", channel="main", audience={"tag": "all"}),
        created_by=None,
    )
    await sms.blasts.run_due()
    sms.wake("main")

    async def all_delivered() -> bool:
        return (await store.sms.progress(blast["id"]))["counts"]["delivered"] == n

    await _until(all_delivered, timeout=90)
    counts = (await store.sms.progress(blast["id"]))["counts"]
    assert counts["delivered"] == n and counts["failed"] == counts["unknown"] == 0
    rows = await store.db.fetchall(
        "SELECT count(*), count(DISTINCT source_key), sum(status = 'delivered') FROM touches WHERE kind = 'sms'"
    )
    assert tuple(rows[0]) == (n, n, n)
    # each row was sent once (its send time kept even when its report came first), reported twice
    rows = await store.db.fetchall("SELECT count(*) FROM sms_outbox WHERE sent_at IS NOT NULL")
    assert rows[0][0] == n
    assert server.app[SMS_EVENTS].reports == 2 * n  # "accepted by the SMSC" and "delivered" each
