"""The `switchboard` command run as a real subprocess against a real store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def run(tmp_path: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["SWITCHBOARD_STORE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "switchboard", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


def test_init_user_token(tmp_path: Path) -> None:
    out = run(tmp_path, "init").stdout
    assert "admin password:" in out
    assert "already exists" in run(tmp_path, "init").stdout  # safe to run twice
    run(
        tmp_path,
        "user",
        "add",
        "jsmith",
        "--role",
        "rep",
        "--extension",
        "1001",
        "--password",
        "pw-long-enough",
    )
    token = run(tmp_path, "token", "create", "jsmith").stdout
    assert token.startswith("sb_") and token.count("\n") == 1
    dup = run(tmp_path, "user", "add", "jsmith", "--role", "rep", check=2)
    assert dup.stderr.strip() == "switchboard: error: username: 'jsmith' already exists"
    bad = run(tmp_path, "user", "add", "x", "--role", "boss", check=2)
    assert "--role" in bad.stderr
    missing = run(tmp_path, "token", "create", "ghost", check=2)
    assert "no user named 'ghost'" in missing.stderr


def test_bad_config_exit_2_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "sb.toml"
    cfg.write_text("[server]\nport = 'eighty'\n")
    proc = run(tmp_path, "init", "--config", str(cfg), check=2)
    assert proc.stderr.strip().endswith("setting server.port: expected an integer, got 'eighty'")
    assert proc.stderr.count("\n") == 1


def _csv(tmp_path: Path, text: str | bytes, name: str = "c.csv") -> Path:
    p = tmp_path / name
    if isinstance(text, str):
        p.write_text(text, encoding="utf-8")
    else:
        p.write_bytes(text)
    return p


def test_import_reports_row_errors_and_writes_only_good_rows(tmp_path: Path) -> None:
    run(tmp_path, "init", "--admin-password", "pw-long-enough")
    run(tmp_path, "user", "add", "jsmith", "--role", "rep", "--password", "pw-long-enough")
    f = _csv(
        tmp_path,
        "First Name,Last Name,Mobile,E-mail,Salesperson,Vehicle,Purchase Date,DNC\n"
        "Jane,Doe,(555) 123-4567,jane@example.com,jsmith,2024 Civic,2026-11-18,no\n"
        "Bad,Phone,12,bad@example.com,,,,\n"
        "No,Owner,212-736-5000,no@example.com,ghost,,,\n"
        "Weird,Flag,212-736-5001,,,,,perhaps\n"
        "Jane,Doe-Smith,555.123.4567,,,,,yes\n",
    )
    dry = run(tmp_path, "import", "contacts", str(f), "--dry-run", check=1)
    assert "would import 2 of 5 rows; 3 rows with errors" in dry.stdout
    proc = run(tmp_path, "import", "contacts", str(f), check=1)
    assert """line 3, column "Mobile": '12' is too short""" in proc.stderr
    assert """line 4, column "Salesperson": no user named 'ghost'""" in proc.stderr
    assert """line 5, column "DNC": 'perhaps' is not yes/no""" in proc.stderr
    assert "imported 2 of 5 rows (1 created, 1 updated); 3 rows with errors" in proc.stdout
    assert "import [" in proc.stderr  # the progress bar
    # the last row matched Jane by phone and updated her
    again = run(
        tmp_path, "import", "contacts", str(_csv(tmp_path, "phone,last_name\n5551234567,Doe\n", "d.csv"))
    )
    assert "(0 created, 1 updated)" in again.stdout


def test_import_maps_customer_numbers_keeps_extensions_and_names_every_error(tmp_path: Path) -> None:
    """`Customer #`-style columns are the external id; "x12" / "ext. 12" are kept as the extension;
    each bad cell of a row is named with the spreadsheet's line and column."""
    import sqlite3

    run(tmp_path, "init", "--admin-password", "pw-long-enough")
    for n, header in enumerate(("Customer #", "Cust ID", "DMS ID", "Customer No.")):
        f = _csv(
            tmp_path,
            f"First Name,{header},Mobile,Work Phone\n"
            f"Jane,C-{n},(312) 555-014{n},(312) 555-019{n} ext. 1{n}\n",
            "ids.csv",
        )
        run(tmp_path, "import", "contacts", str(f))
    f = _csv(
        tmp_path,
        "First Name,Customer #,Mobile,Work Phone,E-mail,Salesperson,DNC\n"
        '"Ann\nMarie",C-9,312-555-0150 x7,,ann@example.com,,\n'
        "Bad,C-10,12,555-01 x3,not-an-email,ghost,perhaps\n",
        "errors.csv",
    )
    proc = run(tmp_path, "import", "contacts", str(f), check=1)
    lines = [x for x in proc.stderr.splitlines() if x.startswith("line ")]
    assert lines == [
        """line 2, column "First Name": contains control characters""",
        """line 4, column "E-mail": 'not-an-email' is not an email address""",
        """line 4, column "Salesperson": no user named 'ghost'""",
        """line 4, column "DNC": 'perhaps' is not yes/no""",
        """line 4, column "Mobile": '12' is too short to be a phone number""",
        """line 4, column "Work Phone": '555-01 x3' is too short to be a phone number""",
    ], proc.stderr
    assert "imported 0 of 2 rows" in proc.stdout
    db = sqlite3.connect(tmp_path / "cli.db")
    rows = db.execute(
        "SELECT c.external_id, p.e164, p.extension FROM contacts c JOIN contact_phones p"
        " ON p.contact_id = c.id ORDER BY c.external_id, p.position"
    ).fetchall()
    db.close()
    assert rows == [
        (f"C-{n}", e164, ext)
        for n in range(4)
        for e164, ext in ((f"+1312555014{n}", None), (f"+1312555019{n}", f"1{n}"))
    ], rows


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"first_name,phone\nJos\xe9,5551234567\n", "file: line 2 is not UTF-8"),
        ("vehicle,color\nCivic,red\n", "header: no column for a name, phone or email"),
        ("", "file: is empty"),
    ],
)
def test_import_refuses_broken_files(tmp_path: Path, content: str | bytes, message: str) -> None:
    run(tmp_path, "init", "--admin-password", "pw-long-enough")
    proc = run(tmp_path, "import", "contacts", str(_csv(tmp_path, content)), check=2)
    assert message in proc.stderr


def test_import_missing_file(tmp_path: Path) -> None:
    proc = run(tmp_path, "import", "contacts", "nope.csv", check=2)
    assert "no such file" in proc.stderr


def test_recordings_reindex_is_idempotent(tmp_path: Path) -> None:
    from tests.recordings.test_recordings import make_wav

    monitor = tmp_path / "monitor"
    monitor.mkdir()
    for i in range(3):
        make_wav(monitor / f"17953462{i}.1.wav", 0.5)
    (monitor / "notes.txt").write_text("not audio")
    run(tmp_path, "init", "--admin-password", "pw-long-enough")
    first = run(tmp_path, "recordings", "reindex", str(monitor))
    assert "3 files: 3 indexed, 0 already indexed, 0 errors" in first.stdout
    assert "reindex [" in first.stderr  # the progress bar
    second = run(tmp_path, "recordings", "reindex", str(monitor))
    assert "3 files: 0 indexed, 3 already indexed, 0 errors" in second.stdout
    stored = list((tmp_path / "var" / "recordings").rglob("*.wav"))
    assert len(stored) == 3 and not any("17953462" in p.name for p in stored)
