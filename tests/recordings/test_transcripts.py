"""Transcripts: a spoken recording (espeak-ng, 8 kHz like Asterisk's) is transcribed on this machine by
PocketSphinx, found by a word it says, and shown with times; the queue survives restarts."""

from __future__ import annotations

import asyncio
import math
import shutil
import sys
import wave
from array import array
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from crm_link.clock import ManualClock
from crm_link.recordings import transcript_snippet
from crm_link.store import Store
from recordings.audio import read_wav_mono16, resample
from recordings.service import RecordingService
from recordings.transcribe import Segment, Transcript, Word, available
from recordings.transcripts import TranscriptWorker
from switchboard.app import create_app
from switchboard.keys import RECORDINGS, STORE
from switchboard.settings import SettingsError, load_settings
from tests.browser import login
from tests.conftest import FIXTURES, PASSWORD, make_api
from tests.recordings.test_recordings import make_wav

SPEECH = FIXTURES / "speech" / "refund.wav"  # "My brakes are squeaking. I want a refund." (make.py)
needs_engine = pytest.mark.skipif(
    not available(), reason="PocketSphinx is not installed: pip install 'switchboard[transcripts]'"
)


async def _until(check: Any, timeout: float = 60) -> Any:
    async with asyncio.timeout(timeout):
        while not (out := await check()):
            await asyncio.sleep(0.05)
    return out


# --- audio ---------------------------------------------------------------------------------------


