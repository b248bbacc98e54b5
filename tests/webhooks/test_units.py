"""Pure parts: signatures, the adapter's mapping, the settings' errors, backoff."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_link.crm_events import backoff
from switchboard.settings import SettingsError, load_settings
from switchboard.webhooks.mapping import MappingError, apply, parse_mapping
from switchboard.webhooks.signing import SignatureError, sign, verify


@given(st.binary(max_size=512), st.integers(min_value=0, max_value=10**11))
def test_a_signature_verifies_and_any_change_breaks_it(body: bytes, ts: int) -> None:
    header = sign("s3cret-s3cret-s3cret", ts, body)
    assert verify("s3cret-s3cret-s3cret", header, body, now=ts) == ts
    with pytest.raises(SignatureError):
        verify("s3cret-s3cret-s3cret", header, body + b"x", now=ts)
    with pytest.raises(SignatureError):
        verify("another-secret-123", header, body, now=ts)


def test_replays_outside_the_window_and_malformed_headers_are_refused() -> None:
    header = sign("k" * 20, 1_000_000, b"{}")
    assert verify("k" * 20, header, b"{}", now=1_000_300) == 1_000_000
    with pytest.raises(SignatureError, match="outside"):
        verify("k" * 20, header, b"{}", now=1_000_301)
    for bad in ("", "t=1", "v1=" + "0" * 64, "t=x,v1=" + "0" * 64, "t=1,v1=short"):
        with pytest.raises(SignatureError):
            verify("k" * 20, bad, b"{}", now=1)
    # during a secret rotation the sender may send two v1 signatures: either one passes
    rotated = header + ",v1=" + "0" * 64
    assert verify("k" * 20, rotated, b"{}", now=1_000_000) == 1_000_000


def test_mapping_builds_their_request_and_names_what_is_wrong() -> None:
    m = parse_mapping(
        {"routes": [{"events": ["call.*"], "method": "patch", "path": "/calls/{data.touch_id}",
                     "body": {"who": "$data.agent", "lit": "plain", "list": ["$type", 3], "esc": "$$x"}}]}
    )  # fmt: skip
    event = {"id": "e1", "type": "call.answered", "data": {"touch_id": 7, "agent": "a/b"}}
    req = apply(m, event)
    assert req is not None and req.method == "PATCH" and req.path == "/calls/7"
    assert req.body == {"who": "a/b", "lit": "plain", "list": ["call.answered", 3], "esc": "$x"}
    assert apply(m, {"type": "sms.sent", "data": {}}) is None
    with pytest.raises(MappingError, match=r"data\.touch_id is empty"):
        apply(m, {"type": "call.missed", "data": {}})
    for doc, where in (
        ({}, "routes"),
        ({"routes": [{"events": [], "path": "/x", "body": {}}]}, "routes[0].events"),
        ({"routes": [{"events": ["*"], "method": "GET", "path": "/x", "body": {}}]}, "routes[0].method"),
        ({"routes": [{"events": ["*"], "path": "x", "body": {}}]}, "routes[0].path"),
        ({"routes": [{"events": ["*"], "path": "/x"}]}, "routes[0].body"),
    ):
        with pytest.raises(MappingError) as exc:
            parse_mapping(doc)
        assert exc.value.where == where


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[[crm.webhooks]]\nsecret = "0123456789abcdef"\n', "crm.webhooks[0].url"),
        ('[[crm.webhooks]]\nurl = "http://x"\n', "crm.webhooks[0].secret"),
        ('[[crm.webhooks]]\nurl = "ftp://x"\nsecret = "0123456789abcdef"\n', "crm.webhooks[0].url"),
        ('[[crm.webhooks]]\nurl = "http://x"\nsecret = "short"\n', "crm.webhooks[0].secret"),
        ('[[crm.webhooks]]\nurl = "http://x"\nsecret = "0123456789abcdef"\nevents = ["calls"]\n',
         "crm.webhooks[0].events[0]"),
        ('[[crm.webhooks]]\nurl = "http://x"\nsecret = "0123456789abcdef"\nconnections = 0\n',
         "crm.webhooks[0].connections"),
        ('[[crm.webhooks]]\nurl = "http://x"\nsecret = "0123456789abcdef"\nmapping = "nope.json"\n',
         "crm.webhooks[0].mapping"),
        ('[[crm.webhooks]]\nurl = "http://x"\nsecret = "0123456789abcdef"\ncolor = "red"\n',
         "crm.webhooks[0].color"),
        ("[crm]\nmax_attempts = 0\n", "crm.max_attempts"),
        ('[crm]\nwebhooks = "x"\n', "crm.webhooks"),
    ],
)  # fmt: skip
def test_bad_webhook_settings_name_their_key(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(toml)
    with pytest.raises(SettingsError) as exc:
        load_settings(path, env={})
    assert exc.value.key == key


def test_webhook_settings_load(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[crm]\nmax_attempts = 5\n[[crm.webhooks]]\nname = "dms"\nurl = "https://crm.example/hook"\n'
        'secret = "0123456789abcdef"\nevents = ["call.*", "contact.updated"]\n'
    )
    s = load_settings(path, env={"SWITCHBOARD_CRM_RETRY_FIRST_SECONDS": "1.5"})
    (w,) = s.crm.webhooks
    assert s.crm.max_attempts == 5 and s.crm.retry_first_seconds == 1.5
    assert w.wants("call.missed") and w.wants("contact.updated") and not w.wants("contact.created")
    assert "0123456789abcdef" not in repr(w)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(n, 2, 30).total_seconds() for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
