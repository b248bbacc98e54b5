"""Speech to text on this machine: PocketSphinx (its US English model ships in the wheel) in a
bounded process pool, so decoding never holds the event loop.

Install with `pip install 'switchboard[transcripts]'`; nothing is downloaded at run time.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recordings.audio import AudioError, read_wav_mono16, resample

ENGINE_RATE = 16000  # the en-us acoustic model is wideband
EXTRA_HINT = "pip install 'switchboard[transcripts]'"
_ALT = re.compile(r"\(\d+\)$")  # the dictionary's alternate pronunciations: refund(2)


class TranscriptionError(Exception):
    """One file could not be transcribed (the reason is kept on its job; the others go on)."""


class TranscriberUnavailable(TranscriptionError, ImportError):
    """The speech engine is not installed (the `transcripts` extra)."""


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float  # seconds from the start of the recording
    end: float


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of speech between pauses, as the engine's voice activity detector cut it."""

    start: float
    end: float
    words: tuple[Word, ...]

    @property
    def text(self) -> str:
        return " ".join(w.word for w in self.words)


@dataclass(frozen=True, slots=True)
class Transcript:
    segments: tuple[Segment, ...]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.words)

    def as_json(self) -> list[dict[str, Any]]:
        """Segments with their words and times, as the store keeps them."""
        return [
            {
                "start": round(s.start, 2),
                "end": round(s.end, 2),
                "words": [[w.word, round(w.start, 2), round(w.end, 2)] for w in s.words],
            }
            for s in self.segments
            if s.words
        ]


def available() -> bool:
    """Whether PocketSphinx can be imported here."""
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


class _Engine:
    """One decoder and voice activity segmenter, made once per worker process (model load is slow)."""

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder, Segmenter
        except ImportError:
            raise TranscriberUnavailable(f"PocketSphinx is not installed: {EXTRA_HINT}") from None
        self.decoder = Decoder(samprate=ENGINE_RATE, logfn="/dev/null")
        self._segmenter = Segmenter
        self.frame_rate = int(self.decoder.config["frate"])

    def transcribe(self, pcm: bytes) -> Transcript:
        segments: list[Segment] = []
        for speech in self._segmenter(sample_rate=ENGINE_RATE).segment(io.BytesIO(pcm)):
            d = self.decoder
            d.start_utt()
            d.process_raw(speech.pcm, full_utt=True)
            d.end_utt()
            words = tuple(
                Word(
                    _ALT.sub("", s.word),
                    speech.start_time + s.start_frame / self.frame_rate,
                    speech.start_time + (s.end_frame + 1) / self.frame_rate,
                )
                for s in d.seg()
                if not s.word.startswith(("<", "["))
            )
            segments.append(Segment(speech.start_time, speech.end_time, words))
        return Transcript(tuple(segments))


_engine: _Engine | None = None  # per worker process: set by the pool's initializer


def _init_worker() -> None:
    global _engine
    _engine = _Engine()


def transcribe_file(path: str) -> Transcript:
    """Blocking: the transcript of one WAV file (any rate, resampled for the engine)."""
    global _engine
    if _engine is None:
        _engine = _Engine()
    try:
        samples, rate = read_wav_mono16(Path(path))
    except AudioError as exc:
        raise TranscriptionError(str(exc)) from None
    return _engine.transcribe(resample(samples, rate, ENGINE_RATE).tobytes())


class PocketSphinxTranscriber:
    """Transcribes in at most `workers` processes; each holds one loaded model."""

    def __init__(self, workers: int = 1) -> None:
        if not available():
            raise TranscriberUnavailable(f"PocketSphinx is not installed: {EXTRA_HINT}")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: a forked child would inherit the event loop's and the store's threads mid-flight
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
            )
        return self._pool

    async def transcribe(self, path: Path) -> Transcript:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), transcribe_file, str(path))
        except BrokenProcessPool:
            # a worker died (out of memory, a crash in the engine): start a fresh pool next time
            self.close()
            raise TranscriptionError("the transcriber process died on this file") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
