"""Where a screen-pop's time goes inside the app: stamps along the ringing → pop path.

Bench-only instrumentation (`bench/screenpop.py --out-of-process`): it wraps the app's objects from
outside (the product code reads no clock for this) and stamps `time.perf_counter()` — the
CLOCK_MONOTONIC every process on the machine shares — at each step of one ring:

    recv      AgentCalled parsed and queued by the AMI client
    dispatch  the AMI reader turned it into CallRinging and handed it to the call's lane
    start     the ring's pop was started (at once, or when its turn came in the call's lane)
    entered   the pop's task began to run (the loop's turn)
    user      the rung interface resolved to a user (directory)
    observed  the agent board folded the ring in
    matched   the caller lookup (started when the call appeared) awaited
    built     the pop's own reads done, the message built
    encoded   its JSON encoded
    sent      written to the agent's sockets (Hub.publish returned)

Each read the store makes for the pop on a reader thread's connection is also timed in three parts:
the wait for the reader's thread (queued behind other reads), the SQL on that thread, and the hop
back to the event loop (on SQLite a pop's reads run on the loop's thread and are not listed, unless
one ran past its budget and was moved to the thread). The parent joins these with the PBX's write time and the clients' receive time.
"""

from __future__ import annotations

import contextvars
import gc
import itertools
import json
import time
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from _common import pct

RING: contextvars.ContextVar[str | None] = contextvars.ContextVar("bench_ring", default=None)

STAGES = ["recv", "dispatch", "start", "entered", "user", "observed", "matched", "built", "encoded", "sent"]


