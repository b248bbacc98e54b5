"""Several instances behind a load balancer on one PostgreSQL store: each instance's hub messages
reach the browser tabs connected to the others (LISTEN/NOTIFY, crm_link.cluster), and `/healthz`
tells this instance's id and role. On SQLite (one instance) only the role is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from crm_link.clock import Clock
from crm_link.cluster import ClusterEvents, Listener, Notice
from crm_link.errors import NotFound, StoreUnavailable
from crm_link.models import User, iso
from crm_link.store import Store
from cti.ami.client import AmiError
from cti.asterisk import AsteriskSource
from reports.board import AgentBoard
from switchboard.hub import Hub
from switchboard.keys import CLOCK, HEALTH, HEALTH_DETAILS, HUB, INSTANCE, STORE, SUPERVISOR

if TYPE_CHECKING:
    from campaigns.dialer.service import Dialer

log = logging.getLogger("switchboard.cluster")

BATCH = 500  # hub messages stored by one INSERT (and announced by one NOTIFY)
QUEUE = 20_000  # messages waiting to be stored; past that they are dropped and counted
KEEP = timedelta(minutes=10)  # how long rows stay for a listener that reconnects to catch up
CATCH_UP = timedelta(seconds=60)  # a reconnected listener delivers what it missed this recently
PRUNE_EVERY = 60.0
PRESENCE_EVERY = 15.0  # each instance says which agents have a tab open on it this often
PRESENCE_LOST = 3  # an instance not heard from for this many periods has no tabs any more


@dataclass
class Instance:
    """This process among the instances: its id, and whether it holds the AMI connection."""

    id: str  # `[server] instance_id`, or HOST-PID-RANDOM made at start
    host: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    ami: str = "off"  # off (no [asterisk]) | holder | standby
    ami_since: datetime | None = None
    ami_taken: int = 0  # how many times this instance took the AMI connection
    relay: ClusterRelay | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "host": self.host,
            "role": "ami_holder"
            if self.ami == "holder"
            else "standby"
            if self.ami == "standby"
            else "no_ami",
            "ami": {"state": self.ami, "since": iso(self.ami_since), "taken": self.ami_taken},
        }
        if self.relay is not None:
            out["events"] = self.relay.stats()
        return out


class ClusterRelay:
    """The hub's relay: messages made here are queued (as JSON, at once), stored in batches and
    announced; other instances' notices are read by id and applied to this hub."""

    def __init__(self, hub: Hub, events: ClusterEvents, origin: str, clock: Clock) -> None:
        self.hub = hub
        self.events = events
        self.origin = origin
        self.clock = clock
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=QUEUE)
        self.last_id = -1  # the newest row applied here (-1: not yet listening)
        self.sent = 0
        self.dropped = 0
        self.applied = 0
        self.delivered = 0
        self.listener: Listener | None = None
        # kinds of items handled elsewhere than by the hub (the agent board's), by kind
        self.handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {}

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sent": self.sent,
            "applied": self.applied,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "queued": self._queue.qsize(),
        }
        if self.listener is not None:
            out["listener"] = self.listener.state
            out["listener_connects"] = self.listener.connects
            if self.listener.error:
                out["listener_error"] = self.listener.error
        return out

    def send(self, item: dict[str, Any]) -> None:
        """Queue one hub message for the other instances (serialized now: the hub may change the dict)."""
        try:
            self._queue.put_nowait(json.dumps(item, separators=(",", ":"), default=str))
        except asyncio.QueueFull:
            self.dropped += 1

    async def run_sender(self) -> None:
        """Store and announce queued messages, a batch per INSERT, in order."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self.events.append(self.origin, batch)
                self.sent += len(batch)
            except StoreUnavailable as e:
                # a pop is worth nothing minutes late: what the database could not take is dropped
                self.dropped += len(batch)
                log.warning("event=cluster_events_dropped count=%d error=%r", len(batch), str(e))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def flush(self, timeout: float) -> None:
        """Wait (up to `timeout`) until every queued message is stored (at shutdown)."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning("event=cluster_events_unsent count=%d", self._queue.qsize())

    async def on_notify(self, payload: str) -> None:
        notice = Notice.parse(payload)
        if notice is None or notice.origin == self.origin:
            return
        for row_id, body in await self.events.read(notice):
            await self._apply(row_id, body)

    async def on_connect(self) -> None:
        """After (re)connecting: deliver what other instances sent while this one was not listening."""
        if self.last_id < 0:
            self.last_id = await self.events.last_id()
            return
        rows = await self.events.since(self.last_id, not_from=self.origin, newer_than=self.clock() - CATCH_UP)
        for row_id, body in rows:
            await self._apply(row_id, body)
        if rows:
            log.info("event=cluster_events_caught_up count=%d", len(rows))

    async def _apply(self, row_id: int, body: str) -> None:
        self.last_id = max(self.last_id, row_id)
        try:
            item = json.loads(body)
        except ValueError:
            log.warning("event=cluster_event_unreadable id=%d", row_id)
            return
        self.applied += 1
        handler = self.handlers.get(str(item.get("k")))
        if handler is not None:
            try:
                await handler(item)
            except Exception:
                log.exception("event=cluster_event_failed id=%d kind=%s", row_id, item.get("k"))
            return
        self.delivered += await self.hub.apply(item)

    async def run_pruner(self) -> None:
        while True:
            await self.events.prune(KEEP)
            await asyncio.sleep(PRUNE_EVERY)


