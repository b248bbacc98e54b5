"""The CRM stand-in on loopback and settings that send every event to it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from switchboard.settings import Secret, Settings, WebhookSettings
from switchboard.sim.crm_standin import CrmStandIn
from tests.templates.conftest import inbox  # noqa: F401  (the aiosmtpd fixture)

SECRET = "whsec-test-0123456789abcdef"


@pytest.fixture
async def crm() -> AsyncIterator[CrmStandIn]:
    standin = await CrmStandIn(secret=SECRET).start()
    yield standin
    await standin.stop()


def hook(settings: Settings, crm: CrmStandIn, **kw: Any) -> WebhookSettings:
    """Point the settings' only webhook at the stand-in, with quick retries."""
    w = WebhookSettings(name="dms", url=crm.url + "/hooks/switchboard", secret=Secret(SECRET), **kw)
    settings.crm.webhooks = [w]
    settings.crm.retry_first_seconds = 0.05
    settings.crm.retry_max_seconds = 0.3
    settings.crm.poll_seconds = 0.05
    return w


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 20) -> Any:
    """Poll an async check until it answers something truthy, within a deadline."""
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(0.02)
    return result


async def all_delivered(store: Any, crm: CrmStandIn) -> bool:
    """Every event the store wrote has arrived (and the outbox is empty)."""
    counts = await store.crm_events.counts()
    if counts["backlog"] or counts["unfanned"]:
        return False
    events = await store.crm_events.events_since(0, limit=100_000)
    return bool(events) and all(e.uid in crm.events for e in events)


SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "events"


def assert_schema(event: dict[str, Any]) -> None:
    """The event matches its type's JSON Schema in docs/events (and there is one)."""
    schema = SCHEMAS / f"{event['type']}.json"
    assert schema.is_file(), f"no schema for {event['type']} in docs/events"
    jsonschema.validate(event, json.loads(schema.read_text()))


def assert_in_order_per_contact(crm: CrmStandIn) -> None:
    """For each contact, the events arrived in the order they were written, each as documented."""
    last: dict[Any, int] = {}
    for uid in crm.order:
        e = crm.events[uid]
        assert_schema(e)
        key = e["contact_id"] if e["contact_id"] is not None else ("t", e["data"].get("touch_id"))
        assert e["sequence"] > last.get(key, 0), f"event {e['sequence']} of {key} arrived after {last[key]}"
        last[key] = e["sequence"]
