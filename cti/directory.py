"""Which user an interface (PJSIP/1001, Local/agent1@agents/n, client:jsmith) belongs to."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from crm_link.models import User
from crm_link.store import Store
from cti.interfaces import dial_interface, normalize_interface

log = logging.getLogger(__name__)


class InterfaceDirectory:
    """Interface → user, from settings (`[interfaces]`) and the users' extensions and interfaces.

    Rules, in order: an interface listed in settings or on a user; `client:NAME` (Twilio Client) is
    user NAME; `TECH/EXT` is the user whose extension is EXT. Reloaded from the store at once when
    users changed in this process or on a miss (an admin may just have added the user); once older
    than `ttl` seconds it keeps answering while one reload runs beside it, so no call event waits
    for a reload of every user (a screen-pop did, every `ttl` seconds).
    """

    def __init__(
        self,
        store: Store,
        configured: dict[str, str],
        *,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        agent_dial: str = "PJSIP/{extension}",
        dial_interfaces: dict[str, str] | None = None,
    ) -> None:
        self._store = store
        self._configured = dict(configured)
        self.agent_dial = agent_dial
        self._dial_overrides = dict(dial_interfaces or {})
        self._ttl = ttl
        self._clock = clock
        self._loaded_at = -1e18
        self._version = -1
        self._by_interface: dict[str, User] = {}
        self._by_extension: dict[str, User] = {}
        self._by_username: dict[str, User] = {}
        self._refreshing: asyncio.Task[None] | None = None

    def stale(self) -> bool:
        """Users changed in this process, or the cache is older than its TTL."""
        return self._version != self._store.users.version or self._clock() - self._loaded_at > self._ttl

    async def ensure_fresh(self) -> None:
        """Reload now if never loaded or users changed in this process; if only older than the TTL,
        start a reload in the background and answer from what is loaded meanwhile."""
        if self._loaded_at == -1e18 or self._version != self._store.users.version:
            await self.reload()
        elif self._clock() - self._loaded_at > self._ttl:
            if self._refreshing is None or self._refreshing.done():
                self._refreshing = asyncio.create_task(self._refresh(), name="directory-refresh")

    async def _refresh(self) -> None:
        try:
            await self.reload()
        except Exception:
            log.exception("event=directory_refresh_failed")

    async def reload(self) -> None:
        self._version = self._store.users.version
        users = [u for u in await self._store.users.list() if u.active]
        self._by_username = {u.username: u for u in users}
        self._by_extension = {u.extension: u for u in users if u.extension}
        self._by_interface = {}
        for u in users:
            for iface in u.interfaces:
                self._by_interface[normalize_interface(iface) or iface] = u
        for iface, username in self._configured.items():
            if username in self._by_username:
                self._by_interface[normalize_interface(iface) or iface] = self._by_username[username]
        for u in users:  # the interface rung for a user is theirs, whatever else is configured
            rung = self.dial_interface_of(u)
            if rung:
                self._by_interface.setdefault(normalize_interface(rung) or rung, u)
        self._loaded_at = self._clock()

    def _find(self, interface: str) -> User | None:
        interface = normalize_interface(interface) or interface
        if interface in self._by_interface:
            return self._by_interface[interface]
        if interface.startswith("client:"):
            return self._by_username.get(interface[7:])
        if "/" in interface:
            resource = interface.split("/", 1)[1]
            return self._by_extension.get(resource)
        return self._by_extension.get(interface)

    async def user_for(self, interface: str | None) -> User | None:
        """The active user behind an interface, or None."""
        if not interface:
            return None
        await self.ensure_fresh()
        user = self._find(interface)
        if user is None and self._clock() - self._loaded_at > 1.0:
            await self.reload()
            user = self._find(interface)
        return user

    def is_agent(self, interface: str | None) -> bool:
        """Whether an interface belongs to a user, from the last load (no I/O: the tracker asks often)."""
        return interface is not None and interface != "" and self._find(interface) is not None

    def dial_interface_of(self, user: User | None, extension: str | None = None) -> str | None:
        """The one interface to ring for a user (click-to-call, progressive dialing).

        Their `[dial_interfaces]` entry if any, else `[asterisk] agent_dial` filled with their
        extension and username; for an extension nobody has, the template filled with it. None when
        the template needs what is missing (a user without an extension, say).
        """
        if user is not None:
            return dial_interface(
                self.agent_dial,
                extension=user.extension,
                username=user.username,
                override=self._dial_overrides.get(user.username),
            )
        return dial_interface(self.agent_dial, extension=extension, username=None)

    async def interfaces_of(self, user: User) -> list[str]:
        """Every interface that reaches this user (for originating their leg)."""
        if self._clock() - self._loaded_at > self._ttl:
            await self.reload()
        out = [i for i, u in self._by_interface.items() if u.id == user.id]
        return out
