"""One clock: the app, its store and its handlers read "now" from the clock they are given."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crm_link.clock import ManualClock
from switchboard.app import create_app
from switchboard.keys import STORE
from tests.conftest import REPO, make_api

PRODUCT = ["crm_link", "cti", "campaigns", "recordings", "templates", "switchboard"]
# simulators of other systems (a PBX, a modem, Twilio's API, Kannel) keep their own time, as the real ones do
SIMULATORS = {"crm_link/clock.py", "cti/ami/server.py", "campaigns/sms/modem/emulator.py"}
WALL = re.compile(r"datetime\.(now|utcnow|today)\(|date\.today\(|time\.time\(\)")


def test_no_product_code_reads_the_wall_clock() -> None:
    offenders = []
    for package in PRODUCT:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in SIMULATORS or rel.startswith("switchboard/sim/"):
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if WALL.search(line):
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == [], "read the injected clock instead:\n" + "\n".join(offenders)


async def test_a_touch_logged_without_a_time_is_stamped_by_the_apps_clock(
    aiohttp_client: Any, settings: Any, tmp_path: Path
) -> None:
    clock = ManualClock(datetime(2031, 3, 4, 5, 6, 7, tzinfo=UTC))
    client = await aiohttp_client(create_app(settings, clock=clock))
    rep = await make_api(client, "jsmith", "rep")
    store = client.server.app[STORE]
    resp = await rep.post(
        "/api/v1/contacts", json={"first_name": "Jane", "phones": ["+12125550100"], "owner": "jsmith"}
    )
    contact = await resp.json()
    resp = await rep.post(f"/api/v1/contacts/{contact['id']}/touches", json={"summary": "Called back"})
    assert resp.status == 201, await resp.text()
    touch = await resp.json()
    assert touch["started_at"].startswith("2031-03-04T05:06:07")
    row = await store.db.fetchone("SELECT created_at FROM contacts WHERE id = ?", (contact["id"],))
    assert row is not None and row["created_at"].startswith("2031-03-04T05:06:07")
