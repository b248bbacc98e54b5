"""Short generated call audio for the demo's simulated PBX (8 kHz mono WAV, like MixMonitor's)."""

from __future__ import annotations

import asyncio
import math
import struct
import wave
from pathlib import Path


def tone_wav(path: Path, seconds: float, *, rate: int = 8000) -> None:
    """Two voices taking turns: alternating tones with short pauses, then silence."""
    frames = bytearray()
    for i in range(int(max(seconds, 0) * rate)):
        t = i / rate
        turn = int(t / 1.5) % 2
        speaking = (t % 1.5) < 1.2
        f = 220.0 if turn == 0 else 330.0
        sample = int(6000 * math.sin(2 * math.pi * f * t)) if speaking else 0
        frames += struct.pack("<h", sample)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    tmp.replace(path)


async def record_demo_call(path: Path, seconds: float) -> None:
    """What the demo PBX calls when a call ends: write its recording."""
    await asyncio.to_thread(tone_wav, path, seconds)
