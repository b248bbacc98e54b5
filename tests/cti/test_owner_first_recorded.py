"""Owner-first ringing as a real Asterisk 22 did it (`viii-owner-first-*`, recorded with the README's
dialplan lines asking Switchboard's `/asterisk/owner`), replayed through the AMI test PBX into the
real app: the owner alone is popped while their phone rings, then the queue's agent; the touch and
the missed/answered outcome are the call's; a busy owner is skipped (the route answers empty while
the replayed call is live) and an unknown caller goes straight to the queue."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from crm_link.contacts import validate_contact
from cti.ami.server import AmiTestServer
from switchboard.keys import ASTERISK, STORE
from tests.conftest import make_api
from tests.cti.conftest import AMI, start_pbx_app

AGENT1, AGENT2 = "Local/agent1@agents/n", "Local/agent2@agents/n"
JANE, KIM, SAM = "+15551234567", "+15550002001", "+15550009999"


def _raw(name: str) -> bytes:
    return (AMI / f"viii-owner-first-{name}.ami").read_bytes()


def _linkedid(raw: bytes, number: str) -> str:
    """The Linkedid of the call whose caller is `number` (its first QueueCallerJoin/DialBegin/Hangup)."""
    m = re.search(
        rb"CallerIDNum: " + re.escape(number.encode()) + rb"\r\n(?:[^\r]+\r\n)*?Linkedid: ([0-9.]+)", raw
    )
    assert m is not None, number
    return m.group(1).decode()


def _split(raw: bytes, marker: bytes) -> tuple[bytes, bytes]:
    """The transcript cut at the packet boundary just before the first packet containing `marker`."""
    at = raw.index(marker)
    cut = raw.rindex(b"\r\n\r\n", 0, at) + 4
    return raw[:cut], raw[cut:]


class Browsers:
    """Each rep's /ws/agent, every screen_pop/call_update they get, in arrival order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sockets: list[Any] = []

    async def open(self, client: Any, who: str, token: str) -> None:
        ws = await client.ws_connect(f"/ws/agent?token={token}")
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
        self._sockets.append(ws)
        self._tasks.append(asyncio.create_task(self._read(who, ws)))

    async def _read(self, who: str, ws: Any) -> None:
        async for msg in ws:
            data = json.loads(msg.data)
            if data.get("type") in ("screen_pop", "call_update"):
                self.log.append((who, data))
                self.changed.set()

    def pops(self, call_id: str) -> list[str]:
        return [w for w, m in self.log if m["type"] == "screen_pop" and m["call"]["id"] == call_id]

    async def until(self, what: str, check: Any) -> None:
        async with asyncio.timeout(10):
            while not check():
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), 5)
                except TimeoutError:
                    raise AssertionError(
                        f"{what}: {[(w, m['type'], m['call']) for w, m in self.log]}"
                    ) from None

    async def close(self) -> None:
        for ws in self._sockets:
            await ws.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _setup(aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer) -> Any:
    settings.asterisk.route_secret.__init__("route-secret")
    settings.followups.owner_first_seconds = 8  # as when recorded
    settings.dial_interfaces = {"jsmith": AGENT1, "agarcia": AGENT2}
    server = await start_pbx_app(aiohttp_server, settings, pbx, {AGENT1: "jsmith", AGENT2: "agarcia"})
    client = await aiohttp_client(server)
    store = server.app[STORE]
    jsmith = await make_api(client, "jsmith", "rep", extension="1001", display_name="John Smith")
    agarcia = await make_api(client, "agarcia", "rep", extension="1002", display_name="Ana Garcia")
    contacts = {}
    for first, last, number in (("Jane", "Doe", JANE), ("Kim", "Lee", KIM)):
        contacts[number] = await store.contacts.create(
            validate_contact(
                {"first_name": first, "last_name": last, "phones": [number], "owner": "jsmith"}, region="US"
            )
        )
    await server.app[ASTERISK].directory.reload()
    browsers = Browsers()
    await browsers.open(client, "jsmith", jsmith.token)
    await browsers.open(client, "agarcia", agarcia.token)
    return client, store, jsmith, agarcia, contacts, browsers


