"""One typed settings object, loaded once from TOML plus SWITCHBOARD_<SECTION>_<KEY> overrides."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from campaigns.dialer import DISPOSITIONS
from cti.interfaces import dial_template_fields
from switchboard.web.client_address import parse_network

_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def default_instance_id() -> str:
    """HOST-PID-RANDOM: distinct for every start, even of two apps in one process."""
    import secrets
    import socket

    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class SettingsError(ValueError):
    """A setting is missing or wrong; `key` names it as `section.key`."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"setting {key}: {reason}")
        self.key = key
        self.reason = reason


class Secret:
    """A string that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that needs it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _hhmm(key: str, value: str) -> str:
    parts = value.split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise SettingsError(key, f"expected HH:MM, got {value!r}")
    h, m = int(parts[0]), int(parts[1])
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise SettingsError(key, f"not a time of day: {value!r}")
    return f"{h:02d}:{m:02d}"


@dataclass(slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    session_secret: Secret = field(default_factory=lambda: Secret(""))
    cookie_secure: bool | None = None  # None: secure when public_url is https
    login_attempts_per_minute: int = 10  # failed logins a minute from one client address
    # the load balancers in front (addresses or CIDR networks): a request from one of them is judged
    # by the client address it puts in X-Forwarded-For; anyone else's X-Forwarded-For is ignored
    trusted_proxies: list[str] = field(default_factory=list)
    time_zone: str = "UTC"  # the dealership's zone, shown to staff
    # this instance among those sharing one PostgreSQL store: the owner of the outbox rows it claims.
    # Empty: HOST-PID-RANDOM, new at each start. A fixed id lets a restarted instance take back at
    # once the rows it held when it stopped (else they wait for their lease to run out).
    instance_id: str = ""
    # how long an outbox row (SMS, email) this instance claimed stays its own without renewal; a
    # live instance renews every third of it; a stopped one's rows are in doubt after it
    lease_seconds: int = 60


@dataclass(slots=True)
class StoreSettings:
    url: str = "sqlite:///switchboard.db"  # or postgresql://user:password@host:5432/db
    default_region: str = "US"
    pool_size: int = 10  # PostgreSQL: connections this instance keeps open at most

    @property
    def sqlite_path(self) -> str:
        """File path of an sqlite:/// URL (or :memory:)."""
        return self.url.removeprefix("sqlite:///") if self.url.startswith("sqlite:///") else self.url


@dataclass(slots=True)
class AsteriskSettings:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "switchboard"
    secret: Secret = field(default_factory=lambda: Secret(""))
    recordings_dir: str = "/var/spool/asterisk/monitor"
    originate_context: str = "from-internal"
    originate_timeout_s: int = 30
    auth: str = "md5"  # md5 (challenge, the secret never crosses the wire) or plain
    ping_seconds: float = 20.0
    # the interface rung for a user (click-to-call, progressive dialing) unless [dial_interfaces] names one
    agent_dial: str = "PJSIP/{extension}"
    # the secret the dialplan's owner-first lookup (GET /asterisk/owner) sends; empty = the lookup is off
    route_secret: Secret = field(default_factory=lambda: Secret(""))
    # several instances on one PostgreSQL store: one holds the AMI connection; the others try to take
    # it over this often (so within about this long after the holder dies)
    standby_retry_seconds: float = 2.0


@dataclass(slots=True)
class TwilioSettings:
    enabled: bool = False
    account_sid: str = ""
    auth_token: Secret = field(default_factory=lambda: Secret(""))
    api_base: str = ""
    caller_id: str = ""
    fallback_queue: str = "sales"
    record_calls: bool = True


