"""`switchboard migrate`: applies pending migrations to the configured store and says what it did."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crm_link.db import load_migrations
from tests.conftest import REPO


def migrate(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["SWITCHBOARD_STORE_URL"] = url
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "switchboard", "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_applies_then_finds_nothing_to_do(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    first = migrate(tmp_path, url)
    assert first.returncode == 0, first.stderr
    shipped = load_migrations()
    assert f"applied {len(shipped)} migration(s): 0001_core, 0002_recordings" in first.stdout
    newest = shipped[-1]
    assert f"{newest.version:04d}_{newest.name}" in first.stdout
    with sqlite3.connect(tmp_path / "m.db") as conn:
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == newest.version
    again = migrate(tmp_path, url)
    assert again.returncode == 0, again.stderr
    assert "is up to date" in again.stdout and "applied" not in again.stdout


def test_unreachable_database_is_one_line_naming_it_without_the_password(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = migrate(tmp_path, f"postgresql://sb:hunter2@127.0.0.1:{port}/crm")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"postgresql://sb:***@127.0.0.1:{port}/crm" in lines[0]
    assert "refused" in lines[0].lower()
    assert "hunter2" not in proc.stderr + proc.stdout


def test_a_url_of_no_known_kind_exits_2_naming_the_setting(tmp_path: Path) -> None:
    proc = migrate(tmp_path, "mysql://crm@127.0.0.1/crm")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "switchboard: error: setting store.url: must be sqlite:///PATH or postgresql://USER@HOST/DB"
    )


@pytest.mark.skipif(
    os.environ.get("SWITCHBOARD_TEST_STORE") != "postgres", reason="needs SWITCHBOARD_TEST_STORE=postgres"
)
def test_migrate_on_postgresql(tmp_path: Path, pg_databases: Any) -> None:
    url = pg_databases.create(empty=True)
    try:
        first = migrate(tmp_path, url)
        assert first.returncode == 0, first.stderr
        assert (
            f"applied {len(load_migrations())} migration(s)" in first.stdout and "(postgres)" in first.stdout
        )
        again = migrate(tmp_path, url)
        assert "is up to date" in again.stdout
        missing = migrate(tmp_path, url + "_missing")
        assert missing.returncode != 0
        assert f'database "{url.rsplit("/", 1)[1]}_missing" does not exist' in missing.stderr
    finally:
        pg_databases.drop(url)