async def _owner_of(client: Any, number: str) -> str:
    """What the dialplan's `CURL(.../asterisk/owner?secret=...&number=...)` reads."""
    resp = await client.get("/asterisk/owner", params={"secret": "route-secret", "number": number})
    assert resp.status == 200, await resp.text()
    return str(await resp.text())


async def _touch(store: Any, call_id: str) -> Any:
    async with asyncio.timeout(10):
        while (t := await store.touches.by_source_key(f"asterisk:{call_id}")) is None or t.ended_at is None:
            await asyncio.sleep(0.02)
    return t


def test_the_recordings_show_what_the_dialplan_did() -> None:
    # owner rung alone by Dial (no queue event before its NOANSWER), then the queue
    raw = _raw("noanswer").decode()
    dial, join = raw.index("Event: DialBegin\r\n"), raw.index("Event: QueueCallerJoin")
    first_ring = raw[dial:join]
    assert "DestChannel: Local/agent1@agents-" in first_ring and "DialStatus: NOANSWER" in first_ring
    assert "Event: AgentCalled" not in first_ring
    # the unknown caller: no Dial before the queue
    raw = _raw("unknown").decode()
    assert raw.index("Event: QueueCallerJoin") < raw.index("DestChannel: Local/agent")


async def test_the_owner_is_popped_alone_then_the_queue_and_the_call_is_answered_there(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer
) -> None:
    client, store, jsmith, _agarcia, contacts, browsers = await _setup(
        aiohttp_server, aiohttp_client, settings, pbx
    )
    raw = _raw("noanswer")
    call = _linkedid(raw, JANE)
    assert await _owner_of(client, JANE) == f"{AGENT1},8"  # what the dialplan dialled
    owner_ring, queue = _split(raw, b"Event: QueueCallerJoin")
    await pbx.replay(owner_ring, chunking="random", seed=3)
    await browsers.until("the owner's pop", lambda: browsers.pops(call) == ["jsmith"])
    (_who, pop) = next((w, m) for w, m in browsers.log if m["type"] == "screen_pop")
    assert (
        pop["contact"]["name"] == "Jane Doe" and pop["call"]["from"] == JANE and pop["call"]["queue"] is None
    )
    # while the owner's phone rings for her, a second lookup does not ring them again
    assert await _owner_of(client, JANE) == ""
    await pbx.replay(queue, chunking="random", seed=4)
    await browsers.until("the queue's pop", lambda: browsers.pops(call) == ["jsmith", "agarcia"])
    touch = await _touch(store, call)
    assert (touch.contact_id, touch.status, touch.username) == (contacts[JANE].id, "answered", "agarcia")
    assert touch.payload["queue"] == "sales" and "abandoned" not in touch.payload
    assert [t.source_key for t in (await store.touches.history(contacts[JANE].id)).items] == [
        f"asterisk:{call}"
    ]
    # the owner's pop says who took the call; it is nobody's missed call
    await browsers.until(
        "the owner's pop answered by agarcia",
        lambda: any(w == "jsmith" and m["call"].get("answered_by") == "agarcia" for w, m in browsers.log),
    )
    assert (await (await jsmith.get("/api/v1/me/day")).json())["missed_calls"] == []
    await browsers.close()