@dataclass(slots=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    username: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    starttls: str = "auto"
    use_tls: bool = False
    rate_per_second: float = 20.0  # over all connections; 0 = unlimited
    connections: int = 4  # SMTP connections kept open and used at once
    rate_per_connection: float = 0.0  # messages/s on each connection; 0 = unlimited
    from_: str = field(default="Sales <sales@example.com>", metadata={"toml": "from"})


@dataclass(slots=True)
class CallingHoursSettings:
    start: str = "08:00"
    end: str = "21:00"
    holidays: list[str] = field(default_factory=list)


@dataclass(slots=True)
class DialerSettings:
    max_concurrent_calls: int = 10  # the trunk's channels: never more calls in flight
    calls_per_second: float = 1.0  # the trunk's call setup rate
    lease_seconds: int = 120  # a progressive entry's lease, renewed while its call lasts
    preview_lease_minutes: int = 15  # how long an agent may hold a previewed entry
    wrap_up_seconds: int = 30  # after a call, before the next (ends early on a disposition)
    dial_timeout_seconds: int = 30  # how long the agent's and the customer's phones ring
    tick_seconds: float = 1.0
    dispositions: list[str] = field(default_factory=lambda: list(DISPOSITIONS))
    owner_wait_minutes: int = 30  # progressive: how long an owned customer's entry waits for its owner


@dataclass(slots=True)
class DealerSettings:
    name: str = "Switchboard Motors"
    phone: str = ""
    address: str = ""
    website: str = ""


@dataclass(slots=True)
class SmsChannelSettings:
    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)
    rate_per_second: float = 1.0


@dataclass(slots=True)
class SmsSettings:
    quiet_start: str = "21:00"
    quiet_end: str = "08:00"
    max_parts: int = 10
    help_text: str = "Reply STOP to opt out."
    # true: blasts and reps' texts reach only customers whose consent to texts is recorded
    require_consent: bool = False
    channels: dict[str, SmsChannelSettings] = field(default_factory=dict)


@dataclass(slots=True)
class RecordingsSettings:
    storage_dir: str = "var/recordings"  # where Switchboard keeps its copies, under names it makes
    retention_days: int = 0  # 0 keeps recordings for ever
    poll_seconds: float = 5.0
    transcribe: bool = False  # transcripts made on this machine (pip install 'switchboard[transcripts]')
    transcribe_workers: int = 1  # processes decoding at once (each holds one CPU core while it works)


@dataclass(slots=True)
class FollowupSettings:
    unowned_pool: str = ""  # missed calls, SMS replies and cadence steps of customers nobody owns
    sweep_at: str = "06:00"  # the daily cadence sweep, in the dealership's zone
    call_at: str = "10:00"  # the local time a cadence follow-up is due on its day
    lookahead_days: int = 14  # cadence follow-ups are made this many days ahead
    catch_up_days: int = 7  # steps whose day passed up to this many days ago are still made
    retry_hours: int = 4  # no answer on a follow-up without a cadence: try again after…
    max_attempts: int = 3  # …up to this many times, then escalate to the managers
    reply_days: int = 14  # a customer's text within this many days answers the follow-up a text served
    sms_channel: str = ""  # the channel cadence SMS steps go through (default: the first one)
    step_poll_seconds: float = 30.0  # how often due SMS/email steps are looked for
    # an inbound call from a known customer rings their own salesperson alone this long first (Twilio:
    # then every other online rep; Asterisk: the dialplan's Dial before its Queue); 0 = off
    owner_first_seconds: int = 20
    # pool name -> usernames; filled from [followups.pools]
    pools: dict[str, list[str]] = field(default_factory=dict)


@dataclass(slots=True)
class ImportSettings:
    date_format: str = ""  # e.g. "%m/%d/%Y"; ISO dates (2026-03-01) are always understood


@dataclass(slots=True)
class WebhookSettings:
    """One `[[crm.webhooks]]` subscriber: where events go, the HMAC secret, which event types."""

    name: str
    url: str
    secret: Secret
    events: list[str] = field(default_factory=lambda: ["*"])
    mapping: str = ""  # a JSON mapping file: the REST adapter (our fields -> their JSON); empty: our JSON
    connections: int = 8  # concurrent requests to this subscriber
    timeout_seconds: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)  # extra headers, e.g. the CRM's API key

    def wants(self, event_type: str) -> bool:
        """Whether this subscriber asked for `event_type` ("*", "call.*" or the exact type)."""
        return any(
            p == "*" or p == event_type or (p.endswith(".*") and event_type.startswith(p[:-1]))
            for p in self.events
        )


@dataclass(slots=True)
class CrmSettings:
    """Write-back to the dealership's CRM: the event outbox and its subscribers."""

    max_attempts: int = 12  # then the delivery is dead-lettered with its last reason
    retry_first_seconds: float = 2.0  # the backoff doubles from here
    retry_max_seconds: float = 900.0
    replay_window_seconds: int = 300  # receivers refuse a signature timestamp older than this
    poll_seconds: float = 0.2  # how often the worker looks for new events when idle
    # a delivery being sent is leased to its instance for this long (renewed while it runs); when an
    # instance dies, another (or it, restarted) sends its deliveries again after at most this
    lease_seconds: float = 30.0
    retention_days: int = 7  # delivered events are forgotten after this
    webhooks: list[WebhookSettings] = field(default_factory=list)


