"""Three Switchboard instances sharing one PostgreSQL store send one blast; one is SIGKILLed mid-way.

python bench/cluster_blast.py [--recipients 30000] [--lease-seconds 10] [--kill-at 0.5] [--rate 0]
python bench/cluster_blast.py --instances 1 --kill-at 0     # the same blast from one instance
python bench/cluster_blast.py --instances 1 --kill-at 0 --store sqlite    # ... on an SQLite file

Starts a throwaway PostgreSQL cluster (tests/pg_cluster.py: initdb + pg_ctl in a temp dir), three
`switchboard serve` processes on loopback (instance ids a, b, c; `[server] lease_seconds` as
given), and the Kannel stand-in (campaigns/sms/kannel_standin.py) in this process, which counts
every sendsms request by recipient. A blast to every recipient is created on `a`; when the gateway
has taken `--kill-at` of them, `b` gets SIGKILL. The others finish the blast, taking `b`'s rows
that were `sending` (as `unknown`, never resent) once its lease runs out.

Prints: sent, duplicates (recipients the gateway got twice), lost (recipients neither sent once
nor flagged), in doubt (and how many of those the gateway did get), each instance's share, and
msg/s with three instances, after the kill, and overall. Delivery reports are not part of the
figures (the stand-in's are delayed past the end).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, report

sys.path.insert(0, str(ROOT))

from campaigns.sms.kannel_standin import KannelStandIn
from tests import pg_cluster
from tests.cluster import (
    Instance,
    blast_progress,
    create_blast,
    free_port,
    outcome,
    seed,
    write_config,
)


def _database(admin_url: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE switchboard")
    return admin_url.rsplit("/", 1)[0] + "/switchboard"


async def run(args: argparse.Namespace, base: Path) -> list[str]:
    n = args.recipients
    if args.store == "sqlite":  # the same blast from one instance on an SQLite file, for comparison
        url = f"sqlite:///{base / 'switchboard.db'}"
    else:
        url = _database(pg_cluster.start(base / "pg"))
    t = time.perf_counter()
    token = await seed(url, n)
    seeded_s = time.perf_counter() - t
    lines = [f"seed: {n} contacts in {seeded_s:.1f} s"]
    names = "abcdefgh"[: args.instances]
    kill = args.kill_at > 0 and len(names) > 1
    async with KannelStandIn(dlr_delay=3600) as kannel:
        instances = []
        for name in names:
            port = free_port()
            config = base / f"{name}.toml"
            write_config(
                config, name=name, port=port, store_url=url, sendsms_url=kannel.sendsms_url,
                lease_seconds=args.lease_seconds, rate=args.rate or 1_000_000,
            )  # fmt: skip
            instances.append(Instance(name, port, config))
        try:
            for inst in instances:
                await inst.start(base)
            await asyncio.gather(*(inst.ready() for inst in instances))
            t0 = time.perf_counter()
            blast_id = await create_blast(instances[0], token)
            t_created = time.perf_counter()  # the blast is materialized (its rows queued) when this answers
            t_first = t_kill = None
            at_kill = 0
            seen, last, polled = 0, t0, 0.0
            while True:
                now = time.perf_counter()
                got = len(kannel.received)
                if got != seen:  # when the gateway took its first and its last message
                    seen, last = got, now
                    t_first = t_first or now
                if kill and t_kill is None and got >= int(n * args.kill_at):
                    instances[1].kill()
                    t_kill, at_kill = now, got
                    await instances[1].proc.wait()
                if now - polled >= 0.5:
                    polled = now
                    if (await blast_progress(instances[0], token, blast_id))["state"] == "done":
                        break
                await asyncio.sleep(0.01)
            t_end = time.perf_counter()
        finally:
            for inst in instances:
                await inst.stop()
        o = await outcome(url, blast_id, kannel, n)
    assert t_first is not None
    lines += [
        f"recipients={n} sent={o.states.get('sent', 0)} at_gateway={o.at_gateway} duplicates={o.duplicates}"
        f" lost={o.lost} in_doubt={o.in_doubt} in_doubt_at_gateway={o.in_doubt_at_gateway}"
        f" in_doubt_owners={','.join(sorted(o.owners_of_in_doubt)) or '-'}",
        "sent by instance: " + " ".join(f"{k}={v}" for k, v in sorted(o.sent_by_owner.items())),
        f"create (materialize {n} rows on a): {t_created - t0:.1f} s; first message at the gateway"
        f" {t_first - t0:.1f} s after the request",
    ]
    if t_kill is not None:
        after = o.at_gateway - at_kill
        lines += [
            f"{len(names)} instances: {at_kill} msgs in {t_kill - t_first:.1f} s ="
            f" {at_kill / (t_kill - t_first):.0f} msg/s (first message to the kill of b)",
            f"after the kill ({len(names) - 1} instances, lease {args.lease_seconds} s): {after} msgs in"
            f" {last - t_kill:.1f} s = {after / max(last - t_kill, 1e-9):.0f} msg/s",
        ]
    else:
        lines.append(
            f"{len(names)} instance(s): {o.at_gateway} msgs in {last - t_first:.1f} s ="
            f" {o.at_gateway / (last - t_first):.0f} msg/s (first to last message at the gateway)"
        )
    lines.append(
        f"blast: {n} recipients, request to done in {t_end - t0:.1f} s = {n / (t_end - t0):.0f} msg/s overall"
    )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipients", type=int, default=30_000)
    p.add_argument("--lease-seconds", type=int, default=10)
    p.add_argument(
        "--kill-at",
        type=float,
        default=0.5,
        help="fraction of the blast at the gateway when b is killed (0: none)",
    )
    p.add_argument("--rate", type=float, default=0, help="each instance's channel rate (0: unlimited)")
    p.add_argument("--instances", type=int, default=3, choices=range(1, 9), metavar="1-8")
    p.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    args = p.parse_args()
    if args.store == "sqlite" and args.instances != 1:
        p.error(
            "--store sqlite runs one instance (--instances 1 --kill-at 0): an SQLite file is one process's"
        )
    base = Path(tempfile.mkdtemp(prefix="switchboard-cluster-"))
    base.chmod(0o755)  # the cluster runs as the postgres user when we are root
    try:
        lines = asyncio.run(run(args, base))
    finally:
        pg_cluster.stop(base / "pg", "immediate")
        shutil.rmtree(base, ignore_errors=True)
    report(lines)


if __name__ == "__main__":
    main()
