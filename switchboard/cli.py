"""The `switchboard` command: init, serve, demo, user add, token create, import contacts."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from crm_link.errors import Conflict, StoreError, ValidationError
from crm_link.models import ROLES
from crm_link.pg import describe_url
from crm_link.store import Store
from switchboard.settings import Settings, SettingsError, load_settings


class UsageError(Exception):
    """Bad input on the command line: exit 2 with this one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"switchboard: error: {message}\n")


# where `switchboard demo` keeps its store by default (relative to where it is run)
DEMO_STORE = Path("demo-data") / "demo.db"
# commands that only read: they never create a store that is not there
READ_ONLY = ("sms", "call-lists")
# commands that run the service with the store the settings name
SERVICE_COMMANDS = ("serve", "demo", "init", "migrate")


def choose_store(settings: Settings, args: argparse.Namespace, env: dict[str, str]) -> None:
    """Point the settings at the store this command should open.

    Run where the demo keeps its data (./demo-data/demo.db) with no store configured (no --config,
    no ./switchboard.toml, no SWITCHBOARD_STORE_URL), a command uses the demo's store and says so.
    A read-only command refuses a store file that does not exist instead of creating an empty one.
    """
    command = getattr(args, "command", "")
    if command in SERVICE_COMMANDS:
        return
    configured = (
        args.config is not None or Path("switchboard.toml").is_file() or "SWITCHBOARD_STORE_URL" in env
    )
    if not configured and DEMO_STORE.is_file():
        settings.store.url = f"sqlite:///{DEMO_STORE}"
        print(f"switchboard: using the demo's store {DEMO_STORE}", file=sys.stderr)
    path = settings.store.sqlite_path
    if command in READ_ONLY and settings.store.url.startswith("sqlite:///") and path != ":memory:":
        if not Path(path).is_file():
            raise UsageError(
                f"store: no store at {path} (store.url = {settings.store.url!r}); "
                "run `switchboard init` or `switchboard demo` first, or pass --config"
            )


def _open(settings: Settings) -> Store:
    from switchboard.app import open_store

    return open_store(settings)


async def cmd_init(settings: Settings, args: argparse.Namespace) -> int:
    async with _open(settings) as store:
        existing = await store.users.by_username("admin")
        if existing is None:
            password = args.admin_password or secrets.token_urlsafe(12)
            await store.users.add("admin", role="admin", password=password, display_name="Administrator")
            print("created user admin")
            if not args.admin_password:
                print(f"admin password: {password}")
        else:
            print("store is up to date; user admin already exists")
    print(f"store ready: {describe_url(settings.store.url)}")
    return 0


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from crm_link.db import load_migrations

    store = _open(settings)
    await store.open()
    try:
        applied, where = store.db.applied, describe_url(settings.store.url)
    finally:
        await store.close()
    names = {m.version: f"{m.version:04d}_{m.name}" for m in load_migrations()}
    latest = max(names) if names else 0
    if applied:
        print(
            f"migrated {where}: applied {len(applied)} migration(s): {', '.join(names[v] for v in applied)}"
        )
    else:
        print(f"{where} is up to date")
    print(f"schema version {latest:04d} ({store.db.dialect})")
    return 0


async def cmd_user_add(settings: Settings, args: argparse.Namespace) -> int:
    password = args.password or secrets.token_urlsafe(12)
    async with _open(settings) as store:
        await store.users.check_manager(args.manager)
        user = await store.users.add(
            args.name,
            role=args.role,
            password=password,
            display_name=args.display_name or "",
            extension=args.extension,
            interfaces=args.interface or [],
        )
        if args.manager:
            user = await store.users.set_manager(user.id, args.manager)
    print(f"added {user.username} ({user.role}{', ext ' + user.extension if user.extension else ''})")
    if not args.password:
        print(f"password: {password}")
    return 0


async def _user_named(store: Any, name: str) -> Any:
    user = await store.users.by_username(name)
    if user is None:
        raise UsageError(f"NAME: no user named {name!r}")
    return user


async def cmd_user_passwd(settings: Settings, args: argparse.Namespace) -> int:
    password = args.password or secrets.token_urlsafe(12)
    async with _open(settings) as store:
        user = await _user_named(store, args.name)
        await store.users.set_password(user.id, password)
        await store.audit.write(
            "user.password", user_id=None, object_type="user", object_id=user.id, via="cli"
        )
    print(f"password of {user.username} changed; their sessions ended")
    if not args.password:
        print(f"password: {password}")
    return 0


