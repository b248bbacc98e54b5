"""An AMI test server: real AMI framing on a real TCP socket, for tests and the demo's PBX.

It logs clients in (plain or MD5), answers Ping, CoreShowChannels (its own channels, or a recorded
listing), Getvar, Setvar, Redirect, Originate and
Logoff, replays recorded transcripts of a real Asterisk byte for byte (whole, in random chunks or
one byte at a time), and plays scripted calls whose events follow what the recorded Asterisk sent:
Local channel ;1/;2 pairs, `<unknown>` caller IDs first, queue events, MixMonitor file names in
VarSet, Cdr events, AgentComplete after the caller's hangup.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cti.ami.protocol import Action, AmiParser, encode_message

log = logging.getLogger("cti.ami.server")

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
CAUSES = {16: "Normal Clearing", 17: "User busy", 19: "No user response", 0: "Unknown", 21: "Call Rejected"}


@dataclass(slots=True)
class Channel:
    name: str
    uniqueid: str
    linkedid: str
    caller: str
    exten: str
    context: str
    state: str = "Down"
    bridge: str = ""
    created: float = field(default_factory=time.time)


class _Session:
    def __init__(
        self, server: AmiTestServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.logged_in = False
        self.challenge: str | None = None
        self.parser = AmiParser(expect_banner=False)

    async def send(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(data)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def respond(self, action: Action, status: str = "Success", **headers: Any) -> None:
        await self.send(encode_message("Response", status, {"ActionID": action.action_id, **headers}))

    async def serve(self) -> None:
        await self.send(BANNER)
        while True:
            data = await self.reader.read(65536)
            if not data:
                return
            for msg in self.parser.feed(data):
                if isinstance(msg, Action):
                    self.server.actions.append(msg)
                    if not await self.handle(msg):
                        return

    async def handle(self, a: Action) -> bool:
        srv = self.server
        name = a.name.lower()
        if name == "challenge":
            self.challenge = str(random.randint(100_000_000, 999_999_999))
            await self.respond(a, Challenge=self.challenge)
        elif name == "login":
            ok = a.get("Username") == srv.username and (
                a.get("Secret") == srv.secret
                or (
                    self.challenge is not None
                    and a.get("Key") == hashlib.md5((self.challenge + srv.secret).encode()).hexdigest()
                )
            )
            if not ok:
                await self.respond(a, "Error", Message="Authentication failed")
                return False
            self.logged_in = True
            await self.respond(a, Message="Authentication accepted")
            await self.send(
                encode_message(
                    "Event",
                    "FullyBooted",
                    {
                        "Privilege": "system,all",
                        "Uptime": srv.uptime(),
                        "LastReload": srv.uptime(),
                        "Status": "Fully Booted",
                    },
                )
            )
            srv.logins += 1
            srv._logged_in.set()
        elif not self.logged_in:
            await self.respond(a, "Error", Message="Permission denied")
        elif name == "ping":
            if srv.silent:
                return True
            await self.respond(a, Ping="Pong", Timestamp=f"{time.time():.6f}")
        elif name == "coreshowchannels":
            await self.respond(a, EventList="start", Message="Channels will follow")
            if srv.listing is not None:  # a recorded answer of a real Asterisk
                for item in srv.listing:
                    headers: dict[str, str | None] = {
                        k: v for k, v in item.items() if k not in ("Event", "ActionID", "_rx")
                    }
                    await self.send(
                        encode_message("Event", "CoreShowChannel", {"ActionID": a.action_id} | headers)
                    )
            for ch in srv.channels.values() if srv.listing is None else ():
                await self.send(
                    encode_message(
                        "Event",
                        "CoreShowChannel",
                        {
                            "ActionID": a.action_id,
                            "Channel": ch.name,
                            "ChannelState": "6" if ch.state == "Up" else "4",
                            "ChannelStateDesc": ch.state,
                            "CallerIDNum": ch.caller,
                            "Context": ch.context,
                            "Exten": ch.exten,
                            "Uniqueid": ch.uniqueid,
                            "Linkedid": ch.linkedid,
                            "BridgeId": ch.bridge,
                            "Duration": time.strftime("%H:%M:%S", time.gmtime(time.time() - ch.created)),
                        },
                    )
                )
            await self.send(
                encode_message(
                    "Event",
                    "CoreShowChannelsComplete",
                    {
                        "ActionID": a.action_id,
                        "EventList": "Complete",
                        "ListItems": len(srv.channels if srv.listing is None else srv.listing),
                    },
                )
            )
        elif name == "getvar":
            # as Asterisk answers: Success, with an empty Value for a variable that is not set
            value = srv.variables.get((a.get("Channel") or "", a.get("Variable") or ""), "")
            await self.respond(a, Variable=a.get("Variable"), Value=value)
        elif name == "setvar":
            await self.respond(a, Message="Variable Set")
        elif name == "redirect":
            await self.respond(a, Message="Redirect successful")
        elif name == "originate":
            await self.respond(a, Message="Originate successfully queued")
            srv._spawn(srv.originate_call(a))
        elif name == "logoff":
            await self.respond(a, "Goodbye", Message="Thanks for all the fish.")
            return False
        else:
            await self.respond(a, "Error", Message="Invalid/unknown command")
        return True


class AmiTestServer:
    """`async with AmiTestServer(secret=...) as pbx:` then connect a client to `pbx.port`."""

    def __init__(
        self,
        *,
        username: str = "switchboard",
        secret: str = "secret",
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        recordings_dir: Path | None = None,
        record: Callable[[Path, float], Awaitable[None]] | None = None,
    ) -> None:
        self.username, self.secret = username, secret
        self.host, self.port = host, port
        self.speed = speed  # 1.0 = real time; tests use small numbers
        self.recordings_dir = recordings_dir
        self.record = record  # writes a call's audio file (the demo makes a short WAV)
        self.sessions: list[_Session] = []
        self.actions: list[Action] = []
        self.channels: dict[str, Channel] = {}
        self.listing: list[dict[str, str]] | None = None  # a recorded CoreShowChannels answer to give
        self.variables: dict[tuple[str, str], str] = {}  # (channel, variable) -> value, for Getvar
        self.logins = 0
        self.silent = False
        self.outcomes: dict[str, str] = {}  # customer number -> answer | busy | noanswer
        self.outcome_for: Callable[[str], str] | None = None  # for numbers not in `outcomes`
        self.agent_outcomes: dict[str, str] = {}  # originated interface -> noanswer (default: answer)
        self.talk_seconds = 3.0
        # the dialplan's own steps between a call's arrival (its channels and caller ID) and the
        # queue taking it: 4-5 ms in the recordings of Asterisk 22 (i-inbound-answered, vii-inbound-did)
        self.dialplan_seconds = 0.005
        self._logged_in = asyncio.Event()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(int(time.time()) * 1000)
        self._seq = itertools.count(1)
        self._started = time.time()

    def uptime(self) -> int:
        return int(time.time() - self._started)

    async def __aenter__(self) -> AmiTestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.drop_connections()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, reader, writer)
        self.sessions.append(session)
        try:
            await session.serve()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if session in self.sessions:
                self.sessions.remove(session)
            writer.close()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait_logged_in(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._logged_in.wait(), timeout)

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until every scripted call (an answered Originate, say) has sent its last event."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drop_connections(self) -> None:
        """Cut every client off abruptly (a network failure or PBX restart as the client sees it)."""
        for session in list(self.sessions):
            session.writer.transport.abort()
        self.sessions.clear()
        self._logged_in.clear()

    async def broadcast(self, data: bytes) -> None:
        for session in list(self.sessions):
            if session.logged_in:
                await session.send(data)

    # replay ----------------------------------------------------------------------------------

    async def replay(self, transcript: bytes, *, chunking: str = "whole", seed: int = 0) -> None:
        """Send a recorded transcript (after its banner and login answer) to the logged-in clients."""
        data = transcript
        if data.startswith(b"Asterisk Call Manager/"):
            data = data[data.index(b"\r\n") + 2 :]
        first_end = data.find(b"\r\n\r\n")
        if data.startswith(b"Response:") and first_end >= 0:
            data = data[first_end + 4 :]  # the recorded login answer; ours was sent already
        if chunking == "whole":
            await self.broadcast(data)
            return
        rng = random.Random(seed)
        i = 0
        while i < len(data):
            n = 1 if chunking == "bytes" else rng.randint(1, 400)
            await self.broadcast(data[i : i + n])
            i += n
            if chunking == "bytes" and i % 512 == 0:
                await asyncio.sleep(0)

    async def play_events(self, events: Iterable[dict[str, str]]) -> None:
        """Send recorded events (JSON objects as in the fixtures; keys starting with `_` are notes)."""
        for item in events:
            headers = {k: v for k, v in item.items() if k != "Event" and not k.startswith("_")}
            await self.broadcast(encode_message("Event", item["Event"], headers))

    # scripted calls --------------------------------------------------------------------------

    def _uid(self) -> str:
        return f"{int(time.time())}.{next(self._ids) % 100000}"

    def _chan_name(self, base: str, local: bool) -> tuple[str, str]:
        seq = f"{next(self._seq):08x}"
        return (f"{base}-{seq};1", f"{base}-{seq};2") if local else (f"{base}-{seq}", "")

    async def event(self, name: str, channel: Channel | None = None, **headers: Any) -> None:
        h: dict[str, Any] = {"Privilege": "call,all", "Timestamp": f"{time.time():.6f}"}
        if channel is not None:
            h |= {
                "Channel": channel.name,
                "ChannelState": "6" if channel.state == "Up" else "4",
                "ChannelStateDesc": channel.state,
                "CallerIDNum": channel.caller or "<unknown>",
                "CallerIDName": "<unknown>",
                "ConnectedLineNum": "<unknown>",
                "ConnectedLineName": "<unknown>",
                "Language": "en",
                "AccountCode": "",
                "Context": channel.context,
                "Exten": channel.exten,
                "Priority": "1",
                "Uniqueid": channel.uniqueid,
                "Linkedid": channel.linkedid,
            }
        await self.broadcast(encode_message("Event", name, h | headers))

    def _new(
        self, name: str, linkedid: str | None, caller: str, exten: str, context: str, uid: str | None = None
    ) -> Channel:
        uid = uid or self._uid()
        ch = Channel(name, uid, linkedid or uid, caller, exten, context)
        self.channels[uid] = ch
        return ch

    async def _pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.speed)

    async def _hangup(self, ch: Channel, cause: int = 16) -> None:
        if self.channels.pop(ch.uniqueid, None) is None:
            return
        await self.event("Hangup", ch, Cause=cause, **{"Cause-txt": CAUSES.get(cause, "Unknown")})
        await self.event("Cdr", None, Channel=ch.name, UniqueID=ch.uniqueid, Disposition="ANSWERED")

    async def _newchannel(self, ch: Channel, number: str) -> None:
        caller = ch.caller
        ch.caller = ""
        await self.event("Newchannel", ch)
        ch.caller = caller
        if number:
            await self.event("NewCallerid", ch, CallerIDNum=number)
        await self.event("VarSet", ch, Variable="SIPCALLID", Value=secrets.token_hex(8))

    async def _start_recording(self, ch: Channel) -> None:
        fname = f"{ch.uniqueid}.wav"
        pbx_path = f"/var/spool/asterisk/monitor/{fname}"
        await self.event("VarSet", ch, Variable="MIXMONITOR_FILENAME", Value=pbx_path)
        await self.event("MixMonitorStart", ch)

    async def _finish_recording(self, ch: Channel, seconds: float) -> None:
        if self.recordings_dir is not None and self.record is not None:
            await self.record(self.recordings_dir / f"{ch.uniqueid}.wav", seconds)

    async def inbound_call(
        self,
        number: str,
        *,
        agents: Iterable[str],
        queue: str = "sales",
        dialed: str = "7000",
        answer: str | None = None,
        ring_seconds: float = 2.0,
        talk_seconds: float | None = None,
        record: bool = True,
        first: str | None = None,
    ) -> str:
        """A customer calls the queue; the agents ring in turn; `answer` (an interface) picks up or nobody does.

        `first`: the dialplan's owner-first `Dial(INTERFACE,SECONDS)` before its `Queue()`: that
        interface rings alone for `ring_seconds` and does not answer, then the queue runs.
        Returns the call's Linkedid once the call is over.
        """
        trunk_name, queue_name = self._chan_name(f"Local/{dialed}@from-trunk", local=True)
        caller = self._new(trunk_name, None, number, dialed, "from-trunk")
        leg = self._new(queue_name, caller.linkedid, number, dialed, "from-trunk")
        leg.state = "Ring"
        await self._newchannel(caller, number)
        await self._newchannel(leg, number)
        caller.state = leg.state = "Up"
        await self.event("Newstate", leg)
        if record:
            await self._start_recording(leg)
        await self._pause(self.dialplan_seconds)
        if first is not None:
            await self._dial_unanswered(leg, caller, first, number, dialed, ring_seconds)
        await self.event("QueueCallerJoin", leg, Queue=queue, Position=1, Count=1)
        answered_by: Channel | None = None
        started = time.time()
        for iface in agents:
            _, a1, a2, dest = await self._agent_legs(iface, caller, number, dialed)
            await self.event("AgentCalled", leg, Queue=queue, Interface=iface, MemberName=iface, **dest)
            await self.event("DialBegin", leg, DialString=iface, **dest)
            a1.state = "Ringing"
            await self.event("Newstate", a1)
            await self._pause(ring_seconds)
            if answer == iface:
                a1.state = "Up"
                if a2:
                    a2.state = "Up"
                await self.event("Newstate", a1)
                await self.event("DialEnd", leg, DialStatus="ANSWER", **dest)
                await self.event("QueueCallerLeave", leg, Queue=queue, Position=1, Count=0)
                await self.event(
                    "AgentConnect",
                    leg,
                    Queue=queue,
                    Interface=iface,
                    MemberName=iface,
                    HoldTime=int(time.time() - started),
                    RingTime=int(ring_seconds),
                    **dest,
                )
                bridge = secrets.token_hex(8)
                a1.bridge = leg.bridge = bridge
                await self.event("BridgeEnter", a1, BridgeUniqueid=bridge)
                await self.event("BridgeEnter", leg, BridgeUniqueid=bridge)
                answered_by = a1
                talk = self.talk_seconds if talk_seconds is None else talk_seconds
                await self._pause(talk)
                await self.event("BridgeLeave", a1, BridgeUniqueid=bridge)
                await self._hangup(a1)
                if a2:
                    await self._hangup(a2)
                await self.event("BridgeLeave", leg, BridgeUniqueid=bridge)
                await self._hangup(caller)
                # the queue reports the agent's completion after the caller's hangup
                await self.event(
                    "AgentComplete",
                    leg,
                    Queue=queue,
                    Interface=iface,
                    MemberName=iface,
                    HoldTime=int(ring_seconds),
                    TalkTime=int(talk),
                    Reason="agent",
                    **dest,
                )
                await self._hangup(leg)
                if record:
                    await self._finish_recording(leg, talk)
                break
            await self.event(
                "AgentRingNoAnswer",
                leg,
                Queue=queue,
                Interface=iface,
                MemberName=iface,
                RingTime=int(ring_seconds),
                **dest,
            )
            await self.event("DialEnd", leg, DialStatus="NOANSWER", **dest)
            await self._hangup(a1, cause=0)
            if a2:
                await self._hangup(a2, cause=0)
        if answered_by is None:
            await self._hangup(caller)
            await self.event(
                "QueueCallerAbandon",
                leg,
                Queue=queue,
                Position=1,
                OriginalPosition=1,
                HoldTime=int(time.time() - started),
            )
            await self.event("QueueCallerLeave", leg, Queue=queue, Position=1, Count=0)
            await self._hangup(leg)
            if record:
                await self._finish_recording(leg, 0)
        return caller.linkedid

    async def _agent_legs(
        self, iface: str, caller: Channel, number: str, dialed: str
    ) -> tuple[str, Channel, Channel | None, dict[str, str]]:
        """An agent interface's ringing channels (a Local pair, or one PJSIP channel) and the Dest*
        headers that name it: (interface without /n, leg 1, leg 2 or None, headers)."""
        base = iface[:-2] if iface.endswith("/n") else iface
        local = base.startswith("Local/")
        a1_name, a2_name = self._chan_name(base, local)
        a1 = self._new(a1_name, caller.linkedid, number, dialed, "agents")
        await self._newchannel(a1, number)
        a2 = None
        if local:
            a2 = self._new(a2_name, caller.linkedid, number, base.split("@")[0][6:], "agents")
            a2.state = "Ring"
            await self._newchannel(a2, number)
        dest = {
            "DestChannel": a1.name,
            "DestUniqueid": a1.uniqueid,
            "DestLinkedid": caller.linkedid,
            "DestCallerIDNum": number,
            "DestExten": dialed,
            "DestContext": "agents",
        }
        return base, a1, a2, dest

    async def _dial_unanswered(
        self, leg: Channel, caller: Channel, iface: str, number: str, dialed: str, ring_seconds: float
    ) -> None:
        """The dialplan's Dial() of one interface (no queue): it rings and is not answered."""
        base, a1, a2, dest = await self._agent_legs(iface, caller, number, dialed)
        await self.event("DialBegin", leg, DialString=base, **dest)
        a1.state = "Ringing"
        await self.event("Newstate", a1)
        await self._pause(ring_seconds)
        await self.event("DialEnd", leg, DialStatus="NOANSWER", **dest)
        await self._hangup(a1, cause=0)
        if a2:
            await self._hangup(a2, cause=0)

    async def originate_call(self, a: Action) -> None:
        """Answer an Originate: ring the agent's leg, then dial the customer through the trunk."""
        iface = a.get("Channel") or ""
        number = a.get("Exten") or ""
        aid = a.action_id
        local = iface.startswith("Local/")
        n1, _ = self._chan_name(iface.split("/n")[0] if local else iface, local)
        agent_number = iface.split("/")[-1].split("@")[0].removeprefix("click")
        shown = (a.get("CallerID") or "").rpartition("<")[2].rstrip(">").strip()
        if shown:  # Asterisk gives the originated channel the CallerID of the Originate
            agent_number = shown
        # Originate's ChannelId names the originated channel (and so the call), as Asterisk does
        agent = self._new(n1, None, agent_number, "s", "from-internal", a.get("ChannelId"))
        await self._newchannel(agent, agent_number)
        dest = {
            "DestChannel": agent.name,
            "DestUniqueid": agent.uniqueid,
            "DestLinkedid": agent.linkedid,
            "DestCallerIDNum": agent_number,
            "DestExten": "s",
            "DestContext": "from-internal",
        }
        await self.event("DialBegin", None, DialString=iface, **dest)
        agent.state = "Ringing"
        await self.event("Newstate", agent)
        await self._pause(0.5)
        if self.agent_outcomes.get(iface, "answer") != "answer":  # the rep's own phone is not answered
            await self.event("DialEnd", None, DialStatus="NOANSWER", **dest)
            await self._hangup(agent, 19)
            await self.broadcast(
                encode_message(
                    "Event",
                    "OriginateResponse",
                    {
                        "Privilege": "call,all",
                        "ActionID": aid,
                        "Response": "Failure",
                        "Channel": iface,
                        "Context": a.get("Context"),
                        "Exten": number,
                        "Reason": 3,
                        "Uniqueid": "<null>",
                    },
                )
            )
            return
        agent.state = "Up"
        await self.event("Newstate", agent)
        await self.event("DialEnd", None, DialStatus="ANSWER", **dest)
        await self.broadcast(
            encode_message(
                "Event",
                "OriginateResponse",
                {
                    "Privilege": "call,all",
                    "ActionID": aid,
                    "Response": "Success",
                    "Channel": agent.name,
                    "Context": a.get("Context"),
                    "Exten": number,
                    "Reason": 4,
                    "Uniqueid": agent.uniqueid,
                    "CallerIDNum": agent_number,
                },
            )
        )
        agent.context, agent.exten = "outbound", number
        await self._start_recording(agent)
        trunk_name, _ = self._chan_name("PJSIP/trunk", False)
        trunk = self._new(trunk_name, agent.linkedid, number, number, "from-trunk")
        await self._newchannel(trunk, number)
        tdest = {
            "DestChannel": trunk.name,
            "DestUniqueid": trunk.uniqueid,
            "DestLinkedid": agent.linkedid,
            "DestCallerIDNum": number,
            "DestExten": number,
            "DestContext": "from-trunk",
        }
        await self.event("DialBegin", agent, DialString=f"{number}@trunk", **tdest)
        trunk.state = "Ringing"
        await self.event("Newstate", trunk)
        await self._pause(1.0)
        outcome = self.outcomes.get(number) or (self.outcome_for(number) if self.outcome_for else "answer")
        if outcome == "answer":
            trunk.state = "Up"
            await self.event("Newstate", trunk)
            await self.event("DialEnd", agent, DialStatus="ANSWER", **tdest)
            bridge = secrets.token_hex(8)
            await self.event("BridgeEnter", trunk, BridgeUniqueid=bridge)
            await self.event("BridgeEnter", agent, BridgeUniqueid=bridge)
            await self._pause(self.talk_seconds)
            await self.event("BridgeLeave", agent, BridgeUniqueid=bridge)
            await self._hangup(agent)
            await self.event("BridgeLeave", trunk, BridgeUniqueid=bridge)
            await self._hangup(trunk)
            await self._finish_recording(agent, self.talk_seconds)
        else:
            status, cause = ("BUSY", 17) if outcome == "busy" else ("NOANSWER", 19)
            await self.event("DialEnd", agent, DialStatus=status, **tdest)
            await self._hangup(trunk, cause)
            await self._hangup(agent, cause)
            await self._finish_recording(agent, 0)