@dataclass(slots=True)
class Settings:
    """Everything Switchboard reads at start; built once and passed down."""

    server: ServerSettings = field(default_factory=ServerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    asterisk: AsteriskSettings = field(default_factory=AsteriskSettings)
    twilio: TwilioSettings = field(default_factory=TwilioSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    calling_hours: CallingHoursSettings = field(default_factory=CallingHoursSettings)
    dealer: DealerSettings = field(default_factory=DealerSettings)
    dialer: DialerSettings = field(default_factory=DialerSettings)
    sms: SmsSettings = field(default_factory=SmsSettings)
    recordings: RecordingsSettings = field(default_factory=RecordingsSettings)
    followups: FollowupSettings = field(default_factory=FollowupSettings)
    import_: ImportSettings = field(default_factory=ImportSettings)
    # attribute name -> declared type (text, number, date, boolean), overriding what import infers
    attributes: dict[str, str] = field(default_factory=dict)
    crm: CrmSettings = field(default_factory=CrmSettings)
    # interface name (PJSIP/1001, Local/agent1@agents/n) -> username, besides each user's extension
    interfaces: dict[str, str] = field(default_factory=dict)
    # username -> the interface to ring for that user (beats asterisk.agent_dial)
    dial_interfaces: dict[str, str] = field(default_factory=dict)
    # the dealership's published numbers (E.164, from [lines] in any format) -> the line's name
    lines: dict[str, str] = field(default_factory=dict)


_SECTIONS = (
    "server",
    "store",
    "asterisk",
    "twilio",
    "smtp",
    "calling_hours",
    "dealer",
    "recordings",
    "dialer",
)
_SMS_CHANNEL_TYPES = ("twilio", "kannel", "modem")


def _toml_name(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("toml", f.name))


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Convert a TOML or environment value to the field's type, naming the key on failure."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
        return _coerce(key, args[0], value)
    if tp is Secret:
        if not isinstance(value, str):
            raise SettingsError(key, "expected a string")
        return Secret(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(key, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise SettingsError(key, "expected an integer, got a boolean")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SettingsError(key, f"expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SettingsError(key, f"expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise SettingsError(key, f"expected a string, got {type(value).__name__}")
        return str(value)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise SettingsError(key, "expected a list")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", item_tp, v) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SettingsError(key, "expected a table")
        return dict(value)
    raise SettingsError(key, f"unsupported setting type {tp!r}")


def _fill(section_name: str, obj: Any, table: dict[str, Any], env: dict[str, str]) -> None:
    hints = typing.get_type_hints(type(obj))
    known = {_toml_name(f): f for f in dataclasses.fields(obj)}
    for name in table:
        if name not in known:
            raise SettingsError(f"{section_name}.{name}", "unknown setting")
    for toml_name, f in known.items():
        key = f"{section_name}.{toml_name}"
        env_name = f"SWITCHBOARD_{section_name.upper()}_{toml_name.upper()}"
        if env_name in env:
            setattr(obj, f.name, _coerce(key, hints[f.name], env[env_name]))
        elif toml_name in table:
            setattr(obj, f.name, _coerce(key, hints[f.name], table[toml_name]))


def _validate(s: Settings) -> None:
    try:
        dial_template_fields(s.asterisk.agent_dial)
    except ValueError as exc:
        raise SettingsError("asterisk.agent_dial", str(exc)) from None
    if not (0 < s.server.port < 65536):
        raise SettingsError("server.port", f"must be 1-65535, got {s.server.port}")
    if s.server.public_url and not s.server.public_url.startswith(("http://", "https://")):
        raise SettingsError("server.public_url", "must start with http:// or https://")
    if s.server.instance_id and not _INSTANCE_ID.fullmatch(s.server.instance_id):
        raise SettingsError(
            "server.instance_id",
            "1-64 characters: letters, digits, '.', '_', ':' or '-' (first a letter or digit)",
        )
    if s.server.login_attempts_per_minute < 1:
        raise SettingsError(
            "server.login_attempts_per_minute",
            f"must be at least 1, got {s.server.login_attempts_per_minute}",
        )
    for i, entry in enumerate(s.server.trusted_proxies):
        try:
            parse_network(entry)
        except ValueError as exc:
            raise SettingsError(f"server.trusted_proxies[{i}]", str(exc)) from None
    if not (2 <= s.server.lease_seconds <= 86400):
        raise SettingsError("server.lease_seconds", f"must be 2-86400, got {s.server.lease_seconds}")
    for key, zone in (("server.time_zone", s.server.time_zone),):
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(key, f"unknown IANA time zone {zone!r}") from None
    if (
        not s.store.url.startswith(("sqlite:///", "postgresql://", "postgres://"))
        and s.store.url != ":memory:"
    ):
        raise SettingsError("store.url", "must be sqlite:///PATH or postgresql://USER@HOST/DB")
    if not (0.1 <= s.asterisk.standby_retry_seconds <= 60):
        raise SettingsError(
            "asterisk.standby_retry_seconds", f"must be 0.1-60, got {s.asterisk.standby_retry_seconds}"
        )
    if not (1 <= s.store.pool_size <= 1000):
        raise SettingsError("store.pool_size", f"must be 1-1000, got {s.store.pool_size}")
    region = s.store.default_region.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise SettingsError("store.default_region", f"unknown region code {s.store.default_region!r}")
    s.store.default_region = region
    for key in ("calling_hours.start", "calling_hours.end"):
        name = key.split(".")[1]
        setattr(s.calling_hours, name, _hhmm(key, getattr(s.calling_hours, name)))
    for i, day in enumerate(s.calling_hours.holidays):
        try:
            from datetime import date

            date.fromisoformat(day)
        except ValueError:
            raise SettingsError(f"calling_hours.holidays[{i}]", f"expected YYYY-MM-DD, got {day!r}") from None
    if s.calling_hours.start >= s.calling_hours.end:
        raise SettingsError("calling_hours.end", "must be later than calling_hours.start")
    for name in (
        "max_concurrent_calls",
        "calls_per_second",
        "lease_seconds",
        "preview_lease_minutes",
        "dial_timeout_seconds",
        "tick_seconds",
    ):
        if getattr(s.dialer, name) <= 0:
            raise SettingsError(f"dialer.{name}", "must be greater than 0")
    if s.dialer.owner_wait_minutes < 0:
        raise SettingsError("dialer.owner_wait_minutes", "must be 0 (no wait) or more")
    if s.dialer.lease_seconds < 30:
        raise SettingsError("dialer.lease_seconds", "must be at least 30 (it is renewed every tick)")
    if not s.dialer.dispositions or len(set(s.dialer.dispositions)) != len(s.dialer.dispositions):
        raise SettingsError("dialer.dispositions", "must be a non-empty list without repeats")
    s.sms.quiet_start = _hhmm("sms.quiet_start", s.sms.quiet_start)
    s.sms.quiet_end = _hhmm("sms.quiet_end", s.sms.quiet_end)
    if s.smtp.starttls not in ("auto", "always", "never"):
        raise SettingsError("smtp.starttls", "must be auto, always or never")
    if not 1 <= s.smtp.connections <= 64:
        raise SettingsError("smtp.connections", "must be 1-64")
    for name in ("rate_per_second", "rate_per_connection"):
        if getattr(s.smtp, name) < 0:
            raise SettingsError(f"smtp.{name}", "must be 0 (unlimited) or more")
    if s.recordings.transcribe_workers < 1:
        raise SettingsError("recordings.transcribe_workers", "must be at least 1")
    if s.recordings.transcribe:
        from recordings.transcribe import EXTRA_HINT, available

        if not available():
            raise SettingsError(
                "recordings.transcribe", f"needs PocketSphinx, not installed here: {EXTRA_HINT}"
            )
    if s.asterisk.auth not in ("md5", "plain"):
        raise SettingsError("asterisk.auth", "must be md5 or plain")
    if s.asterisk.enabled and not s.asterisk.secret:
        raise SettingsError("asterisk.secret", "required when asterisk.enabled is true")
    if s.twilio.enabled:
        if not s.twilio.account_sid.startswith("AC"):
            raise SettingsError("twilio.account_sid", "must start with AC")
        if not s.twilio.auth_token:
            raise SettingsError("twilio.auth_token", "required when twilio.enabled is true")
        if not s.server.public_url:
            raise SettingsError("server.public_url", "required with Twilio: it is the URL Twilio signs")


def _load_sms(table: dict[str, Any], env: dict[str, str]) -> SmsSettings:
    sms = SmsSettings()
    channels = table.get("channels", {})
    if not isinstance(channels, dict):
        raise SettingsError("sms.channels", "expected a table of channels")
    _fill("sms", sms, {k: v for k, v in table.items() if k != "channels"}, env)
    for name, ch in channels.items():
        key = f"sms.channels.{name}"
        if not isinstance(ch, dict):
            raise SettingsError(key, "expected a table")
        ch = dict(ch)
        prefix = f"SWITCHBOARD_SMS_CHANNELS_{name.upper()}_"
        for env_name, value in env.items():
            if env_name.startswith(prefix):
                ch[env_name.removeprefix(prefix).lower()] = value
        ch_type = ch.pop("type", None)
        if ch_type not in _SMS_CHANNEL_TYPES:
            raise SettingsError(f"{key}.type", f"must be one of {', '.join(_SMS_CHANNEL_TYPES)}")
        rate = _coerce(f"{key}.rate_per_second", float, ch.pop("rate_per_second", 1.0))
        if rate <= 0:
            raise SettingsError(f"{key}.rate_per_second", "must be greater than 0")
        sms.channels[name] = SmsChannelSettings(name=name, type=ch_type, options=ch, rate_per_second=rate)
    return sms


def _load_followups(table: Any, env: dict[str, str]) -> FollowupSettings:
    if not isinstance(table, dict):
        raise SettingsError("followups", "expected a table")
    out = FollowupSettings()
    pools = table.get("pools", {})
    if not isinstance(pools, dict):
        raise SettingsError("followups.pools", 'expected a table of pool = ["username", ...]')
    for name, members in pools.items():
        if not isinstance(members, list) or not all(isinstance(m, str) and m for m in members):
            raise SettingsError(f"followups.pools.{name}", "expected a list of usernames")
        out.pools[name] = list(members)
    _fill("followups", out, {k: v for k, v in table.items() if k != "pools"}, env)
    for key in ("sweep_at", "call_at"):
        setattr(out, key, _hhmm(f"followups.{key}", getattr(out, key)))
    for key in ("lookahead_days", "catch_up_days", "retry_hours", "max_attempts"):
        if getattr(out, key) < 0 or (key in ("retry_hours", "max_attempts") and getattr(out, key) < 1):
            raise SettingsError(f"followups.{key}", "is out of range")
    if out.unowned_pool and out.unowned_pool not in out.pools:
        raise SettingsError(
            "followups.unowned_pool", f"no pool named {out.unowned_pool!r} in [followups.pools]"
        )
    return out


_WEBHOOK_EVENT = re.compile(r"^(\*|[a-z_]+\.\*|[a-z_]+\.[a-z_]+)$")


def _load_crm(table: Any, env: dict[str, str]) -> CrmSettings:
    if not isinstance(table, dict):
        raise SettingsError("crm", "expected a table")
    crm = CrmSettings()
    hooks = table.get("webhooks", [])
    _fill("crm", crm, {k: v for k, v in table.items() if k != "webhooks"}, env)
    for name in (
        "max_attempts",
        "retry_first_seconds",
        "retry_max_seconds",
        "poll_seconds",
        "replay_window_seconds",
        "lease_seconds",
    ):
        if getattr(crm, name) <= 0:
            raise SettingsError(f"crm.{name}", "must be greater than 0")
    if crm.retention_days < 0:
        raise SettingsError("crm.retention_days", "must be 0 or more")
    if not isinstance(hooks, list):
        raise SettingsError("crm.webhooks", "expected an array of tables ([[crm.webhooks]])")
    hints = typing.get_type_hints(WebhookSettings)
    for i, hook in enumerate(hooks):
        key = f"crm.webhooks[{i}]"
        if not isinstance(hook, dict):
            raise SettingsError(key, "expected a table")
        for name in hook:
            if name not in hints:
                raise SettingsError(f"{key}.{name}", "unknown setting")
        for name in ("url", "secret"):
            if not hook.get(name):
                raise SettingsError(f"{key}.{name}", "is required")
        values = {
            name: _coerce(f"{key}.{name}", hints[name], value)
            for name, value in hook.items()
            if name != "name"
        }
        hook_name = str(hook.get("name") or f"webhook{i + 1}")
        if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", hook_name):
            raise SettingsError(f"{key}.name", "must be 1-64 letters, digits, _ . -")
        if any(h.name == hook_name for h in crm.webhooks):
            raise SettingsError(f"{key}.name", f"{hook_name!r} is used by another webhook")
        w = WebhookSettings(name=hook_name, **values)
        if not w.url.startswith(("http://", "https://")):
            raise SettingsError(f"{key}.url", "must start with http:// or https://")
        if len(w.secret.reveal()) < 16:
            raise SettingsError(f"{key}.secret", "must be at least 16 characters")
        if not w.events:
            raise SettingsError(f"{key}.events", 'must name at least one event type (or "*")')
        for j, pattern in enumerate(w.events):
            if not _WEBHOOK_EVENT.match(pattern):
                raise SettingsError(
                    f"{key}.events[{j}]", f'{pattern!r} is not an event type, "kind.*" or "*"'
                )
        if w.connections < 1 or w.connections > 256:
            raise SettingsError(f"{key}.connections", "must be 1-256")
        if w.timeout_seconds <= 0:
            raise SettingsError(f"{key}.timeout_seconds", "must be greater than 0")
        if w.mapping and not Path(w.mapping).is_file():
            raise SettingsError(f"{key}.mapping", f"file not found: {w.mapping}")
        crm.webhooks.append(w)
    return crm


def _load_lines(table: Any, region: str) -> dict[str, str]:
    """`[lines] "+13125550100" = "Sales"`: the number a customer dialled (any format) -> its name."""
    if not isinstance(table, dict):
        raise SettingsError("lines", 'expected a table of "number" = "name"')
    from crm_link.phones import try_e164

    out: dict[str, str] = {}
    for number, name in table.items():
        e164 = try_e164(str(number), region)
        if e164 is None:
            raise SettingsError(f"lines.{number}", "not a phone number")
        if not isinstance(name, str) or not name.strip():
            raise SettingsError(f"lines.{number}", "expected the line's name")
        if e164 in out:
            raise SettingsError(f"lines.{number}", f"the same number as another line ({e164})")
        out[e164] = name.strip()
    return out


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read TOML (path, else ./switchboard.toml if present) and environment overrides; validate."""
    env = dict(os.environ if env is None else env)
    data: dict[str, Any] = {}
    if path is None and Path("switchboard.toml").is_file():
        path = "switchboard.toml"
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError("--config", f"file not found: {p}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError("--config", f"{p} is not valid TOML: {exc}") from None
    known = {
        *_SECTIONS,
        *("sms", "interfaces", "dial_interfaces", "followups", "import", "attributes", "crm", "lines"),
    }
    for name in data:
        if name not in known:
            raise SettingsError(name, "unknown section")
    s = Settings()
    for section in _SECTIONS:
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise SettingsError(section, "expected a table")
        _fill(section, getattr(s, section), table, env)
    s.sms = _load_sms(data.get("sms", {}), env)
    s.crm = _load_crm(data.get("crm", {}), env)
    interfaces = data.get("interfaces", {})
    if not isinstance(interfaces, dict) or not all(isinstance(v, str) for v in interfaces.values()):
        raise SettingsError("interfaces", 'expected a table of interface = "username"')
    s.interfaces = dict(interfaces)
    dial = data.get("dial_interfaces", {})
    if not isinstance(dial, dict) or not all(isinstance(v, str) and v for v in dial.values()):
        raise SettingsError("dial_interfaces", 'expected a table of username = "interface"')
    s.dial_interfaces = dict(dial)
    s.lines = _load_lines(data.get("lines", {}), s.store.default_region)
    s.followups = _load_followups(data.get("followups", {}), env)
    imp = data.get("import", {})
    if not isinstance(imp, dict):
        raise SettingsError("import", "expected a table")
    _fill("import", s.import_, imp, env)
    attrs = data.get("attributes", {})
    if not isinstance(attrs, dict):
        raise SettingsError("attributes", 'expected a table of name = "number" | "date" | "boolean" | "text"')
    for name, kind in attrs.items():
        if kind not in ("text", "number", "date", "boolean"):
            raise SettingsError(f"attributes.{name}", "must be text, number, date or boolean")
    s.attributes = dict(attrs)
    _validate(s)
    return s
