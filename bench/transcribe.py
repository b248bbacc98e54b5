"""Transcripts: word error rate, speed, and what a backlog does to the event loop.

    apt-get install -y espeak-ng && pip install -e '.[transcripts]'
    python bench/transcribe.py [--backlog 100] [--workers 1]

1. Word error rate of PocketSphinx on sentences of known words spoken by espeak-ng and brought to
   Asterisk's format (8 kHz 16-bit mono), and what it hears in the recorded Asterisk WAVs (no speech
   in them: every word it emits there is an insertion).
2. Seconds of audio per CPU-second of decoding (one process, model already loaded).
3. The service's loop while its transcript worker drains a backlog of `--backlog` recordings: the
   longest stall (a task that sleeps 10 ms) and the latency of the screen-pop's caller lookup
   (`GET /api/v1/contacts?phone=`) against the same figures with no backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import wave
from pathlib import Path

from _common import ROOT, pct, report
from aiohttp.test_utils import TestClient, TestServer

from crm_link.contacts import validate_contact
from recordings.transcribe import transcribe_file
from switchboard.app import create_app
from switchboard.keys import RECORDINGS, STORE
from switchboard.settings import load_settings
from tests.fixtures.speech.make import make
from tests.loop_lag import LoopLag

SENTENCES = [
    "My brakes are squeaking and I want a refund.",
    "I would like to speak to the manager about my car.",
    "Can you call me back tomorrow morning?",
    "The service appointment is on Tuesday at nine.",
    "What is the price of the new truck?",
    "I want to trade in my old car.",
    "Please send me the quote by email.",
    "The engine light came on again yesterday.",
]
ASTERISK_WAVS = ROOT / "tests" / "fixtures" / "ami" / "recordings"


def words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c in " '" else " " for c in text.lower()).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def accuracy(tmp: Path) -> tuple[list[str], list[Path]]:
    lines, files = [], []
    transcribe_file(str(ROOT / "tests" / "fixtures" / "speech" / "refund.wav"))  # load the model first
    errors = total = 0
    audio = cpu = 0.0
    for n, text in enumerate(SENTENCES):
        path = make(f"s{n}", text, tmp)
        files.append(path)
        t0 = time.process_time()
        hyp = transcribe_file(str(path)).text
        cpu += time.process_time() - t0
        audio += seconds(path)
        ref = words(text)
        e = edit_distance(ref, words(hyp))
        errors += e
        total += len(ref)
        lines.append(f"  espeak-ng {text!r} -> {hyp!r} ({e}/{len(ref)} errors)")
    lines.insert(0, f"wer espeak-ng 8kHz sentences={len(SENTENCES)} words={total} wer={errors / total:.1%}")
    inserted = 0
    for wav in sorted(ASTERISK_WAVS.glob("*.wav")):
        t0 = time.process_time()
        hyp = transcribe_file(str(wav)).text
        cpu += time.process_time() - t0
        audio += seconds(wav)
        inserted += len(words(hyp))
        lines.append(f"  asterisk {wav.name} {seconds(wav):.1f}s (no speech) -> {hyp!r}")
    lines.append(f"asterisk wavs={len(list(ASTERISK_WAVS.glob('*.wav')))} words_inserted={inserted}")
    lines.append(f"speed audio_s={audio:.1f} cpu_s={cpu:.2f} audio_seconds_per_cpu_second={audio / cpu:.2f}")
    return lines, files


async def lookups(client: TestClient, token: str, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        resp = await client.get(
            "/api/v1/contacts",
            params={"phone": f"(555) 010-{i % 50:04d}"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 200
        await resp.read()
        out.append(time.perf_counter() - t0)
        await asyncio.sleep(0.02)
    return out


async def backlog(tmp: Path, files: list[Path], size: int, workers: int) -> list[str]:
    settings = load_settings(env={})
    settings.store.url = f"sqlite:///{tmp / 'bench.db'}"
    settings.recordings.storage_dir = str(tmp / "store")
    settings.recordings.transcribe = True
    settings.recordings.transcribe_workers = workers
    async with TestClient(TestServer(create_app(settings))) as client:
        app = client.app
        store = app[STORE]
        for i in range(50):
            await store.contacts.create(
                validate_contact({"first_name": f"C{i}", "phones": [f"+1555010{i:04d}"]}, region="US")
            )
        maria = await store.users.add("maria", role="manager", password="bench-password-1")
        token = await store.users.create_token(maria.id, "bench")
        async with LoopLag() as idle_lag:
            idle = await lookups(client, token, 200)
        incoming = tmp / "incoming"
        incoming.mkdir()
        audio = 0.0
        for i in range(size):
            src = files[i % len(files)]
            shutil.copy(src, incoming / f"b{i}.wav")
            audio += seconds(src)
        service = app[RECORDINGS]
        t0 = time.perf_counter()
        async with LoopLag() as busy_lag:
            for i in range(size):
                await service.ingest(incoming / f"b{i}.wav")
            busy: list[float] = []
            while (c := await store.transcripts.counts())["done"] + c["failed"] < size:
                busy += await lookups(client, token, 20)
        wall = time.perf_counter() - t0
    ms = 1000
    return [
        f"backlog recordings={size} audio_s={audio:.0f} workers={workers} drained_in_s={wall:.1f}"
        f" audio_seconds_per_wall_second={audio / wall:.2f}",
        f"loop idle max_stall_ms={idle_lag.max_stall * ms:.1f} lookup p50_ms={pct(idle, 50) * ms:.2f}"
        f" p99_ms={pct(idle, 99) * ms:.2f} max_ms={max(idle) * ms:.2f}",
        f"loop while transcribing max_stall_ms={busy_lag.max_stall * ms:.1f} lookups={len(busy)}"
        f" p50_ms={pct(busy, 50) * ms:.2f} p99_ms={pct(busy, 99) * ms:.2f} max_ms={max(busy) * ms:.2f}",
    ]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backlog", type=int, default=100)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        lines, files = accuracy(tmp)
        lines += await backlog(tmp, files, args.backlog, args.workers)
    report(lines)


if __name__ == "__main__":
    asyncio.run(main())
