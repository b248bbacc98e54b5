"""PCM audio for the transcriber: read a WAV as 16-bit mono samples, change its sample rate.

Pure and blocking (it runs in the transcription worker processes); standard library only.
"""

from __future__ import annotations

import sys
import wave
from array import array
from pathlib import Path


class AudioError(ValueError):
    """A file the transcriber cannot read as PCM audio (its reason says why)."""


def read_wav_mono16(path: Path) -> tuple[array[int], int]:
    """(samples, rate): a PCM WAV as signed 16-bit mono samples (channels averaged, 8-bit widened)."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioError(f"not a PCM WAV file: {exc}") from None
    if width == 2:
        samples = array("h")
        samples.frombytes(raw[: len(raw) - len(raw) % 2])
        if sys.byteorder == "big":
            samples.byteswap()
    elif width == 1:  # unsigned 8-bit
        samples = array("h", ((b - 128) << 8 for b in raw))
    else:
        raise AudioError(f"{width * 8}-bit samples are not supported (16 or 8)")
    if channels > 1:
        frames = len(samples) // channels
        samples = array(
            "h", (sum(samples[i * channels : (i + 1) * channels]) // channels for i in range(frames))
        )
    return samples, rate


def _clip(v: int) -> int:
    return -32768 if v < -32768 else 32767 if v > 32767 else v


def upsample2(x: array[int]) -> array[int]:
    """Twice the rate: the input samples kept, a 4-tap half-band (cubic) interpolation between them."""
    n = len(x)
    out = array("h", bytes(4 * n))
    if n == 0:
        return out
    out[0::2] = x
    # neighbours x[i-1], x[i], x[i+1], x[i+2] (edges repeated), weights -1, 9, 9, -1 over 16
    prev = array("h", x[:1]) + x[:-1]
    nxt = x[1:] + array("h", x[-1:])
    nxt2 = x[2:] + array("h", x[-1:]) * min(2, n)
    out[1::2] = array(
        "h", (_clip((9 * (b + c) - a - d + 8) >> 4) for a, b, c, d in zip(prev, x, nxt, nxt2, strict=False))
    )
    return out


def resample(x: array[int], src: int, dst: int) -> array[int]:
    """`x` at `src` Hz as samples at `dst` Hz.

    Doubling (Asterisk's 8 kHz to the engine's 16 kHz) uses the half-band interpolator; any other
    ratio interpolates linearly, after a moving-average low-pass when the rate goes down (so what is
    above the new Nyquist frequency is damped instead of folding back as noise).
    """
    if src <= 0 or dst <= 0:
        raise AudioError(f"bad sample rate {src} -> {dst}")
    if src == dst or not x:
        return array("h", x)
    if dst == 2 * src:
        return upsample2(x)
    if src > dst:
        width = -(-src // dst)  # ceil
        acc, run = 0, []
        for i, v in enumerate(x):
            acc += v
            if i >= width:
                acc -= x[i - width]
            run.append(acc // min(i + 1, width))
        x = array("h", run)
    n_out = len(x) * dst // src
    step = src / dst
    last = len(x) - 1
    out = array("h", bytes(2 * n_out))
    for j in range(n_out):
        pos = j * step
        i = int(pos)
        frac = pos - i
        a = x[i]
        b = x[i + 1] if i < last else a
        out[j] = _clip(round(a + (b - a) * frac))
    return out
