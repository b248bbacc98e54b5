"""AMI parsing throughput: our protocol layer vs panoramisk's, on the same recorded transcripts, same run.

    python bench/ami_parse.py [--seconds 3]

Both are fed the transcripts in 4 KiB reads, as a socket would deliver them, and go as far as a
parsed message object (ours: Event/Response; panoramisk: its AMIProtocol.data_received → Message →
handle_message dispatch to a no-op).
"""

from __future__ import annotations

import argparse
import collections
import logging
import time

from _common import ROOT, report

from cti.ami.protocol import AmiParser

FIXTURES = ROOT.parent / "shared" / "fixtures" / "ami"


def corpus() -> bytes:
    parts = [p.read_bytes() for p in sorted(FIXTURES.glob("*.ami")) if not p.name.endswith(".sent.ami")]
    body = b"".join(p[p.index(b"\r\n") + 2 :] for p in parts)  # banners off; one stream
    return b"Asterisk Call Manager/11.0.0\r\n" + body


def chunks(data: bytes, size: int = 4096) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def ours(pieces: list[bytes]) -> int:
    p = AmiParser()
    n = 0
    for piece in pieces:
        n += len(p.feed(piece))
    return n


def panoramisk_parser(pieces: list[bytes]) -> int:
    from panoramisk.ami_protocol import AMIProtocol

    class Factory:
        save_stream = None
        count = 0

        def dispatch(self, message: object) -> None:
            Factory.count += 1

    proto = AMIProtocol()
    proto.factory = Factory()
    proto.version = None
    proto.queue = collections.deque()
    proto.responses = {}
    proto.log = logging.getLogger("panoramisk.bench")
    proto.encoding = "utf8"
    Factory.count = 0
    for piece in pieces:
        proto.data_received(piece)
    return Factory.count


def rate(fn, pieces: list[bytes], seconds: float, packets: int) -> tuple[float, int]:
    """Packets parsed per second (both parse every packet; panoramisk dispatches only events)."""
    n_msgs = fn(pieces)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn(pieces)
        runs += 1
    elapsed = time.perf_counter() - started
    return runs * packets / elapsed, n_msgs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    pieces = chunks(corpus())
    packets = ours(pieces)
    mine, n_mine = rate(ours, pieces, args.seconds, packets)
    theirs, n_theirs = rate(panoramisk_parser, pieces, args.seconds, packets)
    import panoramisk

    report(
        [
            f"ami_parse_switchboard packets_per_s={mine:,.0f} packets_per_pass={n_mine}",
            f"ami_parse_panoramisk_{getattr(panoramisk, '__version__', '1.4')} packets_per_s={theirs:,.0f}"
            f" events_dispatched_per_pass={n_theirs}",
            f"ami_parse_ratio switchboard/panoramisk={mine / theirs:.2f}",
        ]
    )


if __name__ == "__main__":
    main()