async def cmd_user_disable(settings: Settings, args: argparse.Namespace) -> int:
    active = bool(args.enable)
    async with _open(settings) as store:
        user = await _user_named(store, args.name)
        await store.users.set_active(user.id, active)
        await store.audit.write(
            "user.enable" if active else "user.disable",
            user_id=None,
            object_type="user",
            object_id=user.id,
            via="cli",
        )
    print(
        f"{user.username} reactivated"
        if active
        else f"{user.username} deactivated: sessions ended, API tokens revoked"
    )
    return 0


async def cmd_user_manager(settings: Settings, args: argparse.Namespace) -> int:
    async with _open(settings) as store:
        user = await _user_named(store, args.name)
        user = await store.users.set_manager(user.id, None if args.none else args.manager)
        await store.audit.write(
            "user.edit", user_id=None, object_type="user", object_id=user.id, via="cli", manager=user.manager
        )
    if user.manager:
        print(f"{user.username}'s manager is {user.manager}: their customers' escalations go there")
    else:
        print(f"{user.username} has no manager: their customers' escalations go to the managers' pool")
    return 0


async def cmd_user_list(settings: Settings, args: argparse.Namespace) -> int:
    async with _open(settings) as store:
        users = await store.users.list()
    print(f"{'USERNAME':<20} {'ROLE':<10} {'EXT':<6} {'ACTIVE':<6} {'MANAGER':<20} NAME")
    for u in users:
        print(
            f"{u.username:<20} {u.role:<10} {u.extension or '':<6} {'yes' if u.active else 'no':<6}"
            f" {u.manager or '':<20} {u.display_name}"
        )
    return 0


async def cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    async with _open(settings) as store:
        user = await store.users.by_username(args.name)
        if user is None:
            raise UsageError(f"NAME: no user named {args.name!r}")
        token = await store.users.create_token(user.id, args.label or "cli")
    print(token)
    return 0


async def cmd_import_contacts(settings: Settings, args: argparse.Namespace) -> int:
    from switchboard.progress import ProgressBar

    path = Path(args.file)
    if not await asyncio.to_thread(path.is_file):
        raise UsageError(f"FILE: no such file: {path}")
    async with _open(settings) as store:
        from crm_link.clock import system_clock
        from switchboard.followups_ctx import build_service, import_with_followups

        report, made = await import_with_followups(
            settings,
            store,
            build_service(settings, store, system_clock),
            path,
            dry_run=args.dry_run,
            progress=ProgressBar("import"),
        )
    for err in report.errors[:200]:
        print(err.describe(), file=sys.stderr)
    if len(report.errors) > 200:
        print(f"... and {len(report.errors) - 200} more errors", file=sys.stderr)
    verb = "would import" if args.dry_run else "imported"
    ok = report.total - report.failed
    print(
        f"{verb} {ok} of {report.total} rows"
        + ("" if args.dry_run else f" ({report.created} created, {report.updated} updated)")
        + f"; {report.failed} rows with errors"
        + ("" if args.dry_run else f"; {made} follow-ups from cadences")
    )
    return 1 if report.failed else 0


async def cmd_recordings_reindex(settings: Settings, args: argparse.Namespace) -> int:
    from recordings.service import RecordingService
    from switchboard.progress import ProgressBar

    directory = Path(args.dir or settings.asterisk.recordings_dir)
    if not await asyncio.to_thread(directory.is_dir):
        raise UsageError(f"DIR: not a directory: {directory}")
    async with _open(settings) as store:
        service = RecordingService(
            store, watch_dir=directory, storage_dir=Path(settings.recordings.storage_dir)
        )
        report = await service.scan_once(directory, force=True, progress=ProgressBar("reindex"))
    for err in report.errors:
        print(f"error: {err}", file=sys.stderr)
    print(
        f"{report.seen} files: {report.indexed} indexed, {report.skipped} already indexed, "
        f"{len(report.errors)} errors"
    )
    return 1 if report.errors else 0


