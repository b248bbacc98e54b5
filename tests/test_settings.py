from pathlib import Path

import pytest

from switchboard.settings import SettingsError, load_settings


def test_defaults_and_env_override() -> None:
    s = load_settings(env={"SWITCHBOARD_SERVER_PORT": "9000", "SWITCHBOARD_ASTERISK_SECRET": "s3cret"})
    assert s.server.port == 9000
    assert s.asterisk.secret.reveal() == "s3cret"
    assert "s3cret" not in repr(s)


def test_toml_file_and_env_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "sb.toml"
    cfg.write_text(
        '[server]\nport = 8081\n[smtp]\nfrom = "Sales <s@x.com>"\n'
        '[sms.channels.main]\ntype = "kannel"\nsendsms_url = "http://127.0.0.1:13013/cgi-bin/sendsms"\nrate_per_second = 5\n'
        '[interfaces]\n"PJSIP/1001" = "jsmith"\n'
    )
    s = load_settings(cfg, env={"SWITCHBOARD_SERVER_PORT": "8082"})
    assert s.server.port == 8082
    assert s.smtp.from_ == "Sales <s@x.com>"
    assert s.sms.channels["main"].type == "kannel"
    assert s.sms.channels["main"].rate_per_second == 5
    assert s.interfaces == {"PJSIP/1001": "jsmith"}


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ("[server]\nport = 'x'\n", {}, "server.port"),
        ("", {"SWITCHBOARD_SERVER_PORT": "70000"}, "server.port"),
        ("[server]\nbogus = 1\n", {}, "server.bogus"),
        ("[nonsense]\n", {}, "nonsense"),
        ("[store]\ndefault_region = 'ZZ'\n", {}, "store.default_region"),
        ("[calling_hours]\nstart = '25:00'\n", {}, "calling_hours.start"),
        ("[server]\ntime_zone = 'Mars/Base'\n", {}, "server.time_zone"),
        ("[asterisk]\nenabled = true\n", {}, "asterisk.secret"),
        ("[twilio]\nenabled = true\naccount_sid = 'XX1'\n", {}, "twilio.account_sid"),
        ("[sms.channels.a]\ntype = 'pigeon'\n", {}, "sms.channels.a.type"),
        ("", {"SWITCHBOARD_ASTERISK_ENABLED": "maybe"}, "asterisk.enabled"),
        ("[server]\ninstance_id = 'a b'\n", {}, "server.instance_id"),
        ("", {"SWITCHBOARD_SERVER_INSTANCE_ID": "-x"}, "server.instance_id"),
        ("[server]\ninstance_id = '" + "x" * 65 + "'\n", {}, "server.instance_id"),
        ("[server]\nlease_seconds = 1\n", {}, "server.lease_seconds"),
        ("[server]\ntrusted_proxies = ['10.0.0.1', 'haproxy']\n", {}, "server.trusted_proxies[1]"),
        ("[server]\ntrusted_proxies = ['10.0.0.1/24']\n", {}, "server.trusted_proxies[0]"),
        ("", {"SWITCHBOARD_SERVER_TRUSTED_PROXIES": "::1, 300.1.1.1"}, "server.trusted_proxies[1]"),
        ("[server]\ntrusted_proxies = ['::1', 8]\n", {}, "server.trusted_proxies[1]"),
        ("[server]\nlogin_attempts_per_minute = 0\n", {}, "server.login_attempts_per_minute"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, toml: str, env: dict[str, str], key: str) -> None:
    cfg = tmp_path / "sb.toml"
    cfg.write_text(toml)
    with pytest.raises(SettingsError) as exc:
        load_settings(cfg, env=env)
    assert exc.value.key == key
    assert key in str(exc.value)


def test_trusted_proxies_are_addresses_and_networks(tmp_path: Path) -> None:
    assert load_settings(env={}).server.trusted_proxies == []
    cfg = tmp_path / "sb.toml"
    cfg.write_text("[server]\ntrusted_proxies = ['10.0.0.5', '172.30.0.0/24', '::1']\n")
    assert load_settings(cfg, env={}).server.trusted_proxies == ["10.0.0.5", "172.30.0.0/24", "::1"]
    env = {"SWITCHBOARD_SERVER_TRUSTED_PROXIES": "127.0.0.1, fd00::/8"}
    assert load_settings(cfg, env=env).server.trusted_proxies == ["127.0.0.1", "fd00::/8"]


def test_missing_and_broken_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(bad, env={})


def test_instance_id_is_kept_or_made_distinct_for_each_start() -> None:
    from switchboard.settings import default_instance_id

    assert (
        load_settings(env={"SWITCHBOARD_SERVER_INSTANCE_ID": "web-2.dc1"}).server.instance_id == "web-2.dc1"
    )
    assert load_settings(env={}).server.instance_id == ""  # filled in when the app is built
    a, b = default_instance_id(), default_instance_id()
    assert a != b and a.rsplit("-", 2)[1] == b.rsplit("-", 2)[1]  # same process, two apps
