"""The survey report over many responses.

    python bench/surveys.py [--responses 100000] [--runs 20]

Builds a store with one 0-10 survey and N responses (5% unreachable, 20 agents, 4 call lists, spread
over 12 months, reasons on the low scores), then times the report (JSON figures, as the API answers)
by month, agent and list over the whole year and over one month: p50/p95 of `--runs` runs each.
Goal: p95 <= 300 ms over 100k responses. The rows are inserted with plain SQL, so the
rollup the report reads (migration 0072) is built by its triggers, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import pct, report

from crm_link.call_lists import ListSpec
from crm_link.store import Store
from followups.surveys import parse_survey, score
from reports.periods import Period
from reports.surveys import survey_report

ZONE = "America/Chicago"
SPEC = {
    "name": "Recommend",
    "questions": [
        {"key": "nps", "text": "Recommend us?", "type": "scale", "min": 0, "max": 10, "required": True},
        {
            "key": "why",
            "text": "Why not?",
            "type": "multi",
            "options": ["price", "waiting time", "advisor", "car not ready", "not clean"],
            "show_if": {"key": "nps", "op": "lte", "value": 6},
        },
    ],
}


async def build(path: Path, n: int) -> int:
    async with Store(str(path), time_zone=ZONE) as store:
        users = [await store.users.add(f"agent{i}", role="rep", password="x" * 12) for i in range(20)]
        survey = await store.surveys.create(parse_survey(SPEC).to_dict(), user_id=None)
        lists = [
            (
                await store.call_lists.create(
                    ListSpec(name=f"List {i}", survey_id=survey.id), now=datetime.now(UTC)
                )
            )[0]
            for i in range(4)
        ]
    spec = parse_survey(SPEC)
    rnd = random.Random(1)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    rows: list[tuple[object, ...]] = []
    for i in range(n):
        at = (start + timedelta(seconds=rnd.randrange(365 * 86400))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        agent, cl = rnd.choice(users).id, rnd.choice(lists).id
        if rnd.random() < 0.05:
            rows.append((survey.id, f"u:{i}", "unreachable", "{}", None, None, 0, "[]", agent, cl, at))
            continue
        v = rnd.randint(0, 10)
        answers: dict[str, object] = {"nps": v}
        if v <= 6:
            answers["why"] = rnd.sample(SPEC["questions"][1]["options"], rnd.randint(1, 2))  # type: ignore[index]
        s = score(spec, answers)
        rows.append(
            (
                survey.id,
                f"r:{i}",
                "completed",
                json.dumps(answers),
                s.score,
                int(bool(s.satisfied)),
                int(s.dissatisfied),
                json.dumps(s.reasons),
                agent,
                cl,
                at,
            )
        )
    db = sqlite3.connect(path)
    db.executemany(
        "INSERT INTO survey_responses (survey_id, survey_version, source_key, status, answers, score, satisfied,"
        " dissatisfied, reasons, agent_id, list_id, answered_at, created_at, updated_at)"
        " VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(*r, r[-1], r[-1]) for r in rows],
    )
    db.commit()
    db.execute("ANALYZE")
    db.close()
    return survey.id


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--responses", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        sid = await build(path, args.responses)
        lines = [f"built {args.responses} responses in {time.perf_counter() - t0:.1f} s"]
        async with Store(str(path), time_zone=ZONE) as store:
            for label, period in (
                ("year", Period(date(2030, 1, 1), date(2030, 12, 31), ZONE)),
                ("month", Period(date(2030, 6, 1), date(2030, 6, 30), ZONE)),
            ):
                for group in ("month", "agent", "list"):
                    samples = []
                    for _ in range(args.runs):
                        t = time.perf_counter()
                        out = await survey_report(store, sid, period, group)
                        samples.append(time.perf_counter() - t)
                    ms = [s * 1000 for s in samples]
                    lines.append(
                        f"survey_report period={label} group={group} responses={out['responses']}"
                        f" p50_ms={pct(ms, 50):.1f} p95_ms={pct(ms, 95):.1f}"
                    )
    report(lines)


if __name__ == "__main__":
    asyncio.run(main())
