"""AMI fixtures: the recorded transcripts and a test PBX on a real socket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cti.interfaces import normalize_interface
from tests.conftest import FIXTURES

AMI = FIXTURES / "ami"
AGENTS = {
    normalize_interface(i)
    for i in (
        "PJSIP/1001",
        "PJSIP/1002",
        "Local/agent1@agents/n",
        "Local/agent2@agents/n",
        "Local/click1001@agents",
    )
}
TRANSCRIPTS = sorted(p for p in AMI.glob("*.ami") if not p.name.endswith(".sent.ami"))


def is_agent(iface: str | None) -> bool:
    return iface in AGENTS


@pytest.fixture
def ami_dir() -> Path:
    if not AMI.is_dir():
        pytest.fail(f"AMI fixtures not found at {AMI} (tests/fixtures in the repository)")
    return AMI


def midcall() -> dict[str, Any]:
    """`v-adopt-midcall.json`: a real CoreShowChannels answer taken mid-call and the events after it."""
    data: dict[str, Any] = json.loads((AMI / "v-adopt-midcall.json").read_text())
    return data


async def start_pbx_app(aiohttp_server: Any, settings: Any, pbx: Any, interfaces: dict[str, str]) -> Any:
    """The real app on loopback, its Asterisk connector logged in to the test PBX."""
    from switchboard.app import create_app
    from switchboard.keys import ASTERISK

    settings.asterisk.enabled = True
    settings.asterisk.port = pbx.port
    settings.asterisk.secret.__init__("crm-secret")
    settings.asterisk.username = "switchboard"
    settings.interfaces = interfaces
    server = await aiohttp_server(create_app(settings))
    await server.app[ASTERISK].client.wait_connected(5)
    return server
