"""One rule for the interface rung for a user: `[dial_interfaces]`, else `[asterisk] agent_dial`.

The Originates are checked against what the recorded Asterisk was sent: `sip-3-click2call-via-trunk`
rang the desk phone `PJSIP/1001`, `iii-outbound-click2call` the Local channel `Local/click1001@agents`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from crm_link.contacts import validate_contact
from cti.ami.protocol import Action, AmiParser
from cti.ami.server import AmiTestServer
from cti.interfaces import dial_interface, dial_template_fields
from switchboard.keys import STORE
from switchboard.settings import SettingsError, load_settings
from switchboard.telephony import DIRECTORY
from tests.conftest import make_api
from tests.cti.conftest import AMI, start_pbx_app


def recorded_originate(name: str) -> Action:
    parser = AmiParser()
    msgs = parser.feed((AMI / f"{name}.sent.ami").read_bytes())
    return next(m for m in msgs if isinstance(m, Action) and m.name == "Originate")


def test_the_rule() -> None:
    assert dial_interface("PJSIP/{extension}", extension="1001", username="jsmith") == "PJSIP/1001"
    assert (
        dial_interface("Local/click{extension}@agents", extension="1001", username="jsmith")
        == "Local/click1001@agents"
    )
    assert dial_interface("PJSIP/{username}", extension=None, username="jsmith") == "PJSIP/jsmith"
    assert dial_interface("PJSIP/{extension}", extension=None, username="jsmith") is None
    assert (
        dial_interface("PJSIP/{extension}", extension="1001", username="jsmith", override="SIP/desk")
        == "SIP/desk"
    )
    assert dial_template_fields("PJSIP/{extension}") == {"extension"}
    for bad in ("PJSIP/{ext}", "PJSIP/{extension!r}", "{extension}", "PJSIP/{"):
        with pytest.raises(ValueError):
            dial_template_fields(bad)


def test_settings_name_a_bad_template_and_take_overrides(tmp_path: Any) -> None:
    with pytest.raises(SettingsError, match=r"asterisk\.agent_dial"):
        load_settings(env={"SWITCHBOARD_ASTERISK_AGENT_DIAL": "PJSIP/{exten}"})
    cfg = tmp_path / "s.toml"
    cfg.write_text(
        '[asterisk]\nagent_dial = "Local/click{extension}@agents"\n[dial_interfaces]\nkim = "PJSIP/kim"\n'
    )
    s = load_settings(cfg, env={})
    assert s.asterisk.agent_dial == "Local/click{extension}@agents"
    assert s.dial_interfaces == {"kim": "PJSIP/kim"}
    cfg.write_text("[dial_interfaces]\nkim = 5\n")
    with pytest.raises(SettingsError, match="dial_interfaces"):
        load_settings(cfg, env={})


async def _click(client: Any, pbx: AmiTestServer, rep: Any, number: str = "+15557654321") -> tuple[Any, dict]:
    store = client.server.app[STORE]
    pat = await store.contacts.create(
        validate_contact({"first_name": "Pat", "last_name": "Taylor", "phones": [number]}, region="US")
    )
    ws = await client.ws_connect(f"/ws/agent?token={rep.token}")
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
    resp = await rep.post("/api/v1/calls", json={"contact_id": pat.id})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    pop = json.loads((await ws.receive(timeout=10)).data)
    assert pop["type"] == "screen_pop" and pop["call"]["id"] == body["id"]
    async with asyncio.timeout(10):
        while (
            t := await store.touches.by_source_key(f"asterisk:{body['id']}")
        ) is None or t.ended_at is None:
            await asyncio.sleep(0.02)
    await ws.close()
    originate = next(a for a in pbx.actions if a.name == "Originate")
    return t, {"originate": originate, "body": body}


async def test_click_to_call_rings_the_template_not_a_guessed_interface(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer
) -> None:
    # the rep has queue and click Local interfaces configured; the default rule rings their desk phone
    app = await start_pbx_app(aiohttp_server, settings, pbx, {})
    client = await aiohttp_client(app)
    rep = await make_api(
        client,
        "jsmith",
        "rep",
        extension="1001",
        interfaces=["PJSIP/1001", "Local/agent1@agents/n", "Local/click1001@agents"],
    )
    await app.app[DIRECTORY].reload()  # as at a start with this user already configured
    touch, seen = await _click(client, pbx, rep)
    assert seen["originate"].get("Channel") == recorded_originate("sip-3-click2call-via-trunk").get("Channel")
    assert seen["body"]["interface"] == "PJSIP/1001"
    assert touch.username == "jsmith"


async def test_click_to_call_rings_the_configured_template(
    aiohttp_server: Any, aiohttp_client: Any, settings: Any, pbx: AmiTestServer
) -> None:
    # a site whose reps answer on a Local channel: one setting, and the rep needs nothing else configured
    settings.asterisk.agent_dial = "Local/click{extension}@agents"
    app = await start_pbx_app(aiohttp_server, settings, pbx, {})
    client = await aiohttp_client(app)
    rep = await make_api(client, "jsmith", "rep", extension="1001")
    touch, seen = await _click(client, pbx, rep)
    assert seen["originate"].get("Channel") == recorded_originate("iii-outbound-click2call").get("Channel")
    # the channel rung is known to be the rep's: the call is on them, outbound from their extension
    assert touch.username == "jsmith" and touch.direction == "outbound"