async def cluster_ctx(app: web.Application) -> AsyncIterator[None]:
    """On PostgreSQL: relay this hub's messages to the other instances and theirs to it."""
    store, supervisor, instance = app[STORE], app[SUPERVISOR], app[INSTANCE]
    app[HEALTH_DETAILS]["instance"] = instance.as_dict
    if store.db.pg is None:
        yield
        return
    hub = app[HUB]
    relay = ClusterRelay(hub, ClusterEvents(store.db), instance.id, app[CLOCK])
    relay.listener = Listener(store.db.path, relay.on_notify, on_connect=relay.on_connect)
    instance.relay = relay
    listener = relay.listener
    # this instance's tabs miss other instances' messages while it is not listening
    app[HEALTH]["cluster_events"] = lambda: listener.state
    supervisor.start("cluster-listen", relay.listener.run)
    supervisor.start("cluster-send", relay.run_sender)
    supervisor.start("cluster-prune", relay.run_pruner)
    hub.relay = relay.send
    try:
        # pops raised before the listener is up could not be told apart from missed ones later
        await relay.listener.wait_up(15)
    except TimeoutError:
        log.warning("event=cluster_listener_slow error=%r", relay.listener.error)
    log.info("event=cluster_relay_started instance=%s", instance.id)
    yield
    hub.relay = None
    await supervisor.stop("cluster-listen", "cluster-prune")
    await relay.flush(2.0)
    await supervisor.stop("cluster-send")


class BoardSync:
    """Every instance's agent board fed the same inputs: each board relays what it takes (call
    events, tabs opened and closed, states set) and applies the others'; each instance also says
    every PRESENCE_EVERY seconds which agents have a tab open on it, so one that dies stops counting
    (its agents go offline after PRESENCE_LOST periods unless a tab is open elsewhere)."""

    KINDS = ("board_call", "board_presence", "board_state", "board_here", "board_hello")

    def __init__(
        self, board: AgentBoard, relay: ClusterRelay, store: Store, hub: Hub, instance: str, clock: Clock
    ) -> None:
        self.board, self.relay, self.store, self.hub = board, relay, store, hub
        self.instance = instance
        self.clock = clock
        self.heard: dict[str, datetime] = {}  # other instances -> when they last said who is on them
        self._say_now = asyncio.Event()
        board.relay = lambda item: relay.send(item | {"i": instance})
        for kind in self.KINDS:
            relay.handlers[kind] = self.on_item

    async def _user(self, user_id: Any) -> User | None:
        if user_id is None:
            return None
        try:
            return await self.store.users.get(int(user_id))
        except NotFound:
            return None

    async def on_item(self, item: dict[str, Any]) -> None:
        kind, where = item["k"], str(item.get("i") or "?")
        self.heard[where] = self.clock()
        if kind == "board_hello":  # an instance started: tell it who is on this one now
            self._say_now.set()
        elif kind == "board_here":
            ids = {int(u) for u in item.get("u", [])}
            users = [u for uid in ids - set(self.board.agents) if (u := await self._user(uid)) is not None]
            await self.board.present_at(where, ids, users)
        else:
            await self.board.apply(item, await self._user(item.get("u")))

    async def run(self) -> None:
        """Say who is on this instance now and then; forget the instances gone silent."""
        self.relay.send({"k": "board_hello", "i": self.instance})
        period = timedelta(seconds=PRESENCE_EVERY)
        while True:
            self.relay.send({"k": "board_here", "i": self.instance, "u": self.hub.online_user_ids()})
            now = self.clock()
            for where, at in list(self.heard.items()):
                if now - at > PRESENCE_LOST * period:
                    del self.heard[where]
                    changed = await self.board.present_at(where, ())
                    log.warning("event=instance_silent instance=%s agents_offline=%d", where, changed)
            self._say_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._say_now.wait(), PRESENCE_EVERY)


