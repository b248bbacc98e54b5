"""Several `python -m switchboard serve` processes on loopback sharing one store (tests and bench/).

Each instance gets its own port, a TOML file written here and a log file; they share the store URL,
the PBX and anything else the caller puts in `extra` (TOML text appended to each instance's file).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


@dataclass
class Instance:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Instances:
    """Start, watch and kill instances; `async with` stops whatever is left."""

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

    def _config(self, port: int) -> str:
        lines = [
            "[server]",
            'host = "127.0.0.1"',
            f"port = {port}",
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

    def start(self, name: str, *, port: int | None = None) -> Instance:
        """Start one instance (not yet waited for: see `wait_ready`)."""
        port = port or _free_port()
        work = self.base / name
        work.mkdir(parents=True, exist_ok=True)
        (work / "switchboard.toml").write_text(self._config(port))
        log = work / "log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env["PYTHONPATH"] = str(REPO)
        env["SWITCHBOARD_RECORDINGS_STORAGE_DIR"] = str(work / "recordings")
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "switchboard", "serve", "--config", str(work / "switchboard.toml")],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        inst = Instance(name, port, proc, log)
        self.running[name] = inst
        return inst

    async def health(self, name: str) -> dict[str, Any] | None:
        """The instance's /healthz, or None while it does not answer."""
        inst = self.running[name]
        try:
            async with self.http.get(f"{inst.url}/healthz") as resp:
                body: dict[str, Any] = await resp.json()
                return body
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def wait_ready(self, name: str, timeout: float = 60) -> dict[str, Any]:
        """Until the instance answers /healthz; its answer."""
        inst = self.running[name]
        async with asyncio.timeout(timeout):
            while True:
                if inst.proc.poll() is not None:
                    raise AssertionError(f"{name} exited ({inst.proc.returncode}):\n{inst.tail()}")
                body = await self.health(name)
                if body is not None:
                    return body
                await asyncio.sleep(0.1)

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

    def kill(self, name: str) -> None:
        """SIGKILL: no cleanup, the database sessions end with the process."""
        inst = self.running.pop(name)
        inst.proc.send_signal(signal.SIGKILL)
        inst.proc.wait(10)

    async def stop_all(self) -> None:
        for inst in self.running.values():
            if inst.proc.poll() is None:
                inst.proc.send_signal(signal.SIGTERM)
        for inst in self.running.values():
            try:
                await asyncio.to_thread(inst.proc.wait, 30)
            except subprocess.TimeoutExpired:
                inst.proc.kill()
                inst.proc.wait(10)
        self.running.clear()
