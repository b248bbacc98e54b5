"""`switchboard import contacts` reads a consent-to-texts column (run as a real subprocess)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.test_cli import _csv, run


def _consent(tmp_path: Path) -> dict[str, tuple[str | None, int]]:
    db = sqlite3.connect(tmp_path / "cli.db")
    rows = db.execute("SELECT first_name, sms_consent_source, sms_opt_out FROM contacts").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_import_reads_consent_columns_and_names_the_line_of_a_bad_value(tmp_path: Path) -> None:
    run(tmp_path, "init", "--admin-password", "pw-long-enough")
    f = _csv(
        tmp_path,
        "First Name,Mobile,Text OK\n"
        "Ann,312-555-0140,yes\n"
        "Bob,312-555-0141,0\n"
        "Cy,312-555-0142,TRUE\n"
        "Di,312-555-0143,maybe\n"
        "Ed,312-555-0144,\n",
    )
    proc = run(tmp_path, "import", "contacts", str(f), check=1)
    assert """line 5, column "Text OK": 'maybe' is not yes/no, 1/0 or true/false""" in proc.stderr
    assert "imported 4 of 5 rows" in proc.stdout
    assert _consent(tmp_path) == {
        "Ann": ("import", 0),
        "Bob": (None, 0),
        "Cy": ("import", 0),
        "Ed": (None, 0),
    }

    # "sms_consent" is read too; "no" withdraws; a customer who texted STOP is not re-subscribed
    db = sqlite3.connect(tmp_path / "cli.db")
    db.execute(
        "UPDATE contacts SET sms_opt_out = 1, sms_consent_at = NULL, sms_consent_source = NULL WHERE first_name = 'Ed'"
    )
    db.commit()
    f = _csv(
        tmp_path,
        "mobile,sms_consent\n312-555-0140,false\n312-555-0141,1\n312-555-0144,yes\n",
        "again.csv",
    )
    proc = run(tmp_path, "import", "contacts", str(f))
    assert "(0 created, 3 updated)" in proc.stdout
    assert _consent(tmp_path) == {
        "Ann": (None, 0),
        "Bob": ("import", 0),
        "Cy": ("import", 0),
        "Ed": (None, 1),
    }

    # opted out and consenting in one row contradicts itself: the row is refused, with its line
    f = _csv(tmp_path, "mobile,no_sms,text_ok\n312-555-0145,yes,yes\n", "both.csv")
    proc = run(tmp_path, "import", "contacts", str(f), check=1)
    assert "line 2: sms_consent: cannot be given while sms_opt_out is true" in proc.stderr
