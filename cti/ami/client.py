"""A thin asyncio AMI client: connect, log in, correlate responses, keep alive, reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import random
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from crm_link.clock import Clock, system_clock
from cti.ami.protocol import AmiParser, Event, Response, encode_action

log = logging.getLogger("cti.ami")

RESYNC = "SwitchboardResync"  # synthetic event: events were dropped, rebuild state from the PBX


class AmiError(Exception):
    """Root of every AMI error."""


class AmiConnectionError(AmiError, ConnectionError):
    """Not connected, or the connection was lost while waiting."""


class AmiAuthError(AmiError, PermissionError):
    """The PBX refused our username or secret."""


class AmiTimeout(AmiError, TimeoutError):
    """No answer in time."""


class AmiActionError(AmiError):
    """The PBX answered `Response: Error`."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.message or "action failed")
        self.response = response


class AmiClient:
    """One AMI session that stays up: events go to `events`, a bounded queue.

    Asterisk shares one event queue across AMI sessions and drops slow readers, so the socket is
    read at once and events queued here. If the queue is full, events are dropped and counted, and
    a synthetic `SwitchboardResync` event is queued as soon as there is room, telling the consumer
    to rebuild its state from CoreShowChannels (as after a reconnect) rather than trust a gap.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        auth: str = "md5",
        ping_interval: float = 20.0,
        ping_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        action_timeout: float = 10.0,
        queue_size: int = 10_000,
        backoff_min: float = 0.5,
        backoff_max: float = 30.0,
        clock: Clock = system_clock,
    ) -> None:
        self.host, self.port = host, port
        self.username, self._secret = username, secret
        self.auth = auth
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.connect_timeout, self.action_timeout = connect_timeout, action_timeout
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.events: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
        self.state = "down"
        self.connects = 0
        self.dropped_events = 0
        self.last_error: str | None = None
        self.clock = clock
        # when an established session was lost (the PBX crashed or the network failed); the
        # consumer takes it on the next resync as the end of calls that vanished meanwhile
        self.lost_at: datetime | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Response]] = {}
        self._lists: dict[str, tuple[list[Event], asyncio.Future[list[Event]]]] = {}
        self._originates: dict[str, asyncio.Future[Event]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._need_resync = False
        self._closing = False

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin connecting (and reconnecting) in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="ami-client")

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Until logged in; AmiTimeout after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise AmiTimeout(f"not connected to AMI at {self.host}:{self.port}: {self.last_error}") from None

    async def close(self) -> None:
        """Log off if connected, stop reconnecting, fail whatever waits."""
        self._closing = True
        if self._writer is not None and self._connected.is_set():
            with contextlib.suppress(AmiError, OSError):
                await self.send_action("Logoff", timeout=1.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._abort("client closed")

    async def run(self) -> None:
        """Connect, and reconnect with backoff, until closed (for a caller that owns the task
        itself instead of calling `start`)."""
        delay = self.backoff_min
        while not self._closing:
            try:
                await self._session()
                delay = self.backoff_min
            except asyncio.CancelledError:
                raise
            except AmiAuthError as exc:
                self.last_error = str(exc)
                log.error("event=ami_auth_failed host=%s user=%s", self.host, self.username)
            except (OSError, AmiError, TimeoutError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "event=ami_disconnected host=%s port=%d error=%r", self.host, self.port, self.last_error
                )
            self.state = "down"
            if self._closing:
                return
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(self.backoff_max, delay * 2)

    async def _session(self) -> None:
        self.state = "connecting"
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.connect_timeout
        )
        self._writer = writer
        parser = AmiParser()
        read_task = asyncio.create_task(self._read(reader, parser), name="ami-read")
        ping_task: asyncio.Task[None] | None = None
        try:
            await self._login()
            self.connects += 1
            self.state = "up"
            self.last_error = None
            self._connected.set()
            log.info("event=ami_connected host=%s port=%d banner=%r", self.host, self.port, parser.banner)
            ping_task = asyncio.create_task(self._keepalive(), name="ami-ping")
            await read_task
        finally:
            if self._connected.is_set() and not self._closing:
                self.lost_at = self.clock()
            self._connected.clear()
            for task in (ping_task, read_task):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._writer = None
            self._abort("connection lost")

    async def _login(self) -> None:
        if self.auth == "md5":
            challenge = await self.send_action("Challenge", {"AuthType": "MD5"}, check=False)
            if not challenge.ok or not challenge.get("Challenge"):
                raise AmiAuthError(f"MD5 challenge refused: {challenge.message}")
            key = hashlib.md5((challenge.get("Challenge", "") + self._secret).encode()).hexdigest()
            resp = await self.send_action(
                "Login", {"AuthType": "MD5", "Username": self.username, "Key": key}, check=False
            )
        else:
            resp = await self.send_action(
                "Login", {"Username": self.username, "Secret": self._secret}, check=False
            )
        if not resp.ok:
            raise AmiAuthError(resp.message or "authentication failed")

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                await self.send_action("Ping", timeout=self.ping_timeout)
            except AmiTimeout:
                log.warning("event=ami_ping_timeout host=%s; closing the half-open connection", self.host)
                if self._writer is not None:
                    self._writer.transport.abort()
                return

    # reading ---------------------------------------------------------------------------------

    async def _read(self, reader: asyncio.StreamReader, parser: AmiParser) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                raise AmiConnectionError("the PBX closed the connection")
            for msg in parser.feed(data):
                if isinstance(msg, Response):
                    fut = self._pending.pop(msg.action_id or "", None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                elif isinstance(msg, Event):
                    self._route(msg)

    def _route(self, ev: Event) -> None:
        aid = ev.action_id
        if aid:
            if aid in self._lists:
                items, fut = self._lists[aid]
                if ev.name.endswith("Complete"):
                    del self._lists[aid]
                    if not fut.done():
                        fut.set_result(items)
                else:
                    items.append(ev)
                return
            if aid in self._originates and ev.name == "OriginateResponse":
                fut2 = self._originates.pop(aid)
                if not fut2.done():
                    fut2.set_result(ev)
                return
        self._enqueue(ev)

    def _enqueue(self, ev: Event) -> None:
        if self._need_resync:
            if self.events.full():
                self.dropped_events += 1
                return
            self.events.put_nowait(Event(RESYNC, ev.headers.__class__({"Event": RESYNC})))
            self._need_resync = False
        try:
            self.events.put_nowait(ev)
        except asyncio.QueueFull:
            self.dropped_events += 1
            self._need_resync = True
            if self.dropped_events % 1000 == 1:
                log.warning("event=ami_events_dropped total=%d", self.dropped_events)

    def _abort(self, reason: str) -> None:
        err = AmiConnectionError(reason)
        for fut in (
            list(self._pending.values())
            + [f for _, f in self._lists.values()]
            + list(self._originates.values())
        ):
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()
        self._lists.clear()
        self._originates.clear()

    # actions ---------------------------------------------------------------------------------

    def _next_id(self) -> str:
        return f"sb-{next(self._ids)}"

    async def _write(self, data: bytes) -> None:
        if self._writer is None:
            raise AmiConnectionError("not connected")
        self._writer.write(data)
        await self._writer.drain()

    async def send_action(
        self,
        name: str,
        headers: Mapping[str, Any] | None = None,
        *,
        variables: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> Response:
        """Send an action and wait for its response (AmiActionError on `Response: Error` if `check`)."""
        aid = self._next_id()
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[aid] = fut
        try:
            await self._write(encode_action(name, aid, headers, variables))
            resp = await asyncio.wait_for(fut, timeout or self.action_timeout)
        except TimeoutError:
            raise AmiTimeout(f"no response to {name} in {timeout or self.action_timeout} s") from None
        finally:
            self._pending.pop(aid, None)
        if check and resp.status == "Error":
            raise AmiActionError(resp)
        return resp

    async def send_list_action(
        self, name: str, headers: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> tuple[Response, list[Event]]:
        """An action answered by an EventList: the response and the events up to `...Complete`."""
        aid = self._next_id()
        loop = asyncio.get_running_loop()
        resp_fut: asyncio.Future[Response] = loop.create_future()
        list_fut: asyncio.Future[list[Event]] = loop.create_future()
        self._pending[aid] = resp_fut
        self._lists[aid] = ([], list_fut)
        try:
            await self._write(encode_action(name, aid, headers))
            resp = await asyncio.wait_for(resp_fut, timeout or self.action_timeout)
            if resp.status == "Error":
                raise AmiActionError(resp)
            items = await asyncio.wait_for(list_fut, timeout or self.action_timeout)
        except TimeoutError:
            raise AmiTimeout(f"no complete answer to {name}") from None
        finally:
            self._pending.pop(aid, None)
            self._lists.pop(aid, None)
        return resp, items

    async def originate(
        self,
        channel: str,
        *,
        context: str,
        exten: str,
        priority: int = 1,
        caller_id: str | None = None,
        timeout_ms: int = 30_000,
        variables: Mapping[str, Any] | None = None,
        action_id: str | None = None,
        wait: float = 90.0,
        channel_id: str | None = None,
    ) -> Event:
        """Originate asynchronously; returns the OriginateResponse (Response Success/Failure, Reason).

        `channel_id` becomes the Uniqueid of the originated channel, and so the Linkedid of the call
        it starts: the call's id is known before the PBX answers.
        """
        aid = action_id or self._next_id()
        loop = asyncio.get_running_loop()
        resp_fut: asyncio.Future[Response] = loop.create_future()
        done: asyncio.Future[Event] = loop.create_future()
        self._pending[aid] = resp_fut
        self._originates[aid] = done
        headers = {
            "Channel": channel,
            "Context": context,
            "Exten": exten,
            "Priority": priority,
            "CallerID": caller_id,
            "Timeout": timeout_ms,
            "Async": "true",
            "ChannelId": channel_id,
        }
        try:
            await self._write(encode_action("Originate", aid, headers, variables))
            resp = await asyncio.wait_for(resp_fut, self.action_timeout)
            if resp.status == "Error":
                raise AmiActionError(resp)
            return await asyncio.wait_for(done, wait)
        except TimeoutError:
            raise AmiTimeout(f"no OriginateResponse for {channel} → {exten}") from None
        finally:
            self._pending.pop(aid, None)
            self._originates.pop(aid, None)
