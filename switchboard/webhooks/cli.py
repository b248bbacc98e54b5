"""`switchboard crm deliveries [--watch]` and `switchboard crm redrive`: the outbox from a shell."""

from __future__ import annotations

import argparse
from typing import Any

from crm_link.store import Store
from switchboard.settings import Settings


def _summary(counts: dict[str, Any]) -> str:
    subs = "; ".join(
        f"{name}: {c['queued']} queued, {c['sending']} sending, {c['delivered']} delivered, {c['dead']} dead"
        for name, c in sorted(counts["subscribers"].items())
    )
    oldest = f", oldest waiting since {counts['oldest_waiting_at']}" if counts["oldest_waiting_at"] else ""
    return f"backlog {counts['backlog']}, {counts['unfanned']} not yet fanned out{oldest}" + (
        f"; {subs}" if subs else "; no deliveries yet"
    )


async def cmd_deliveries(settings: Settings, args: argparse.Namespace) -> int:
    """Counts by webhook and state (and, with --state, those deliveries); --watch until drained."""
    from switchboard.cli import _open, _watch

    async def fetch(store: Store) -> tuple[str, int, int, str]:
        counts = await store.crm_events.counts()
        delivered = sum(c["delivered"] for c in counts["subscribers"].values())
        dead = counts["dead"]
        pending = counts["backlog"] + counts["unfanned"]
        return (
            ("drained" if pending == 0 else "delivering"),
            delivered + dead,
            delivered + dead + pending,
            _summary(counts),
        )

    code = await _watch(settings, args, "crm deliveries", fetch, ("drained",))
    if args.state:
        async with _open(settings) as store:
            page = await store.crm_events.deliveries(state=args.state, limit=args.limit)
        for d in page.items:
            print(
                f"{d.id}\t{d.subscriber}\t{d.state}\t{d.event.type}\t{d.event.uid}\tcontact={d.event.contact_id}"
                f"\tattempts={d.attempts}\t{d.last_error or ''}"
            )
    return code


async def cmd_redrive(settings: Settings, args: argparse.Namespace) -> int:
    """Queue dead deliveries again (all, one webhook's, or the ids given)."""
    from switchboard.cli import UsageError, _open

    names = [w.name for w in settings.crm.webhooks]
    if args.subscriber and args.subscriber not in names:
        raise UsageError(
            f"--subscriber: no webhook named {args.subscriber!r} (configured: {', '.join(names)})"
        )
    async with _open(settings) as store:
        n = await store.crm_events.redrive(args.ids or None, subscriber=args.subscriber)
        await store.audit.write("crm.redrive", user_id=None, object_type="delivery", count=n, via="cli")
    print(f"re-driven: {n}")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser, parser_class: Any) -> None:
    """Register `crm deliveries` and `crm redrive`."""
    grp = sub.add_parser("crm", help="write-back to the dealership's CRM").add_subparsers(
        dest="crm_cmd", required=True, parser_class=parser_class
    )
    s = grp.add_parser(
        "deliveries", parents=[common], help="the outbox by webhook and state; --watch until drained"
    )
    s.add_argument("--watch", action="store_true", help="redraw a progress bar until the backlog is empty")
    s.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between updates")
    s.add_argument("--state", choices=("queued", "sending", "delivered", "dead"), help="also list these")
    s.add_argument("--limit", type=int, default=50, help="how many to list (1-500)")
    s.set_defaults(run=cmd_deliveries)
    s = grp.add_parser("redrive", parents=[common], help="queue dead deliveries again")
    s.add_argument("ids", nargs="*", type=int, metavar="ID")
    s.add_argument("--subscriber", metavar="NAME", help="only this webhook's")
    s.set_defaults(run=cmd_redrive)
