"""The shipped deployment (docs/deploy: compose.yaml, HAProxy, systemd units and their settings) names
commands, flags, settings and routes this repository has; the systemd unit's command lines, run as
they are written, start an instance on PostgreSQL that answers /healthz.

Docker and systemd do not run here: the files are parsed and checked against the CLI's parser, the
settings loader and the access rules, and the unit's ExecStartPre/ExecStart are run by hand with the
installed paths mapped to this repository (the binary to `python -m switchboard`, /etc/switchboard/X
to the shipped file X) against a throwaway PostgreSQL cluster.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from switchboard.cli import build_parser
from switchboard.settings import _SECTIONS, Settings, _toml_name, load_settings
from switchboard.web.access import RULES
from switchboard.web.client_address import ProxyTrust
from tests.conftest import REPO, free_port

DEPLOY = REPO / "docs" / "deploy"
SYSTEMD = DEPLOY / "systemd"
BINARY = "/opt/switchboard/bin/switchboard"
ETC = "/etc/switchboard/"


def _setting_env_names() -> set[str]:
    """Every SWITCHBOARD_<SECTION>_<KEY> the settings loader reads."""
    s = Settings()
    return {
        f"SWITCHBOARD_{section.upper()}_{_toml_name(f).upper()}"
        for section in _SECTIONS
        for f in dataclasses.fields(getattr(s, section))
    }


def _check_env(env: dict[str, str], where: str) -> None:
    known = _setting_env_names()
    for name in env:
        if name.startswith("SWITCHBOARD_"):
            assert name in known, f"{where}: {name} is not a setting"


def _parse_cli(argv: list[str], where: str) -> Any:
    assert argv[0] == "switchboard", f"{where}: runs {argv[0]!r}, not switchboard"
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit as e:  # argparse's way of refusing
        raise AssertionError(f"{where}: `{shlex.join(argv)}` is not a valid switchboard command") from e


def _haproxy_servers(cfg: str) -> list[tuple[str, int]]:
    return [
        (m.group(1), int(m.group(2))) for m in re.finditer(r"^\s*server \S+ (\S+):(\d+) check", cfg, re.M)
    ]


def _haproxy_check_path(cfg: str) -> str:
    m = re.search(r"^\s*option httpchk GET (\S+)", cfg, re.M)
    assert m, "the balancer checks the instances' health"
    return m.group(1)


def _forwards_the_client(cfg: str, balancer: str, settings: Settings, where: str) -> None:
    """The balancer adds X-Forwarded-For and the instance believes it from the balancer's address."""
    assert re.search(r"^\s*option forwardfor\b", cfg, re.M), f"{where}: the balancer adds no X-Forwarded-For"
    trust = ProxyTrust(settings.server.trusted_proxies)
    address = ipaddress.ip_address(balancer)
    assert trust.trusts(address), f"{where}: [server] trusted_proxies does not name the balancer, {balancer}"
    # the browser's address is the one the balancer appended; what the browser sent is not believed
    assert trust.client(balancer, ["10.9.9.9, 198.51.100.7"]) == "198.51.100.7"


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit's sections; every key's values in order (keys like EnvironmentFile repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {line!r}"
        current.setdefault(key, []).append(value)
    return sections


def _shipped(etc_path: str, instance: str) -> Path:
    """The shipped file an installed /etc/switchboard path stands for (%i filled in)."""
    assert etc_path.startswith(ETC), f"{etc_path} is not under {ETC}"
    path = SYSTEMD / etc_path.removeprefix(ETC).replace("%i", instance)
    assert path.is_file(), f"{etc_path} is not shipped in {SYSTEMD.relative_to(REPO)}"
    return path


def test_the_compose_file_names_real_commands_settings_and_routes() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "migrate", "switchboard-a", "switchboard-b", "haproxy"} <= set(services)
    build = services["migrate"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve().is_file()
    commands = {}
    for name in ("migrate", "switchboard-a", "switchboard-b"):
        svc = services[name]
        args = _parse_cli(svc["command"], f"compose {name}")
        commands[name] = args.command
        mounts = dict(v.split(":")[:2][::-1] for v in svc["volumes"])
        config = DEPLOY / mounts[args.config]
        assert config.is_file(), f"compose {name}: mounts {config}, which is not shipped"
        env = {k: str(v) for k, v in svc["environment"].items()}
        _check_env(env, f"compose {name}")
        settings = load_settings(config, env=env)
        assert settings.store.url.startswith("postgresql://")
        assert settings.store.url.split("@")[1].split(":")[0] == "postgres"  # the compose service
        assert ":" not in settings.store.url.split("@")[0].removeprefix("postgresql://")  # no password
        assert "PGPASSWORD" in env  # libpq's: the password stays out of the file
        if name != "migrate":
            assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
            assert settings.server.host == "0.0.0.0"
            port = settings.server.port
    assert commands == {"migrate": "migrate", "switchboard-a": "serve", "switchboard-b": "serve"}
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"

    proxy = services["haproxy"]
    (mount,) = proxy["volumes"]
    cfg = (DEPLOY / mount.split(":")[0]).read_text()
    assert sorted(_haproxy_servers(cfg)) == [("switchboard-a", port), ("switchboard-b", port)]
    assert ("GET", _haproxy_check_path(cfg)) in RULES
    balancer = proxy["networks"]["default"]["ipv4_address"]
    (subnet,) = (c["subnet"] for c in compose["networks"]["default"]["ipam"]["config"])
    assert ipaddress.ip_address(balancer) in ipaddress.ip_network(subnet)
    for name in ("switchboard-a", "switchboard-b"):
        svc = services[name]
        assert "networks" not in svc  # on the default network, with the balancer
        mounts = dict(v.split(":")[:2][::-1] for v in svc["volumes"])
        env = {k: str(v) for k, v in svc["environment"].items()}
        settings = load_settings(DEPLOY / mounts[ETC + "switchboard.toml"], env=env)
        _forwards_the_client(cfg, balancer, settings, f"compose {name}")
    assert re.search(r"^\s*timeout tunnel \S+", cfg, re.M), "WebSockets need a tunnel timeout"


def test_the_systemd_units_name_real_commands_settings_and_routes() -> None:
    unit = _unit(SYSTEMD / "switchboard@.service")
    service = unit["Service"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    (start,) = service["ExecStart"]
    (pre,) = service["ExecStartPre"]
    ports = {}
    loaded: dict[str, Settings] = {}
    for instance in ("a", "b"):
        env: dict[str, str] = {}
        for name in service["EnvironmentFile"]:
            env |= _env_file(_shipped(name, instance))
        _check_env(env, f"{instance}.env")
        assert "PGPASSWORD" in env
        for line, command in ((pre, "migrate"), (start, "serve")):
            argv = shlex.split(line)
            assert argv[0] == BINARY
            args = _parse_cli(["switchboard", *argv[1:]], f"switchboard@{instance}")
            assert args.command == command
            settings = load_settings(_shipped(args.config, instance), env=env)
            assert settings.store.url.startswith("postgresql://")
            assert ":" not in settings.store.url.split("@")[0].removeprefix("postgresql://")
        ports[instance] = settings.server.port
        loaded[instance] = settings
    assert ports["a"] != ports["b"], "two instances on one host need their own ports"
    cfg = (SYSTEMD / "haproxy.cfg").read_text()
    assert sorted(_haproxy_servers(cfg)) == [("127.0.0.1", ports["a"]), ("127.0.0.1", ports["b"])]
    assert ("GET", _haproxy_check_path(cfg)) in RULES
    for instance, settings in loaded.items():
        # HAProxy on the same host reaches the instances from loopback
        _forwards_the_client(cfg, "127.0.0.1", settings, f"switchboard@{instance}")


def _by_hand(line: str, instance: str) -> list[str]:
    """A unit's command line with the installed paths mapped to this repository."""
    argv = shlex.split(line)
    assert argv[0] == BINARY
    return [sys.executable, "-m", "switchboard"] + [
        str(_shipped(a, instance)) if a.startswith(ETC) else a for a in argv[1:]
    ]


def test_the_units_command_lines_migrate_then_serve_on_postgresql(pg_server: Any, tmp_path: Path) -> None:
    url = pg_server.create(empty=True)  # a database nothing has migrated yet
    unit = _unit(SYSTEMD / "switchboard@.service")["Service"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["PYTHONPATH"] = str(REPO)
    for name in unit["EnvironmentFile"]:
        env |= _env_file(_shipped(name, "a"))
    port = free_port()
    # what differs on this machine: the database (a throwaway cluster, not db.example.com), a free
    # loopback port instead of 8081, a temp directory for recordings
    env |= {
        "SWITCHBOARD_STORE_URL": url,
        "SWITCHBOARD_SERVER_HOST": "127.0.0.1",
        "SWITCHBOARD_SERVER_PORT": str(port),
        "SWITCHBOARD_RECORDINGS_STORAGE_DIR": str(tmp_path / "recordings"),
    }
    (pre,) = unit["ExecStartPre"]
    (start,) = unit["ExecStart"]
    first = subprocess.run(_by_hand(pre, "a"), env=env, cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "0001" in first.stdout  # it applied the migrations, naming them
    again = subprocess.run(_by_hand(pre, "a"), env=env, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout

    proc = subprocess.Popen(
        _by_hand(start, "a"), env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        health = None
        for _ in range(600):
            if proc.poll() is not None:
                raise AssertionError(
                    f"serve exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    health = json.loads(resp.read())
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        assert health is not None, "no answer on /healthz"
        assert health["status"] == "ok"
        db = health["database"]
        assert db["dialect"] == "postgres" and db["state"] == "up"
        assert db["pool"]["max"] == 10  # [store] pool_size of the shipped file
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            assert json.loads(resp.read())["status"] == "ready"
        proc.send_signal(signal.SIGTERM)  # the unit's KillSignal
        _, err = proc.communicate(timeout=45)
        assert proc.returncode == 0, err
        assert "event=store_closed" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        pg_server.drop(url)
