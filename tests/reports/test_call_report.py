"""A seeded day of calls, replayed through the recorded Asterisk transcripts (each shifted to its hour
and given its own call ids) and the test PBX's scripted calls: the call report over HTTP matches the
figures this test derives itself from the plan and the stored calls; CSV equals JSON."""

from __future__ import annotations

import asyncio
import csv
import io
import math
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from crm_link.call_rollups import wait_step
from cti.ami.server import AmiTestServer
from reports.calls import COLUMNS
from switchboard.keys import ASTERISK, STORE
from tests.conftest import PASSWORD
from tests.cti.conftest import AMI, start_pbx_app

ZONE = ZoneInfo("America/Chicago")
DAY = datetime(2031, 6, 10, tzinfo=ZONE)  # a Tuesday
TS = re.compile(rb"^Timestamp: (\d+\.\d+)\r$", re.M)

# (transcript, local start, number to put on it instead of the recorded one)
PLAN = [
    ("i-inbound-answered", DAY - timedelta(seconds=2), None),  # the day before: not in the report
    ("i-inbound-answered", DAY.replace(hour=9, minute=5), None),
    ("ii-inbound-abandoned", DAY.replace(hour=9, minute=20), None),
    ("iii-outbound-click2call", DAY.replace(hour=9, minute=40), (b"5557654321", b"5559876543")),  # a callback
    ("iv-a-redirect", DAY.replace(hour=10, minute=10), None),
    ("ii-inbound-abandoned", DAY.replace(hour=11, minute=0), (b"5559876543", b"5550002222")),
    ("i-inbound-answered", DAY.replace(hour=14, minute=30), None),
    ("iii-outbound-click2call", DAY.replace(hour=14, minute=45), None),
    ("ii-inbound-abandoned", DAY.replace(hour=23, minute=59, second=50), (b"5559876543", b"5550003333")),
]
KIND = {
    "i-inbound-answered": ("inbound", "answered"),
    "ii-inbound-abandoned": ("inbound", "abandoned"),
    "iii-outbound-click2call": ("outbound", "answered"),
    "iv-a-redirect": ("inbound", "answered"),
}


def shifted(name: str, n: int, start: datetime, swap: tuple[bytes, bytes] | None) -> tuple[bytes, str]:
    """The transcript moved to `start` (its first event) with call ids of its own; and its Linkedid."""
    data = (AMI / f"{name}.ami").read_bytes()
    first = float(TS.search(data).group(1))  # type: ignore[union-attr]
    offset = start.timestamp() - first
    out = []
    for line in data.split(b"\n"):
        m = TS.match(line + b"\n") if line.startswith(b"Timestamp: ") else None
        if m:
            line = b"Timestamp: %.6f\r" % (float(m.group(1)) + offset)
        else:
            line = line.replace(b"17953", b"9%04d" % n)
            if swap:
                line = line.replace(*swap)
        out.append(line)
    body = b"\n".join(out)
    linkedid = re.search(rb"Linkedid: ([\d.]+)", body).group(1).decode()  # type: ignore[union-attr]
    return body, linkedid


async def wait_ended(store: Any, key: str) -> Any:
    async with asyncio.timeout(15):
        while (t := await store.touches.by_source_key(key)) is None or t.ended_at is None:
            await asyncio.sleep(0.02)
    return t


def p90(values: list[float]) -> int | None:
    """Nearest rank over waits rounded up to the whole second, on the report's steps."""
    if not values:
        return None
    ups = sorted(math.ceil(v) for v in values)
    return wait_step(ups[math.ceil(0.9 * len(ups)) - 1])


@pytest.fixture
async def pbx_app(aiohttp_server: Any, settings: Any, pbx: AmiTestServer) -> Any:
    return await start_pbx_app(
        aiohttp_server,
        settings,
        pbx,
        {
            "Local/agent1@agents/n": "agent1",
            "Local/agent2@agents/n": "agent2",
            "Local/click1001@agents": "agent1",
        },
    )