class PopSpans:
    def __init__(self) -> None:
        self.stamps: dict[str, dict[str, float]] = defaultdict(dict)
        self.reads: dict[str, list[tuple[str, float, float, float, float]]] = defaultdict(list)
        self.lookups: dict[str, tuple[float, float]] = {}
        self.reader_busy: list[tuple[str, float, float]] = []  # every reader statement (label, start, end)
        # the cyclic GC's runs: generation, start, end, the thread's CPU time in it, objects it walked
        self.gc_pauses: list[tuple[int, float, float, float, int]] = []
        self._gc_started = self._gc_cpu = 0.0

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started, self._gc_cpu = time.perf_counter(), time.thread_time()
        else:
            end, cpu = time.perf_counter(), time.thread_time() - self._gc_cpu
            gen = info["generation"]
            # after a full collection every object it walked and kept is in generation 2 (counted
            # after the end stamp; the frozen ones are in no generation)
            kept = len(gc.get_objects(2)) if gen == 2 else 0
            self.gc_pauses.append((gen, self._gc_started, end, cpu, kept))

    def mark(self, name: str, call_id: str | None = None) -> None:
        cid = call_id or RING.get()
        if cid is not None:
            self.stamps[cid].setdefault(name, time.perf_counter())

    def install(self, app: Any) -> None:
        """Wrap the app's AMI client, call service, store reads and hub (call before any ring)."""
        import cti.screenpop
        import cti.service
        import switchboard.hub
        from cti.events import CallRinging
        from switchboard.keys import ASTERISK, HUB, STORE

        asterisk, store, hub = app[ASTERISK], app[STORE], app[HUB]
        gc.callbacks.append(self._gc)
        service = asterisk.service
        queue = asterisk.client.events
        put = queue.put_nowait

        def stamped_put(ev: Any) -> None:
            if ev.name == "AgentCalled":
                self.mark("recv", ev.get("Linkedid"))
            put(ev)

        queue.put_nowait = stamped_put

        dispatch = asterisk._dispatch

        def stamped_dispatch(event: Any) -> Any:
            if isinstance(event, CallRinging):
                self.mark("dispatch", event.call_id)
            return dispatch(event)

        asterisk._dispatch = stamped_dispatch

        handle = service.handle

        async def stamped_handle(event: Any) -> None:
            if not isinstance(event, CallRinging):
                return await handle(event)
            token = RING.set(event.call_id)
            self.mark("start")
            try:
                await handle(event)
            finally:
                RING.reset(token)

        service.handle = stamped_handle

        pop_now = getattr(service, "pop_now", None)
        if pop_now is not None:

            def stamped_pop_now(event: Any) -> None:
                token = RING.set(event.call_id)  # the pop's task copies this context
                self.mark("start")
                try:
                    pop_now(event)
                finally:
                    RING.reset(token)

            service.pop_now = stamped_pop_now

        inner_pop = service._pop

        async def stamped_pop(ev: Any) -> Any:
            self.mark("entered", ev.call_id)
            return await inner_pop(ev)

        service._pop = stamped_pop
        user_for = service.directory.user_for

        async def stamped_user_for(interface: Any) -> Any:
            user = await user_for(interface)
            self.mark("user")
            return user

        service.directory.user_for = stamped_user_for

        for observer in service.observers:
            call_event = observer.call_event

            async def stamped_call_event(event: Any, user: Any, _inner: Any = call_event) -> None:
                await _inner(event, user)
                self.mark("observed")

            observer.call_event = stamped_call_event

        lookup_caller = cti.service.lookup_caller

        async def stamped_lookup(store: Any, number: str | None) -> Any:
            started = time.perf_counter()
            RING.set(f"lookup:{number}")  # this task's own context: labels its reads
            try:
                return await lookup_caller(store, number)
            finally:
                self.lookups[number or ""] = (started, time.perf_counter())

        cti.service.lookup_caller = stamped_lookup

        # the pop's builder: entered once the lookup is awaited, left with the message built
        for module in (cti.service, cti.screenpop):
            for name in ("build_pop", "build_pop_card", "pop_history"):
                inner = getattr(module, name, None)
                if inner is None or getattr(inner, "_stamped", False):
                    continue

                def make(inner: Any, name: str) -> Any:
                    async def stamped(*a: Any, **k: Any) -> Any:
                        self.mark(f"{name}:in")
                        out = await inner(*a, **k)
                        self.mark(f"{name}:out")
                        return out

                    stamped._stamped = True  # type: ignore[attr-defined]
                    return stamped

                setattr(module, name, make(inner, name))

        dumps = json.dumps

        def stamped_dumps(*a: Any, **k: Any) -> str:
            text = dumps(*a, **k)
            self.mark("encoded")
            return text

        switchboard.hub.json = SimpleNamespace(dumps=stamped_dumps, loads=json.loads)  # type: ignore[assignment]

        for attr in ("publish", "publish_pop"):
            inner = getattr(hub, attr, None)
            if inner is None:
                continue

            def make_pub(inner: Any, attr: str) -> Any:
                async def stamped_publish(*a: Any, **k: Any) -> Any:
                    self.mark(f"{attr}:in")
                    out = await inner(*a, **k)
                    self.mark(f"{attr}:out")
                    return out

                return stamped_publish

            setattr(hub, attr, make_pub(inner, attr))

        # the reader connection(s): queue wait, SQL, hop back, per read made for a pop; the
        # background reader's statements (the CRM outbox's counts and probes) for their durations
        for conn_attr in ("_reader", "_pop_reader", "_bg_reader"):
            conn = getattr(store.db, conn_attr, None)
            if conn is None:
                continue
            self._wrap_reader(conn, conn_attr)

    def _wrap_reader(self, conn: Any, label: str) -> None:
        execute = conn._execute
        fetchall = conn._execute_fetchall

        async def timed_execute_fetchall(sql: str, parameters: Any = None) -> Any:
            cid = RING.get()
            asked = time.perf_counter()
            times: list[float] = []

            def run() -> Any:
                times.append(time.perf_counter())
                try:
                    return fetchall(sql, parameters if parameters is not None else [])
                finally:
                    times.append(time.perf_counter())

            rows = await execute(run)
            back = time.perf_counter()
            what = " ".join(sql.split())[:60]
            self.reader_busy.append((label + " " + what, times[0], times[1]))
            if cid is not None:
                self.reads[cid].append((what, asked, times[0], times[1], back))
            return rows

        conn.execute_fetchall = timed_execute_fetchall

    def dump(self) -> str:
        return json.dumps(
            {
                "stamps": self.stamps,
                "reads": self.reads,
                "lookups": self.lookups,
                "reader_busy": self.reader_busy,
                "gc_pauses": self.gc_pauses,
            }
        )


def _ms(x: float) -> str:
    return f"{x * 1e3:.2f}"