async def test_a_busy_owner_is_skipped_and_an_owner_who_answers_takes_the_call(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer
) -> None:
    client, store, _jsmith, _agarcia, contacts, browsers = await _setup(
        aiohttp_server, aiohttp_client, settings, pbx
    )
    raw = _raw("busy")
    kim_call, jane_call = _linkedid(raw, KIM), _linkedid(raw, JANE)
    assert await _owner_of(client, JANE) == f"{AGENT1},8"
    # Kim's owner answered her call; Jane's call starts with the next new channel from the trunk
    kims, janes = _split(raw, b"Channel: Local/7200@from-trunk-00000006;1")
    await pbx.replay(kims)
    await browsers.until(
        "Kim's call answered by her owner",
        lambda: any(
            m["call"]["id"] == kim_call and m["call"]["state"] == "answered" for _, m in browsers.log
        ),
    )
    assert browsers.pops(kim_call) == ["jsmith"]
    assert await _owner_of(client, JANE) == ""  # what Asterisk read then: straight to the queue
    await pbx.replay(janes)
    await browsers.until("Jane's pop", lambda: browsers.pops(jane_call) == ["agarcia"])
    kim, jane = await _touch(store, kim_call), await _touch(store, jane_call)
    assert (kim.contact_id, kim.status, kim.username) == (contacts[KIM].id, "answered", "jsmith")
    assert "queue" not in kim.payload  # the owner's ring: no queue was involved
    assert (jane.contact_id, jane.status, jane.username) == (contacts[JANE].id, "answered", "agarcia")
    assert browsers.pops(jane_call) == ["agarcia"]  # the busy owner was never popped for Jane
    assert await _owner_of(client, JANE) == f"{AGENT1},8"  # free again
    await browsers.close()


async def test_a_known_customer_nobody_answered_is_a_missed_call_on_the_owners_day(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer
) -> None:
    _client, store, jsmith, agarcia, contacts, browsers = await _setup(
        aiohttp_server, aiohttp_client, settings, pbx
    )
    raw = _raw("missed")
    call = _linkedid(raw, JANE)
    owner_ring, queue = _split(raw, b"Event: QueueCallerJoin")
    await pbx.replay(owner_ring)
    await browsers.until("the owner's pop", lambda: browsers.pops(call) == ["jsmith"])
    await pbx.replay(queue, chunking="bytes")
    await browsers.until(
        "missed on both",
        lambda: (
            sorted(w for w, m in browsers.log if m["call"]["id"] == call and m["call"]["state"] == "missed")
            == ["agarcia", "jsmith"]
        ),
    )
    assert browsers.pops(call) == ["jsmith", "agarcia"]
    touch = await _touch(store, call)
    assert (touch.contact_id, touch.status, touch.username) == (contacts[JANE].id, "missed", None)
    assert touch.payload["abandoned"] is True  # she hung up (QueueCallerAbandon), no timeout
    async with asyncio.timeout(10):
        while not (missed := (await (await jsmith.get("/api/v1/me/day")).json())["missed_calls"]):
            await asyncio.sleep(0.02)
    assert [(m["contact_id"], m["assignee"]) for m in missed] == [(contacts[JANE].id, "jsmith")]
    assert (await (await agarcia.get("/api/v1/me/day")).json())["missed_calls"] == []
    await browsers.close()


async def test_an_unknown_caller_goes_straight_to_the_queue(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer
) -> None:
    client, store, _jsmith, _agarcia, _contacts, browsers = await _setup(
        aiohttp_server, aiohttp_client, settings, pbx
    )
    raw = _raw("unknown")
    call = _linkedid(raw, SAM)
    assert await _owner_of(client, SAM) == ""
    await pbx.replay(raw, chunking="random", seed=5)
    await browsers.until(
        "answered by the queue's agent",
        lambda: any(m["call"]["id"] == call and m["call"]["state"] == "ended" for _, m in browsers.log),
    )
    assert browsers.pops(call) == ["jsmith"]  # agent1 in the queue, not as anyone's owner
    pop = next(m for w, m in browsers.log if m["type"] == "screen_pop")
    assert pop["contact"] is None and pop["call"]["queue"] == "sales" and pop["call"]["from"] == SAM
    touch = await _touch(store, call)
    assert (touch.status, touch.username, touch.number) == ("answered", "jsmith", SAM)
    await browsers.close()