def _sine(rate: int, hz: float, seconds: float) -> array[int]:
    return array(
        "h", (round(8000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(int(rate * seconds)))
    )


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (22050, 16000), (8000, 11025), (16000, 8000)])
def test_resampling_keeps_a_tone_at_its_pitch(src: int, dst: int) -> None:
    """A 300 Hz tone resampled is the same tone at the new rate (error well under 5% of its level)."""
    out = resample(_sine(src, 300, 0.5), src, dst)
    assert abs(len(out) - dst // 2) <= 1
    ideal = _sine(dst, 300, 0.5)
    lag = 0 if src < dst else (-(-src // dst) - 1) / 2 * dst / src  # the low-pass's delay, in samples
    err = [
        abs(out[i] - round(8000 * math.sin(2 * math.pi * 300 * (i - lag) / dst)))
        for i in range(20, len(ideal) - 20)
    ]
    assert max(err) < 400, max(err)


def test_stereo_and_8_bit_are_read_as_16_bit_mono(tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "s.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(array("h", [1000, 3000, -2000, -4000]).tobytes())
    assert read_wav_mono16(tmp_path / "s.wav") == (array("h", [2000, -3000]), 8000)
    with wave.open(str(tmp_path / "b.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes([128, 255, 0]))
    assert list(read_wav_mono16(tmp_path / "b.wav")[0]) == [0, 127 << 8, -128 << 8]


def test_snippet_marks_the_words_searched_for() -> None:
    parts = transcript_snippet("my break on tweaking i want a refund", "REFUND Brea")
    assert parts is not None
    assert [p["text"] for p in parts if p["hit"]] == ["break", "refund"]
    assert "".join(p["text"] for p in parts) == "my break on tweaking i want a refund"
    assert transcript_snippet("my break on tweaking", "manager") is None


def test_enabling_transcripts_without_the_extra_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # as if not installed
    with pytest.raises(SettingsError) as err:
        load_settings(env={"SWITCHBOARD_RECORDINGS_TRANSCRIBE": "true"})
    assert err.value.key == "recordings.transcribe"
    assert "switchboard[transcripts]" in str(err.value)
    with pytest.raises(SettingsError) as err:
        load_settings(env={"SWITCHBOARD_RECORDINGS_TRANSCRIBE_WORKERS": "0"})
    assert err.value.key == "recordings.transcribe_workers"


# --- the durable queue -----------------------------------------------------------------------------


class CountingTranscriber:
    """Says the file's name; counts calls per file; fails the files it is told to."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.calls: dict[str, int] = {}
        self.fail = fail

    async def transcribe(self, path: Path) -> Transcript:
        self.calls[path.name] = self.calls.get(path.name, 0) + 1
        if path.name in self.fail:
            raise RuntimeError("decoder exploded")
        return Transcript((Segment(0.0, 1.0, (Word("hello", 0.1, 0.4), Word(path.stem, 0.5, 0.9))),))


async def _three_recordings(store: Store, tmp_path: Path) -> tuple[RecordingService, list[int]]:
    monitor = tmp_path / "pbx"
    monitor.mkdir(exist_ok=True)
    service = RecordingService(store, watch_dir=monitor, storage_dir=tmp_path / "store")
    ids = []
    for n in range(3):
        make_wav(monitor / f"r{n}.wav", 0.5)
        ids.append(await service.ingest(monitor / f"r{n}.wav"))
    return service, ids


async def test_a_restart_mid_backlog_resumes_and_nothing_is_transcribed_twice(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 3, 2, 15, 0, tzinfo=UTC))
    db = str(tmp_path / "q.db")
    counting = CountingTranscriber()
    async with Store(db, clock=clock) as store:
        _, ids = await _three_recordings(store, tmp_path)
        first = TranscriptWorker(store, counting, tmp_path / "store", lease=timedelta(seconds=60))
        assert await first.run_once() == 1  # the first recording is done
        # a worker claims the second and dies with it (the process is killed: no release)
        assert [j["recording_id"] for j in await store.transcripts.claim(1, timedelta(seconds=60))] == [
            ids[1]
        ]
        assert await store.transcripts.counts() == {"queued": 1, "working": 1, "done": 1, "failed": 0}

    async with Store(db, clock=clock) as store:  # the restart
        again = TranscriptWorker(store, counting, tmp_path / "store", lease=timedelta(seconds=60))
        await again.run_backlog()  # the third; the second is still leased to the dead worker
        assert await store.transcripts.counts() == {"queued": 0, "working": 1, "done": 2, "failed": 0}
        clock.advance(seconds=61)  # its lease runs out: taken again
        await again.run_backlog()
        assert await store.transcripts.counts() == {"queued": 0, "working": 0, "done": 3, "failed": 0}
        await again.run_backlog()  # nothing left to do
    stored = {p.name for p in (tmp_path / "store").rglob("*.wav")}
    assert counting.calls == dict.fromkeys(stored, 1)
    async with Store(db, clock=clock) as store:
        rec = await store.recordings.get(ids[1])
        assert rec["transcript"].startswith("hello ")
        assert rec["transcript_segments"][0]["words"][0] == ["hello", 0.1, 0.4]


async def test_a_stopped_worker_gives_its_jobs_back(tmp_path: Path) -> None:
    class Stuck:
        started = asyncio.Event()

        async def transcribe(self, path: Path) -> Transcript:
            self.started.set()
            await asyncio.Event().wait()
            raise AssertionError

    async with Store(str(tmp_path / "q.db")) as store:
        await _three_recordings(store, tmp_path)
        stuck = Stuck()
        worker = TranscriptWorker(store, stuck, tmp_path / "store", concurrency=2)
        task = asyncio.create_task(worker.run())
        await stuck.started.wait()
        assert (await store.transcripts.counts())["working"] == 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await store.transcripts.counts() == {"queued": 3, "working": 0, "done": 0, "failed": 0}


async def test_a_file_the_transcriber_fails_on_is_marked_and_the_rest_go_on(tmp_path: Path) -> None:
    async with Store(str(tmp_path / "q.db")) as store:
        _, ids = await _three_recordings(store, tmp_path)
        bad = Path((await store.recordings.get(ids[1]))["_storage_path"]).name
        worker = TranscriptWorker(store, CountingTranscriber(fail=(bad,)), tmp_path / "store")
        counts = await worker.run_backlog()
        assert counts == {"queued": 0, "working": 0, "done": 2, "failed": 1}
        job = await store.transcripts.job(ids[1])
        assert job is not None and job["state"] == "failed" and "decoder exploded" in job["error"]
        assert (await store.recordings.get(ids[2]))["transcript"]


# --- the real engine, end to end -------------------------------------------------------------------


@pytest.fixture
async def tx_app(aiohttp_server: Any, aiohttp_client: Any, settings: Any) -> Any:
    settings.recordings.transcribe = True
    server = await aiohttp_server(create_app(settings))
    return await aiohttp_client(server)


async def _speak(client: Any, tmp_path: Path) -> int:
    """Index the spoken recording as the PBX's directory watcher would."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    shutil.copy(SPEECH, incoming / "1795349999.7.wav")
    rid: int = await client.server.app[RECORDINGS].ingest(incoming / "1795349999.7.wav")
    return rid


@needs_engine
async def test_a_spoken_recording_is_found_by_a_word_it_says(tx_app: Any, tmp_path: Path) -> None:
    manager = await make_api(tx_app, "maria", "manager")
    rid = await _speak(tx_app, tmp_path)

    async def found() -> Any:
        body = await (await manager.get("/api/v1/recordings", params={"q": "refund"})).json()
        return body["items"]

    (item,) = await _until(found)
    assert item["id"] == rid and item["has_transcript"]
    assert [p["text"] for p in item["transcript_match"] if p["hit"]] == ["refund"]
    rec = await (await manager.get(f"/api/v1/recordings/{rid}")).json()
    assert "want a refund" in rec["transcript"]
    words = {w[0]: w[1] for seg in rec["transcript_segments"] for w in seg["words"]}
    assert 3.0 < words["refund"] < 4.7  # said after the pause, about 3.9 s in
    assert len(rec["transcript_segments"]) == 2  # the pause splits the two sentences
    progress = await (await manager.get("/api/v1/recordings/transcripts")).json()
    assert progress == {"enabled": True, "counts": {"queued": 0, "working": 0, "done": 1, "failed": 0}}
    none = await (await manager.get("/api/v1/recordings", params={"q": "manager"})).json()
    assert none["items"] == []


@needs_engine
@pytest.mark.browser
async def test_the_page_marks_the_word_and_its_time_jumps_the_player(
    tx_app: Any, tmp_path: Path, browser: Any
) -> None:
    store = tx_app.server.app[STORE]
    await store.users.add("maria", role="manager", password=PASSWORD)
    await _speak(tx_app, tmp_path)
    await _until(lambda: _done(store))
    base = str(tx_app.make_url("")).rstrip("/")
    shots = Path("/tmp/shots/transcripts")
    shots.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page = await browser.new_page(viewport={"width": width, "height": 900})
        await login(page, base, "maria", PASSWORD)
        await page.goto(base + "/recordings")
        await page.fill("#rec-filters input[name=q]", "refund")
        await page.click("#rec-filters button[type=submit]")
        row = page.locator("#rec-results tbody tr")
        await row.locator("mark", has_text="refund").wait_for()
        assert await row.count() == 1
        await row.locator("button.play").click()
        segs = page.locator("#rec-segments li")
        await segs.nth(1).wait_for()
        assert await page.locator("#rec-segments mark").all_inner_texts() == ["refund"]
        await segs.nth(1).locator("button.at").click()
        await page.wait_for_function(
            "() => document.getElementById('rec-player').currentTime >= 2.5", timeout=10_000
        )
        await page.wait_for_function(
            "() => document.querySelector('#rec-segments li.playing') !== null", timeout=10_000
        )
        await page.evaluate("() => document.getElementById('rec-player').pause()")
        await page.screenshot(path=str(shots / f"recordings-{width}.png"), full_page=True)
        await page.close()


async def _done(store: Store) -> bool:
    return (await store.transcripts.counts())["done"] == 1


@needs_engine
def test_cli_transcribes_the_backlog_with_a_progress_bar(tmp_path: Path) -> None:
    """`switchboard recordings transcribe` works the queue here and now; a second run finds nothing to do."""
    from tests.test_cli import run

    monitor = tmp_path / "monitor"
    monitor.mkdir()
    shutil.copy(SPEECH, monitor / "a.wav")
    make_wav(monitor / "b.wav", 0.5)  # a tone: no words, still done once
    run(tmp_path, "init", "--admin-password", "pw-123456789")
    run(tmp_path, "recordings", "reindex", str(monitor))
    first = run(tmp_path, "recordings", "transcribe")
    assert "transcribe [" in first.stderr
    assert "transcripts: 0 queued, 0 working, 2 done, 0 failed" in first.stdout
    watch = run(tmp_path, "recordings", "transcribe", "--watch", "--interval", "0.1")
    assert "transcripts: idle; 0 queued, 0 working, 2 done, 0 failed" in watch.stdout