def sync_board(app: web.Application, board: AgentBoard) -> BoardSync | None:
    """On PostgreSQL: keep this instance's board in step with the others' (worker `cluster-board`)."""
    instance = app[INSTANCE]
    if instance.relay is None:
        return None
    sync = BoardSync(board, instance.relay, app[STORE], app[HUB], instance.id, app[CLOCK])
    app[SUPERVISOR].start("cluster-board", sync.run)
    return sync


FORWARD_WAIT = 5.0  # how long a standby waits for the AMI holder to take a click-to-call


class OriginateForwarding:
    """Click-to-call from any instance: a standby hands the call to the AMI holder through the relay
    and answers with its id once the holder has started it (AmiError when nobody takes it)."""

    def __init__(self, source: AsteriskSource, relay: ClusterRelay, instance: Instance) -> None:
        self.source, self.relay, self.instance = source, relay, instance
        self._waiting: dict[str, asyncio.Future[str]] = {}
        relay.handlers["originate"] = self.on_request
        relay.handlers["originate_ack"] = self.on_ack
        source.forward = self.forward

    async def forward(self, call: dict[str, Any]) -> str:
        request = uuid.uuid4().hex
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[request] = fut
        self.relay.send({"k": "originate", "r": request, "from": self.instance.id, "call": call})
        try:
            return await asyncio.wait_for(fut, FORWARD_WAIT)
        except TimeoutError:
            raise AmiError(
                f"the PBX is not connected here and no instance holding it answered in {FORWARD_WAIT:g} s"
            ) from None
        finally:
            self._waiting.pop(request, None)

    async def on_request(self, item: dict[str, Any]) -> None:
        if self.instance.ami != "holder" or self.source.client.state != "up":
            return  # the holder answers; a standby (or a holder between sessions) stays quiet
        answer: dict[str, Any] = {"k": "originate_ack", "r": item["r"], "to": item["from"]}
        try:
            answer["id"] = await self.source.click_to_call(**item["call"])
        except (AmiError, TypeError) as e:
            answer["error"] = str(e)
        self.relay.send(answer)

    async def on_ack(self, item: dict[str, Any]) -> None:
        fut = self._waiting.get(str(item.get("r")))
        if item.get("to") != self.instance.id or fut is None or fut.done():
            return
        if "error" in item:
            fut.set_exception(AmiError(str(item["error"])))
        else:
            fut.set_result(str(item["id"]))


class DialerSync:
    """Agents ready for a progressive list, known to every instance: an agent joins on whichever
    instance their browser reaches, and the instance holding the AMI connection dials for them (a
    standby's dialer idles). Each change is relayed; an instance that starts asks the others for
    theirs, so whichever instance takes the AMI connection over goes on with the same agents."""

    def __init__(self, dialer: Dialer, relay: ClusterRelay, instance: str) -> None:
        self.dialer, self.relay, self.instance = dialer, relay, instance
        dialer.on_ready = self.changed
        relay.handlers["dialer_ready"] = self.on_ready
        relay.handlers["dialer_hello"] = self.on_hello

    def changed(self, agent_id: int, list_id: int | None) -> None:
        self._send({agent_id: list_id})

    def _send(self, ready: Mapping[int, int | None]) -> None:
        """Tell the other instances these agents' lists (None: no longer ready)."""
        self.relay.send(
            {"k": "dialer_ready", "i": self.instance, "m": {str(a): lid for a, lid in ready.items()}}
        )

    def hello(self) -> None:
        self.relay.send({"k": "dialer_hello", "i": self.instance})

    async def on_ready(self, item: dict[str, Any]) -> None:
        for agent, list_id in dict(item.get("m") or {}).items():
            self.dialer.apply_ready(int(agent), None if list_id is None else int(list_id))

    async def on_hello(self, item: dict[str, Any]) -> None:
        if self.dialer.ready:  # what this instance knows, for the one that just started
            self._send(self.dialer.ready)