async def cmd_recordings_transcribe(settings: Settings, args: argparse.Namespace) -> int:
    """Transcribe the backlog here and now (progress bar), or --watch the server's queue drain."""
    if args.watch:

        async def fetch(store: Store) -> tuple[str, int, int, str]:
            c = await store.transcripts.counts()
            state = "transcribing" if c["queued"] + c["working"] else "idle"
            summary = ", ".join(f"{v} {k}" for k, v in c.items())
            return state, c["done"] + c["failed"], sum(c.values()), summary

        return await _watch(settings, args, "transcripts", fetch, ("idle",))
    from recordings.transcribe import EXTRA_HINT, PocketSphinxTranscriber, available
    from recordings.transcripts import TranscriptWorker
    from switchboard.progress import ProgressBar

    if not available():
        raise UsageError(f"transcripts need PocketSphinx, not installed here: {EXTRA_HINT}")
    workers = settings.recordings.transcribe_workers if args.workers is None else args.workers
    if workers < 1:
        raise UsageError("--workers: must be at least 1")
    transcriber = PocketSphinxTranscriber(workers)
    try:
        async with _open(settings) as store:
            worker = TranscriptWorker(
                store, transcriber, Path(settings.recordings.storage_dir), concurrency=workers
            )
            counts = await worker.run_backlog(ProgressBar("transcribe"))
    finally:
        await asyncio.to_thread(transcriber.close)
    print("transcripts: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 1 if counts["failed"] else 0


async def _watch(
    settings: Settings,
    args: argparse.Namespace,
    label: str,
    fetch: Callable[[Store], Awaitable[tuple[str, int, int, str]]],
    final: tuple[str, ...],
) -> int:
    """Print a job's progress once, or (--watch) redraw a progress bar until the job is over."""
    from switchboard.progress import ProgressBar

    if args.interval <= 0:
        raise UsageError("--interval: must be greater than 0")
    async with _open(settings) as store:
        state, done, total, summary = await fetch(store)
        if args.watch:
            bar = ProgressBar(label)
            while True:
                bar(done, total)
                if state in final:
                    break
                await asyncio.sleep(args.interval)
                state, done, total, summary = await fetch(store)
            if done < total:
                print(file=sys.stderr)
    print(f"{label}: {state}; {summary}")
    return 0


async def cmd_call_list_show(settings: Settings, args: argparse.Namespace) -> int:
    from crm_link.errors import NotFound

    async def fetch(store: Store) -> tuple[str, int, int, str]:
        try:
            cl = await store.call_lists.get(args.id)
        except NotFound:
            raise UsageError(f"ID: no call list {args.id} in {settings.store.sqlite_path}") from None
        st = await store.call_lists.stats(args.id)
        c = st["counts"]
        rate = f"{st['connect_rate']:.0%}" if st["connect_rate"] is not None else "-"
        results = ", ".join(f"{k} {v}" for k, v in st["results"].items()) or "none yet"
        summary = (
            f"{c['pending']} pending, {c['in_progress']} in progress, {c['done']} done, {c['skipped']} skipped "
            f"of {st['total']}; {st['attempts']['total']} attempts, connect rate {rate}; results: {results}"
        )
        return cl.state, c["done"] + c["skipped"], st["total"], summary

    return await _watch(settings, args, f"call list {args.id}", fetch, ("done", "stopped", "draft", "paused"))


async def cmd_sms_show(settings: Settings, args: argparse.Namespace) -> int:
    from campaigns.sms.quiet import QUIET_HOURS
    from crm_link.errors import NotFound

    async def fetch(store: Store) -> tuple[str, int, int, str]:
        try:
            blast = await store.sms.blast(args.id)
        except NotFound:
            raise UsageError(f"ID: no blast {args.id} in {settings.store.sqlite_path}") from None
        p = await store.sms.progress(args.id)
        c = p["counts"]
        done = sum(c[k] for k in ("sent", "delivered", "failed", "skipped", "unknown"))
        summary = ", ".join(f"{v} {k}" for k, v in c.items()) + f"; {p['segments']} segments"
        until, held = await store.sms.held(args.id, QUIET_HOURS)
        if until is not None:
            zone = ZoneInfo(blast.get("time_zone") or settings.server.time_zone)
            summary += (
                f"; {held} held by quiet hours until {until.astimezone(zone):%a %d %b %Y %H:%M} {zone.key}"
            )
        return blast["state"], done, p["total"], summary

    return await _watch(settings, args, f"blast {args.id}", fetch, ("done", "cancelled", "paused"))


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from switchboard.service import run_service

    run_service(settings)
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from switchboard.demo import run_demo

    run_demo(settings, port=args.port, data_dir=Path(args.data_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--config", metavar="FILE", help="TOML settings (default ./switchboard.toml if present)"
    )
    p = _Parser(
        prog="switchboard", description="Contact-center service: screen-pops, call lists, SMS, email."
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("init", parents=[common], help="create or migrate the store and the admin user")
    s.add_argument("--admin-password", metavar="PW")
    s.set_defaults(run=cmd_init)

    s = sub.add_parser("migrate", parents=[common], help="apply pending migrations to the configured store")
    s.set_defaults(run=cmd_migrate)

    s = sub.add_parser("serve", parents=[common], help="run the service")
    s.set_defaults(run=cmd_serve, sync=True)

    s = sub.add_parser("demo", parents=[common], help="run with simulators and sample data")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument(
        "--data-dir", default="demo-data", help="where the demo keeps its store (default ./demo-data)"
    )
    s.set_defaults(run=cmd_demo, sync=True)

    user = sub.add_parser("user", help="manage users").add_subparsers(
        dest="user_cmd", required=True, parser_class=_Parser
    )
    s = user.add_parser("add", parents=[common], help="add a user")
    s.add_argument("name")
    s.add_argument("--role", required=True, choices=ROLES)
    s.add_argument("--extension")
    s.add_argument("--interface", action="append", help="a PBX interface of this user (repeatable)")
    s.add_argument("--display-name")
    s.add_argument("--password", metavar="PW")
    s.add_argument("--manager", metavar="NAME", help="their manager (escalations of their customers)")
    s.set_defaults(run=cmd_user_add)
    s = user.add_parser(
        "manager", parents=[common], help="set a user's manager (escalations to owner_manager go there)"
    )
    s.add_argument("name")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("manager", nargs="?", help="the manager's username")
    who.add_argument("--none", action="store_true", help="no manager (the managers' pool)")
    s.set_defaults(run=cmd_user_manager)
    s = user.add_parser("passwd", parents=[common], help="set a user's password (ends their sessions)")
    s.add_argument("name")
    s.add_argument("--password", metavar="PW", help="the new password (default: a random one, printed)")
    s.set_defaults(run=cmd_user_passwd)
    s = user.add_parser(
        "disable", parents=[common], help="deactivate a user: sessions and tokens end at once"
    )
    s.add_argument("name")
    s.add_argument("--enable", action="store_true", help="reactivate instead")
    s.set_defaults(run=cmd_user_disable)
    s = user.add_parser("list", parents=[common], help="list users")
    s.set_defaults(run=cmd_user_list)

    token = sub.add_parser("token", help="API tokens").add_subparsers(
        dest="token_cmd", required=True, parser_class=_Parser
    )
    s = token.add_parser("create", parents=[common], help="print a new API token for a user")
    s.add_argument("name")
    s.add_argument("--label")
    s.set_defaults(run=cmd_token_create)

    imp = sub.add_parser("import", help="import data").add_subparsers(
        dest="import_cmd", required=True, parser_class=_Parser
    )
    s = imp.add_parser("contacts", parents=[common], help="import/update contacts from a CSV")
    s.add_argument("file", metavar="FILE.csv")
    s.add_argument("--dry-run", action="store_true", help="check every row, write nothing")
    s.set_defaults(run=cmd_import_contacts)
    rec = sub.add_parser("recordings", help="call recordings").add_subparsers(
        dest="recordings_cmd", required=True, parser_class=_Parser
    )
    s = rec.add_parser(
        "reindex", parents=[common], help="index every audio file of DIR (default: asterisk.recordings_dir)"
    )
    s.add_argument("dir", nargs="?", metavar="DIR")
    s.set_defaults(run=cmd_recordings_reindex)
    s = rec.add_parser(
        "transcribe",
        parents=[common],
        help="transcribe every recording not yet transcribed; --watch shows the server's queue instead",
    )
    s.add_argument(
        "--watch", action="store_true", help="redraw the server's progress until the queue is empty"
    )
    s.add_argument("--interval", type=float, default=1.0, help="seconds between redraws (--watch)")
    s.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes decoding at once (default: recordings.transcribe_workers)",
    )
    s.set_defaults(run=cmd_recordings_transcribe)
    for name, helptext, run in (
        ("call-lists", "outbound call lists", cmd_call_list_show),
        ("sms", "SMS blasts", cmd_sms_show),
    ):
        grp = sub.add_parser(name, help=helptext).add_subparsers(
            dest=f"{name}_cmd", required=True, parser_class=_Parser
        )
        s = grp.add_parser("show", parents=[common], help="progress by state; --watch draws a progress bar")
        s.add_argument("id", type=int, metavar="ID")
        s.add_argument("--watch", action="store_true", help="redraw until the job is over")
        s.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between updates")
        s.set_defaults(run=run)
    from switchboard.webhooks.cli import add_commands as add_crm_commands

    add_crm_commands(sub, common, _Parser)
    for extra in EXTRA_COMMANDS:
        extra(sub, common)
    return p


# other packages add subcommands here: fn(subparsers, common_parent)
EXTRA_COMMANDS: list[Callable[[Any, argparse.ArgumentParser], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    from switchboard.logs import setup_logging

    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        choose_store(settings, args, dict(os.environ))
        setup_logging("WARNING" if not getattr(args, "sync", False) else "INFO")
        run: Callable[[Settings, argparse.Namespace], Any] = args.run
        if getattr(args, "sync", False):
            return int(run(settings, args))
        coro: Coroutine[Any, Any, int] = run(settings, args)
        return asyncio.run(coro)
    except SettingsError as exc:
        print(f"switchboard: error: {exc}", file=sys.stderr)
        return 2
    except (ValidationError, Conflict) as exc:
        print(f"switchboard: error: {exc.field}: {exc.reason}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"switchboard: error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"switchboard: error: store: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
