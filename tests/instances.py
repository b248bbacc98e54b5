"""Several `python -m switchboard serve` processes on loopback sharing one store: the one process
starter of the tests and bench/ (tests/cluster.py's blast helpers use it too).

`Instance` is one real subprocess (so it can be SIGKILLed) with its own port, TOML file and log
file. `Instances` starts them from one template: they share the store URL, the PBX and anything else
the caller puts in `extra` (TOML text appended to each instance's file).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp

if TYPE_CHECKING:
    from crm_link.store import Store

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def rep_and_manager(store: Store) -> tuple[str, str]:
    """The cluster tests' two users: API tokens of jsmith (a rep at extension 1001) and of maria
    (a manager)."""
    from tests.conftest import PASSWORD

    rep = await store.users.add("jsmith", role="rep", password=PASSWORD, extension="1001")
    maria = await store.users.add("maria", role="manager", password=PASSWORD)
    return await store.users.create_token(rep.id, "test"), await store.users.create_token(maria.id, "test")


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


@dataclass
class Instance:
    """One `switchboard serve` process, run with `config` from `start(cwd)`; its output goes to `log`
    (next to the config unless given)."""

    name: str
    port: int
    config: Path
    log: Path | None = None
    proc: Any = None  # asyncio.subprocess.Process once started
    # /healthz workers that must be running before `ready` returns
    wait_workers: ClassVar[tuple[str, ...]] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, cwd: Path, env: dict[str, str] | None = None) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        if self.log is None:
            self.log = self.config.with_suffix(".log")
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "switchboard", "serve", "--config", str(self.config),
                cwd=cwd, env=base | {"PYTHONPATH": str(REPO)} | (env or {}),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log is not None and self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    async def health(self, http: aiohttp.ClientSession) -> dict[str, Any] | None:
        """Its /healthz, or None while it does not answer."""
        try:
            async with http.get(f"{self.url}/healthz") as resp:
                body: dict[str, Any] = await resp.json()
                return body
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def ready(self, timeout: float = 60, http: aiohttp.ClientSession | None = None) -> dict[str, Any]:
        """Until /healthz answers (with this instance's id when the config names it so, and the
        `wait_workers` running); that answer."""
        own = http is None
        session = http or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self.proc is None or self.exited:
                        code = None if self.proc is None else self.proc.returncode
                        raise AssertionError(f"{self.name} exited ({code}):\n{self.tail()}")
                    body = await self.health(session)
                    if body is not None and self._is_ready(body):
                        return body
                    await asyncio.sleep(0.1)
        finally:
            if own:
                await session.close()

    def _is_ready(self, body: dict[str, Any]) -> bool:
        named = f'instance_id = "{self.name}"' in self.config.read_text()
        if named and (body.get("instance") or {}).get("id") != self.name:
            return False
        workers = body.get("workers") or {}
        return all((workers.get(w) or {}).get("state") == "running" for w in self.wait_workers)

    def kill(self) -> None:
        """SIGKILL: no cleanup, the database sessions end with the process."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self, timeout: float = 30) -> None:
        """SIGTERM and wait (SIGKILL after `timeout`)."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Instances:
    """Start, watch and kill instances made from one template; `async with` stops whatever is left."""

    def __init__(
        self,
        base: Path,
        store_url: str,
        *,
        pbx_port: int | None = None,
        interfaces: dict[str, str] | None = None,
        extra: str = "",
        standby_retry_seconds: float = 0.5,
    ) -> None:
        self.base = base
        self.store_url = store_url
        self.pbx_port = pbx_port
        self.interfaces = interfaces or {}
        self.extra = extra
        self.standby_retry_seconds = standby_retry_seconds
        self.running: dict[str, Instance] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Instances:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_all()
        if self._session is not None:
            await self._session.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with Instances(...)`"
        return self._session

    def _config(self, name: str, port: int) -> str:
        lines = [
            "[server]",
            'host = "127.0.0.1"',
            f"port = {port}",
            f"instance_id = {_toml_str(name)}",
            "[store]",
            f"url = {_toml_str(self.store_url)}",
        ]
        if self.pbx_port is not None:
            lines += [
                "[asterisk]",
                "enabled = true",
                'host = "127.0.0.1"',
                f"port = {self.pbx_port}",
                'username = "switchboard"',
                'secret = "crm-secret"',
                f"standby_retry_seconds = {self.standby_retry_seconds}",
                f"recordings_dir = {_toml_str(str(self.base / 'monitor'))}",
            ]
        if self.interfaces:
            lines.append("[interfaces]")
            lines += [f"{_toml_str(k)} = {_toml_str(v)}" for k, v in self.interfaces.items()]
        return "\n".join(lines) + "\n" + self.extra

    async def start(self, name: str, *, port: int | None = None) -> Instance:
        """Start one instance (not yet waited for: see `wait_ready`)."""
        port = port or free_port()
        work = self.base / name
        work.mkdir(parents=True, exist_ok=True)
        config = work / "switchboard.toml"
        config.write_text(self._config(name, port))
        inst = Instance(name, port, config, log=work / "log")
        await inst.start(work, env={"SWITCHBOARD_RECORDINGS_STORAGE_DIR": str(work / "recordings")})
        self.running[name] = inst
        return inst

    async def health(self, name: str) -> dict[str, Any] | None:
        """The instance's /healthz, or None while it does not answer."""
        return await self.running[name].health(self.http)

    async def wait_ready(self, name: str, timeout: float = 60) -> dict[str, Any]:
        """Until the instance answers /healthz; its answer."""
        return await self.running[name].ready(timeout, self.http)

    async def role(self, name: str) -> str | None:
        body = await self.health(name)
        return None if body is None else str(body["instance"]["role"])

    async def wait_holder(self, names: list[str], timeout: float = 30) -> str:
        """Until one of these instances says it holds the AMI connection; its name."""
        async with asyncio.timeout(timeout):
            while True:
                for n in names:
                    if await self.role(n) == "ami_holder":
                        return n
                await asyncio.sleep(0.05)

    async def kill(self, name: str) -> None:
        """SIGKILL, and wait until the process is gone."""
        inst = self.running.pop(name)
        inst.kill()
        assert inst.proc is not None
        await inst.proc.wait()

    async def stop_all(self) -> None:
        await asyncio.gather(*(inst.stop() for inst in self.running.values()))
        self.running.clear()
