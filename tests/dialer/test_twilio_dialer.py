"""Progressive dialing through Twilio: calls.create to the agent's client, TwiML dials the customer,
the <Dial> result says whether the customer answered; against the loopback stand-in of Twilio's API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from switchboard.app import create_app
from switchboard.keys import DIALER, STORE
from switchboard.sim.twilio_api import FakeTwilioApi
from tests.conftest import free_port, make_api
from tests.dialer.conftest import FixedClock, add_customers, settle, until

NUMBERS = [f"+1212736{5000 + i}" for i in range(6)]


async def test_progressive_list_over_twilio(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, clock: FixedClock
) -> None:
    port = free_port()
    sid, token = "AC" + "3" * 32, "rest-token"
    async with FakeTwilioApi(sid, token, talk_seconds=0.05) as fake:
        fake.dial_outcomes = {NUMBERS[1]: "busy", NUMBERS[2]: "no-answer"}
        settings.twilio.enabled = True
        settings.twilio.account_sid = sid
        settings.twilio.auth_token.__init__(token)
        settings.twilio.api_base = fake.base_url
        settings.twilio.caller_id = "+15557650000"
        settings.server.public_url = f"http://127.0.0.1:{port}"
        settings.dialer.tick_seconds = 0.05
        settings.dialer.calls_per_second = 1000
        settings.dialer.wrap_up_seconds = 0
        app = create_app(settings, clock=clock)
        server = await aiohttp_server(app, port=port)
        client = await aiohttp_client(server)
        store = app[STORE]
        backend = app[DIALER].backend
        assert backend is not None and backend.source == "twilio"
        manager = await make_api(client, "maria", "manager")
        reps = [await make_api(client, name, "rep") for name in ("jsmith", "agarcia")]
        ids = await add_customers(store, NUMBERS)
        clock.advance(hours=2)  # 09:30 in New York

        async def dialing_here() -> bool:  # on PostgreSQL once this instance holds the Twilio dialer's lock
            return app[DIALER].idle_reason() is None

        await until(dialing_here)
        resp = await manager.post(
            "/api/v1/call-lists",
            {
                "name": "tw",
                "mode": "progressive",
                "contact_ids": ids,
                "max_attempts": 2,
                "retry_minutes": 20,
                "start": True,
            },
        )
        list_id = (await resp.json())["id"]
        for rep in reps:
            assert (await rep.post("/api/v1/agent/ready", {"list_id": list_id})).status == 200
        for _ in range(6):
            await settle(app)
            body = await (await manager.get(f"/api/v1/call-lists/{list_id}")).json()
            if body["state"] == "done":
                break
            clock.advance(minutes=21)
        assert body["state"] == "done", body
        attempts = await store.call_lists.attempts_of(list_id=list_id)
        states = {n: [a.state for a in attempts if a.number == n] for n in NUMBERS}
        assert states[NUMBERS[1]] == ["busy", "busy"] and states[NUMBERS[2]] == ["noanswer", "noanswer"]
        assert all(states[n] == ["answered"] for n in NUMBERS[3:] + NUMBERS[:1])
        created = [r[2] for r in fake.requests if r[1].endswith("/Calls.json")]
        assert len(created) == len(attempts) == 8
        assert {c["To"] for c in created} <= {"client:jsmith", "client:agarcia"}
        for a in attempts:
            assert a.touch_id is not None
            touch = await store.touches.get(a.touch_id)
            assert touch.source_key == f"twilio:{a.call_id}" and touch.contact_id == a.contact_id
            assert touch.status == {"answered": "answered", "busy": "busy", "noanswer": "no answer"}[a.state]
        assert body["results"] == {"reached": 4, "busy": 1, "no answer": 1}
        last_ended = (await store.call_lists.attempt(attempts[-1].id)).ended_at
        assert last_ended is not None and last_ended - attempts[0].started_at >= timedelta(minutes=20)
