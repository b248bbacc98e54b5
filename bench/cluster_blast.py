"""Three Switchboard instances sharing one PostgreSQL store send one blast; one is SIGKILLed mid-way.

python bench/cluster_blast.py [--recipients 30000] [--lease-seconds 10] [--kill-at 0.5] [--rate 0]

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
    url = _database(pg_cluster.start(base / "pg"))
    t = time.perf_counter()
    token = await seed(url, n)
    seeded_s = time.perf_counter() - t
    lines = [f"seed: {n} contacts in {seeded_s:.1f} s"]
    async with KannelStandIn(dlr_delay=3600) as kannel:
        instances = []
        for name in ("a", "b", "c"):
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
            victim = instances[1]
            t0 = time.perf_counter()
            blast_id = await create_blast(instances[0], token)
            while True:  # until the gateway has taken the share at which b dies
                if len(kannel.received) >= int(n * args.kill_at):
                    break
                await asyncio.sleep(0.01)
            victim.kill()
            t_kill = time.perf_counter()
            at_kill = len(kannel.received)
            await victim.proc.wait()
            seen, last, polled = len(kannel.received), time.perf_counter(), 0.0
            while True:
                now = time.perf_counter()
                if len(kannel.received) != seen:  # when the gateway took its last message
                    seen, last = len(kannel.received), now
                if now - polled >= 0.5:
                    polled = now
                    if (await blast_progress(instances[0], token, blast_id))["state"] == "done":
                        break
                await asyncio.sleep(0.02)
            t_end = time.perf_counter()
        finally:
            for inst in instances:
                await inst.stop()
        o = await outcome(url, blast_id, kannel, n)
    after = len(kannel.received) - at_kill
    lines += [
        f"recipients={n} sent={o.states.get('sent', 0)} at_gateway={o.at_gateway} duplicates={o.duplicates}"
        f" lost={o.lost} in_doubt={o.in_doubt} in_doubt_at_gateway={o.in_doubt_at_gateway}"
        f" in_doubt_owners={','.join(sorted(o.owners_of_in_doubt)) or '-'}",
        "sent by instance: " + " ".join(f"{k}={v}" for k, v in sorted(o.sent_by_owner.items())),
        f"three instances: {at_kill} msgs in {t_kill - t0:.1f} s = {at_kill / (t_kill - t0):.0f} msg/s",
        f"after the kill (two instances, lease {args.lease_seconds} s): {after} msgs in {last - t_kill:.1f} s"
        f" = {after / max(last - t_kill, 1e-9):.0f} msg/s",
        f"blast: {n} recipients created to done in {t_end - t0:.1f} s = {n / (t_end - t0):.0f} msg/s overall",
    ]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipients", type=int, default=30_000)
    p.add_argument("--lease-seconds", type=int, default=10)
    p.add_argument(
        "--kill-at", type=float, default=0.5, help="fraction of the blast at the gateway when b is killed"
    )
    p.add_argument("--rate", type=float, default=0, help="each instance's channel rate (0: unlimited)")
    args = p.parse_args()
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