async def test_a_replayed_day_gives_the_figures_computed_from_the_plan(
    pbx_app: Any, pbx: AmiTestServer
) -> None:
    app = pbx_app.app
    store = app[STORE]
    await store.users.add("agent1", role="rep", password=PASSWORD, extension="1001")
    await store.users.add("agent2", role="rep", password=PASSWORD)
    boss = await store.users.add("boss", role="manager", password=PASSWORD)
    token = await store.users.create_token(boss.id, "test")
    await app[ASTERISK].directory.reload()

    touches = []
    for n, (name, start, swap) in enumerate(PLAN):
        body, linkedid = shifted(name, n, start, swap)
        await pbx.replay(body)
        touches.append((name, start, await wait_ended(store, f"asterisk:{linkedid}")))
    # the scripted PBX: one more answered and one abandoned call, now (a day of their own)
    scripted = [
        await pbx.inbound_call(
            "+15550009999", agents=["Local/agent2@agents/n"], answer="Local/agent2@agents/n"
        ),
        await pbx.inbound_call("+15550008888", agents=["Local/agent1@agents/n", "Local/agent2@agents/n"]),
    ]
    scripted_touches = [await wait_ended(store, f"asterisk:{c}") for c in scripted]

    # --- what the report must say, from the plan and the stored calls -----------------------
    day = [(name, t) for name, start, t in touches if start.date() == DAY.date()]
    inbound = [t for name, t in day if KIND[name][0] == "inbound"]
    answered = [t for name, t in day if KIND[name] == ("inbound", "answered")]
    abandoned = [t for name, t in day if KIND[name][1] == "abandoned"]
    outbound = [t for name, t in day if KIND[name][0] == "outbound"]
    for t in answered:
        assert t.status == "answered"
    for t in abandoned:
        assert t.status == "missed" and t.payload.get("abandoned") is True
    waits = [
        (
            datetime.fromisoformat(t.payload["answered_at"].replace("Z", "+00:00")) - t.started_at
        ).total_seconds()
        for t in answered
    ]
    # the 09:20 abandoned caller was called back at 09:40 (same number); the others never
    first_ab = abandoned[0]
    callback = outbound[0]
    assert callback.number == first_ab.number
    cb_s = (callback.started_at - first_ab.ended_at).total_seconds()
    assert 0 < cb_s < 3600

    headers = {"Authorization": f"Bearer {token}"}
    base = str(pbx_app.make_url(""))
    async with aiohttp.ClientSession(headers=headers) as http:

        async def get(group: str, fmt: str = "json", **q: str) -> Any:
            params = {
                "from": DAY.date().isoformat(),
                "to": DAY.date().isoformat(),
                "group": group,
                "format": fmt,
            }
            async with http.get(base + "/api/v1/reports/calls", params=params | q) as resp:
                assert resp.status == 200, await resp.text()
                return await resp.json() if fmt == "json" else await resp.text()

        rep = await get("day")
        tot = rep["totals"]
        assert tot["inbound"] == len(inbound) == 6
        assert tot["answered"] == len(answered) == 3
        assert tot["abandoned"] == len(abandoned) == 3
        assert tot["missed"] == 0
        assert tot["outbound"] == len(outbound) == 2
        assert tot["outbound_answered"] == 2
        assert tot["answer_rate"] == 0.5
        assert tot["avg_wait_s"] == round(sum(waits) / len(waits), 1)
        assert tot["p90_wait_s"] == p90(waits)
        talk = sum(t.payload.get("talk_s") or 0 for _, t in day)
        assert tot["talk_s"] == round(talk)
        assert tot["unanswered"] == 3 and tot["not_called_back"] == 2
        assert tot["avg_callback_s"] == round(cb_s, 1)
        assert [r["key"] for r in rep["rows"]] == [DAY.date().isoformat()]
        # against the day before: its one call, by the same definitions
        prev = rep["previous"]
        assert (prev["from"], prev["to"]) == ((DAY - timedelta(days=1)).date().isoformat(),) * 2
        assert (prev["totals"]["inbound"], prev["totals"]["answered"], prev["totals"]["outbound"]) == (
            1,
            1,
            0,
        )

        # a callback window shorter than the callback: all three count as not called back
        short = await get("day", callback_within=str(max(1, math.floor(cb_s / 60) - 1)))
        assert short["totals"]["not_called_back"] == (3 if cb_s >= 120 else 2)

        hours = {r["key"]: r for r in (await get("hour"))["rows"]}
        assert len(hours) == 24
        expect_hours: dict[str, dict[str, int]] = {}
        for name, start, _ in touches:
            if start.date() != DAY.date():
                continue
            h = expect_hours.setdefault(f"{start.hour:02d}", {"inbound": 0, "outbound": 0})
            h[KIND[name][0]] += 1
        for key, row in hours.items():
            want = expect_hours.get(key, {"inbound": 0, "outbound": 0})
            assert (row["inbound"], row["outbound"]) == (want["inbound"], want["outbound"]), key

        agents = {r["key"]: r for r in (await get("agent"))["rows"]}
        assert agents["agent1"]["answered"] == 3 and agents["agent1"]["outbound"] == 2
        assert agents[""]["abandoned"] == 3  # nobody answered them

        queues = {r["key"]: r for r in (await get("queue"))["rows"]}
        assert queues["sales"]["inbound"] == 6 and queues[""]["outbound"] == 2

        # CSV: the same numbers as JSON, row for row, totals last
        for group in ("agent", "day", "hour", "queue"):
            js = await get(group)
            rows = list(csv.reader(io.StringIO(await get(group, "csv"))))
            assert rows[0] == list(COLUMNS)
            for line, row in zip(rows[1:], [*js["rows"], js["totals"]], strict=True):
                assert line == ["" if row[c] is None else str(row[c]) for c in COLUMNS]

        # the day before holds just the call at 23:59:58
        prev = await get("day", **{"from": (DAY - timedelta(days=1)).date().isoformat()})
        assert prev["totals"]["inbound"] == 7
        assert [r["inbound"] for r in prev["rows"]] == [1, 6]

        # the scripted calls land on their own day (today in Chicago, whenever this runs)
        started = [t.started_at.astimezone(ZONE).date() for t in scripted_touches]
        span = {"from": min(started).isoformat(), "to": max(started).isoformat()}
        now = (await get("day", **span))["totals"]
        assert (now["inbound"], now["answered"], now["abandoned"]) == (2, 1, 1)

        # bad input names its field
        for q, field in (
            ({"group": "week"}, "group"),
            ({"from": "2031-13-01"}, "from"),
            ({"from": "2031-06-10", "to": "2031-06-01"}, "to"),
            ({"callback_within": "0"}, "callback_within"),
            ({"format": "xml"}, "format"),
        ):
            async with http.get(base + "/api/v1/reports/calls", params=q) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["field"] == field
