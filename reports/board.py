"""The live agent board: each agent's state, since when, their call, calls waiting per queue, and
today's counts — one small object updated from the source-neutral call events and presence.

States: offline (no Switchboard tab open), ready, ringing, talking, wrap_up (after a call, until
the rep says ready or the wrap-up time runs out), paused (the rep said so).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from crm_link.errors import ValidationError
from crm_link.models import User, iso
from cti.events import CallAnswered, CallEnded, CallEvent, CallRinging

STATES = ("offline", "ready", "ringing", "talking", "wrap_up", "paused")
SETTABLE = ("ready", "paused")


@dataclass(slots=True)
class Agent:
    user_id: int
    user: str
    name: str
    extension: str | None
    state: str = "offline"
    since: datetime | None = None
    call_id: str | None = None
    queue: str | None = None
    paused: bool = False
    where: set[str] = field(default_factory=set)  # the instances it has a tab open on ("" = this one)
    wrap_until: datetime | None = None
    counts: dict[str, float] = field(default_factory=lambda: {"answered": 0, "outbound": 0, "talk_s": 0})

    @property
    def online(self) -> bool:
        """A tab of theirs is open on some instance."""
        return bool(self.where)

    def as_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "name": self.name,
            "extension": self.extension,
            "state": self.state,
            "since": iso(self.since),
            "call_id": self.call_id,
            "queue": self.queue,
            "today": {k: round(v) for k, v in self.counts.items()},
        }


@dataclass(slots=True)
class _Call:
    queue: str | None
    direction: str
    ringing: set[int] = field(default_factory=set)
    answered_by: int | None = None


# (message, the agent's user id or None for queue counts)
Publish = Callable[[dict[str, Any], int | None], Awaitable[Any]]
# an input this board took (a call event, a tab opened or closed, a state set), for the other
# instances' boards: {"k": "board_call" | "board_presence" | "board_state", ...} (see `apply`)
Relay = Callable[[dict[str, Any]], None]


class AgentBoard:
    """Agents' live states; every change is published as `{"type": "agent", "agent": {...}}`.

    With several instances, each keeps a board of its own fed the same inputs: what this one takes
    (call events, presence, states set) goes to `relay`, and the others' come in through `apply`
    and `present_at`, so every instance's board shows every agent the same way.
    """

    def __init__(
        self, clock: Callable[[], datetime], publish: Publish, *, time_zone: str, wrap_up_s: float = 60.0
    ) -> None:
        self._clock = clock
        self._publish = publish
        self._zone = ZoneInfo(time_zone)
        self.wrap_up = timedelta(seconds=wrap_up_s)
        self.agents: dict[int, Agent] = {}
        self.calls: dict[str, _Call] = {}
        self.day: date | None = None
        self.updates = 0
        self.relay: Relay | None = None

    # agents and presence --------------------------------------------------------------------

    def load(self, users: Iterable[User], today_counts: dict[int, dict[str, float]] | None = None) -> None:
        """The agents (reps, managers and anyone with an extension) and today's counts so far."""
        for u in users:
            if not u.active or not (u.role in ("rep", "manager") or u.extension):
                continue
            a = self.agents.get(u.id)
            if a is None:
                a = self.agents[u.id] = Agent(u.id, u.username, u.name, u.extension, since=self._clock())
            a.user, a.name, a.extension = u.username, u.name, u.extension
        if today_counts is not None:
            self.day = self.today()
            for uid, counts in today_counts.items():
                if uid in self.agents:
                    self.agents[uid].counts = dict(counts)

    def today(self) -> date:
        return self._clock().astimezone(self._zone).date()

    def _roll_day(self) -> None:
        today = self.today()
        if self.day != today:
            self.day = today
            for a in self.agents.values():
                a.counts = {"answered": 0, "outbound": 0, "talk_s": 0}

    async def presence(self, user: User, online: bool, where: str = "") -> None:
        """A user's first tab opened (online) or last tab closed, on this instance or `where`."""
        if self.relay is not None and where == "":
            self.relay({"k": "board_presence", "u": user.id, "on": online})
        a = self._agent(user)
        if a is None:
            return
        (a.where.add if online else a.where.discard)(where)
        await self._settle(a)

    async def present_at(self, where: str, user_ids: Collection[int], users: Iterable[User] = ()) -> int:
        """Exactly these users have a tab open on instance `where` (its periodic word; empty when it
        is gone): returns how many agents changed."""
        for u in users:
            self._agent(u)
        changed = 0
        for a in self.agents.values():
            there = a.user_id in user_ids
            if there == (where in a.where):
                continue
            (a.where.add if there else a.where.discard)(where)
            changed += await self._settle(a)
        return changed

    def _agent(self, user: User) -> Agent | None:
        a = self.agents.get(user.id)
        if a is None:
            self.load([user])
            a = self.agents.get(user.id)
        return a

    async def set_state(self, user: User, state: str) -> dict[str, Any]:
        """A rep sets themselves ready or paused (ready also ends their wrap-up)."""
        if state not in SETTABLE:
            raise ValidationError("state", f"must be one of {', '.join(SETTABLE)}")
        a = self.agents.get(user.id)
        if a is None:
            raise ValidationError("state", "only agents (reps, managers, users with an extension) have one")
        if self.relay is not None:
            self.relay({"k": "board_state", "u": user.id, "s": state})
        return await self._set_state(a, state)

    async def _set_state(self, a: Agent, state: str) -> dict[str, Any]:
        a.paused = state == "paused"
        a.wrap_until = None
        await self._settle(a)
        return a.as_json()

    # calls ----------------------------------------------------------------------------------

    async def call_event(self, event: CallEvent, user: User | None) -> None:
        """Fold one call event in (the CallService's observer)."""
        item: dict[str, Any]
        if isinstance(event, CallRinging):
            item = {"t": "ringing", "c": event.call_id, "q": event.queue, "d": event.direction}
        elif isinstance(event, CallAnswered):
            item = {"t": "answered", "c": event.call_id}
        elif isinstance(event, CallEnded):
            item = {
                "t": "ended",
                "c": event.call_id,
                "d": event.direction,
                "a": event.answered,
                "talk": event.talk_s,
            }
        else:
            return
        if self.relay is not None:
            self.relay({"k": "board_call", "u": user.id if user else None} | item)
        await self._call(item, user)

    async def apply(self, item: dict[str, Any], user: User | None) -> None:
        """Take in an input another instance's board relayed (`user`: the one its "u" names)."""
        kind = item.get("k")
        if kind == "board_call":
            await self._call(item, user)
        elif user is None:
            return
        elif kind == "board_presence":
            await self.presence(user, bool(item["on"]), where=str(item.get("i") or "?"))
        elif kind == "board_state" and item.get("s") in SETTABLE:
            a = self._agent(user)
            if a is not None:
                await self._set_state(a, str(item["s"]))

    async def _call(self, item: dict[str, Any], user: User | None) -> None:
        step, call_id = item["t"], str(item["c"])
        if step == "ringing":
            call = self.calls.setdefault(call_id, _Call(item.get("q"), str(item["d"])))
            if user is not None and user.id in self.agents:
                call.ringing.add(user.id)
                await self._settle(self.agents[user.id])
            elif user is not None:
                self.load([user])
                if user.id in self.agents:
                    call.ringing.add(user.id)
                    await self._settle(self.agents[user.id])
            await self._publish_queues()
        elif step == "answered":
            answered = self.calls.get(call_id)
            if answered is None:
                return
            answered.answered_by = user.id if user is not None else None
            for uid in {*answered.ringing, *([answered.answered_by] if answered.answered_by else [])}:
                if uid in self.agents:
                    await self._settle(self.agents[uid])
            await self._publish_queues()
        elif step == "ended":
            direction, was_answered, talk_s = str(item["d"]), bool(item["a"]), item.get("talk")
            ended = self.calls.pop(call_id, None)
            involved = set(ended.ringing) if ended else set()
            who = ended.answered_by if ended and ended.answered_by else (user.id if user else None)
            if who is not None:
                involved.add(who)
            self._roll_day()
            if who is not None and who in self.agents and direction != "internal":
                a = self.agents[who]
                if was_answered and direction == "inbound":
                    a.counts["answered"] += 1
                if direction == "outbound":
                    a.counts["outbound"] += 1
                a.counts["talk_s"] += talk_s or 0
                if was_answered:
                    a.wrap_until = self._clock() + self.wrap_up
            for uid in involved:
                if uid in self.agents:
                    await self._settle(self.agents[uid], force=uid == who)
            await self._publish_queues()

    async def tick(self) -> int:
        """End wrap-ups whose time ran out; returns how many agents changed."""
        now = self._clock()
        changed = 0
        for a in self.agents.values():
            if a.wrap_until is not None and a.wrap_until <= now:
                a.wrap_until = None
                changed += await self._settle(a)
        return changed

    # state ----------------------------------------------------------------------------------

    def _derive(self, a: Agent) -> tuple[str, str | None, str | None]:
        for call_id, call in self.calls.items():
            if call.answered_by == a.user_id:
                return "talking", call_id, call.queue
        for call_id, call in self.calls.items():
            if call.answered_by is None and a.user_id in call.ringing:
                return "ringing", call_id, call.queue
        if a.wrap_until is not None and a.wrap_until > self._clock():
            return "wrap_up", None, None
        if not a.online:
            return "offline", None, None
        return ("paused" if a.paused else "ready"), None, None

    async def _settle(self, a: Agent, force: bool = False) -> int:
        state, call_id, queue = self._derive(a)
        if state == a.state and call_id == a.call_id and not force:
            return 0
        if state != a.state:
            a.since = self._clock()
        a.state, a.call_id, a.queue = state, call_id, queue
        self.updates += 1
        await self._publish({"type": "agent", "agent": a.as_json()}, a.user_id)
        return 1

    def waiting(self) -> dict[str, int]:
        """Calls ringing in each queue that no agent has answered yet."""
        out: dict[str, int] = {}
        for call in self.calls.values():
            if call.answered_by is None and call.direction == "inbound":
                q = call.queue or ""
                out[q] = out.get(q, 0) + 1
        return out

    async def _publish_queues(self) -> None:
        await self._publish({"type": "queues", "waiting": self.waiting()}, None)

    def snapshot(self) -> dict[str, Any]:
        """`{items: [{user, state, since, call_id, …}], waiting: {queue: calls}}` for the API/page."""
        self._roll_day()
        items = sorted((a.as_json() for a in self.agents.values()), key=lambda j: j["user"].lower())
        return {"items": items, "waiting": self.waiting(), "day": self.day.isoformat() if self.day else None}