def analyse(
    spans: dict[str, Any], sent: dict[str, float], arrivals: dict[str, float], numbers: dict[str, str]
) -> list[str]:
    """Per-stage p50/p99/max, and the slowest pops stage by stage."""
    stamps: dict[str, dict[str, float]] = spans["stamps"]
    reads: dict[str, list[list[Any]]] = spans["reads"]
    lookups: dict[str, list[float]] = spans["lookups"]
    busy: list[list[Any]] = spans["reader_busy"]
    pauses: list[list[Any]] = spans.get("gc_pauses", [])
    rows = []
    for call, t_arrived in arrivals.items():
        st = stamps.get(call)
        if call not in sent or st is None:
            continue
        points = [("pbx", sent[call])]
        for name in STAGES:
            if name in st:
                points.append((name, st[name]))
            elif name == "matched":
                for alt in ("build_pop:in", "build_pop_card:in"):
                    if alt in st:
                        points.append((name, st[alt]))
                        break
            elif name == "built":
                for alt in ("build_pop:out", "build_pop_card:out"):
                    if alt in st:
                        points.append((name, st[alt]))
                        break
            elif name == "sent":
                for alt in ("publish:out", "publish_pop:out"):
                    if alt in st:
                        points.append((name, st[alt]))
                        break
        points.append(("client", t_arrived))
        rows.append((call, points))
    out: list[str] = []
    if not rows:
        return ["no pops joined"]
    # per step: time from the previous stamp present
    steps: dict[str, list[float]] = defaultdict(list)
    for _, points in rows:
        for (a, ta), (b, tb) in itertools.pairwise(points):
            steps[f"{a}->{b}"].append(tb - ta)
    order = ["pbx", *STAGES, "client"]
    for key in sorted(steps, key=lambda k: order.index(k.split("->")[0])):
        s = steps[key]
        out.append(
            f"  step {key:<20} n={len(s):4d} p50 {_ms(pct(s, 50))} ms  p99 {_ms(pct(s, 99))} ms"
            f"  max {_ms(max(s))} ms"
        )
    for gen in (0, 1, 2):
        runs = [p for p in pauses if p[0] == gen]
        if runs:
            ds = [p[2] - p[1] for p in runs]
            cpu = [p[3] for p in runs]
            kept = f", objects walked {'/'.join(str(p[4]) for p in runs)}" if gen == 2 else ""
            out.append(
                f"  gc generation {gen}: {len(ds)} runs, p50 {_ms(pct(ds, 50))} ms, max {_ms(max(ds))} ms,"
                f" {_ms(sum(ds))} ms in all (on a core: max {_ms(max(cpu))} ms){kept}"
            )
    # the background reader's statements (opened by the CRM worker's first turn), by statement
    bg: dict[str, list[float]] = defaultdict(list)
    for label, b, e in busy:
        if label.startswith("_bg_reader "):
            bg[label.removeprefix("_bg_reader ")].append(e - b)
    for what, ds in sorted(bg.items(), key=lambda kv: -sum(kv[1])):
        out.append(
            f"  background read {what:<60} n={len(ds):4d} p50 {_ms(pct(ds, 50))} ms"
            f"  max {_ms(max(ds))} ms  {_ms(sum(ds))} ms in all"
        )
    # reads made for pops
    parts: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for cid, rs in reads.items():
        if cid.startswith("lookup:") or cid in sent:
            kind = "lookup" if cid.startswith("lookup:") else "pop"
            for what, asked, began, ended, back in rs:
                label = f"{kind}: {what[:48]}"
                parts[label]["queued"].append(began - asked)
                parts[label]["sql"].append(ended - began)
                parts[label]["back"].append(back - ended)
    for label, d in sorted(parts.items()):
        out.append(
            f"  read {label:<58} n={len(d['sql']):4d} "
            + "  ".join(f"{k} p50/p99 {_ms(pct(v, 50))}/{_ms(pct(v, 99))}" for k, v in d.items())
        )
    # where the slowest pops spent it
    total = sorted(rows, key=lambda r: r[1][-1][1] - r[1][0][1])
    slow = total[-max(3, len(total) // 50) :]
    out.append(f"  slowest {len(slow)} pops (ms per step; lookup = prefetch start→end vs ring start):")
    for call, points in slow:
        steps_txt = " ".join(f"{b}+{_ms(tb - ta)}" for (a, ta), (b, tb) in itertools.pairwise(points))
        lk = lookups.get(numbers.get(call, ""))
        start = dict(points).get("start")
        lk_txt = f" lookup {_ms(lk[0] - start)}..{_ms(lk[1] - start)}" if lk and start else ""
        own = reads.get(call, [])
        rd = " reads " + ",".join(
            f"q{_ms(r[2] - r[1])}/sql{_ms(r[3] - r[2])}/b{_ms(r[4] - r[3])}" for r in own
        )
        t0, t1 = points[0][1], points[-1][1]
        others = [
            b for b in busy if b[2] > t0 and b[1] < t1 and not any(abs(b[1] - r[2]) < 1e-9 for r in own)
        ]
        oth = f" other reader work {len(others)}: " + ", ".join(
            f"{b[0][:40]}({_ms(b[2] - b[1])})" for b in others[:3]
        )
        gcs = [f"gen{p[0]} {_ms(p[2] - p[1])}" for p in pauses if p[2] > t0 and p[1] < t1]
        gc_txt = f" gc during it: {', '.join(gcs)}" if gcs else ""
        out.append(f"   {_ms(t1 - t0)} ms: {steps_txt}{lk_txt}{rd}{oth}{gc_txt}")
    return out
