"""Recording ingest: link each MixMonitor file to its call, copy it to our storage, index it."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import stat
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from crm_link.clock import system_clock
from crm_link.db import to_db_time
from crm_link.store import Store

log = logging.getLogger("recordings")

AUDIO_SUFFIXES = {".wav": "wav", ".WAV": "wav", ".mp3": "mp3", ".gsm": "gsm", ".ogg": "ogg"}


@dataclass(slots=True)
class ScanReport:
    seen: int = 0
    indexed: int = 0
    waiting: int = 0
    skipped: int = 0
    refused: int = 0  # links and other non-files: never read
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DirEntry:
    """A plain audio file directly in the watched directory, as `lstat` saw it."""

    name: str
    path: Path
    size: int
    mtime: float


class DownloadRefused(Exception):
    """A remote recording's URL is not one we send the provider's credentials to; not retried."""


class NotAPlainFile(OSError):
    """A path that is a symbolic link, a directory, a device or a pipe: never read as a recording."""


def list_audio(directory: Path) -> tuple[list[DirEntry], list[str]]:
    """The audio files directly in `directory`, and the audio-named entries refused (links, non-files).

    Blocking (run it in a thread): a PBX directory can hold many thousands of files. Links are never
    followed: a link named like a recording may point anywhere on the machine.
    """
    files: list[DirEntry] = []
    refused: list[str] = []
    with os.scandir(directory) as it:
        for entry in it:
            if Path(entry.name).suffix not in AUDIO_SUFFIXES:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # gone since the listing
                continue
            if stat.S_ISREG(st.st_mode):
                files.append(DirEntry(entry.name, Path(entry.path), st.st_size, st.st_mtime))
            else:
                refused.append(entry.name)
    return files, refused


def open_plain_file(path: Path) -> int:
    """A read descriptor on `path` if it is a regular file itself (a link is refused, not followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise NotAPlainFile(errno.ELOOP, "a symbolic link, not a file", str(path)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotAPlainFile(errno.EINVAL, "not a regular file", str(path))
    return fd


def safe_name(pbx_path: str) -> str | None:
    """The file name a PBX path ends in, if it is a plain name (it is only ever compared, never joined)."""
    name = PurePosixPath(pbx_path.replace("\\", "/")).name
    if not name or name in (".", "..") or "\x00" in name or name.startswith("."):
        return None
    return name


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def inspect_audio(path: Path, fmt: str) -> tuple[str, float | None]:
    """(state, duration): `indexed`, `empty` (no audio: nothing was bridged) or `truncated`."""
    if fmt != "wav":
        return "indexed", None
    try:
        with wave.open(str(path), "rb") as w:
            frames, rate, width, channels = (
                w.getnframes(),
                w.getframerate(),
                w.getsampwidth(),
                w.getnchannels(),
            )
    except (wave.Error, EOFError):
        return "truncated", None
    if frames == 0:
        return "empty", 0.0
    expected = frames * width * channels
    actual = path.stat().st_size - 44
    duration = frames / rate if rate else None
    if actual + 1 < expected:
        return "truncated", (actual / (width * channels) / rate) if rate else None
    return "indexed", duration


class RecordingService:
    """Announcements (from the call service), the directory watcher, and retention."""

    def __init__(
        self,
        store: Store,
        *,
        watch_dir: Path | None,
        storage_dir: Path,
        settle_seconds: float = 2.0,
        live_quiet_seconds: float = 6 * 3600.0,
        clock: Callable[[], datetime] = system_clock,
        on_indexed: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        # told each new recording's id (the transcript worker wakes up); never awaited by indexing
        self.on_indexed = on_indexed
        self.watch_dir = watch_dir
        self.storage_dir = storage_dir
        self.settle_seconds = settle_seconds
        # a file whose call never reported its end (Switchboard was down at the time) is taken
        # after this long without a write
        self.live_quiet_seconds = live_quiet_seconds
        self.clock = clock
        self._sizes: dict[str, int] = {}
        self._refused: set[str] = set()

    async def announce(self, call_id: str, pbx_path: str, *, source: str = "asterisk") -> None:
        name = safe_name(pbx_path)
        if name is None:
            log.warning("event=recording_bad_name call=%s", call_id)
            return
        await self.store.recordings.announce(source, name, f"{source}:{call_id}")

    async def remember_remote(self, source: str, recording_sid: str, call_id: str, url: str) -> None:
        name = safe_name(f"{recording_sid}.wav")
        if name is None:
            raise ValueError("RecordingSid: not a plain identifier")
        await self.store.recordings.remember_remote(source, name, f"{source}:{call_id}", url)

    async def download_pending(
        self, fetch: Callable[[str], Any], *, attempts: int = 5, backoff: float = 1.0
    ) -> int:
        """Fetch every remembered remote recording (retrying with backoff); how many were stored.

        `fetch` raises `DownloadRefused` for a URL it will not send credentials to: the recording is
        marked with the reason and not tried again.
        """
        done = 0
        for row in await self.store.recordings.pending_downloads():
            data = await self._fetch(fetch, row, attempts, backoff)
            if data is None:
                continue
            tmp = self.storage_dir / "incoming" / row["pbx_name"]
            await asyncio.to_thread(_write, tmp, data)
            try:
                await self.ingest(tmp, source=row["source"])
            finally:
                await asyncio.to_thread(tmp.unlink, True)
            done += 1
        return done

    async def _fetch(
        self, fetch: Callable[[str], Any], row: dict[str, Any], attempts: int, backoff: float
    ) -> bytes | None:
        for attempt in range(attempts):
            try:
                data: bytes = await fetch(row["remote_url"])
                return data
            except DownloadRefused as exc:
                log.warning("event=recording_download_refused name=%s reason=%r", row["pbx_name"], str(exc))
                await self.store.recordings.refuse_download(row["source"], row["pbx_name"], str(exc))
                return None
            except Exception as exc:  # the pointer stays; the next pass tries again
                log.warning(
                    "event=recording_download_failed name=%s attempt=%d error=%r",
                    row["pbx_name"],
                    attempt + 1,
                    exc,
                )
                await asyncio.sleep(backoff * 2**attempt)
        return None

    async def call_finished(self, call_id: str, *, source: str = "asterisk", **facts: Any) -> None:
        started = facts.get("started_at")
        if isinstance(started, datetime):
            facts["started_at"] = to_db_time(started)
        await self.store.recordings.call_facts(f"{source}:{call_id}", facts)

    def _copy(self, src: Path, fmt: str, rel: Path | None = None) -> tuple[str, int, str, float]:
        now = self.clock()
        fin = os.fdopen(open_plain_file(src), "rb")
        with fin:
            mtime = os.fstat(fin.fileno()).st_mtime
            # a file read again replaces its earlier copy: one copy per recording
            rel = rel or Path(f"{now:%Y}") / f"{now:%m}" / f"{uuid.uuid4().hex}.{fmt}"
            dest = self.storage_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            tmp = dest.with_suffix(".part")
            with tmp.open("wb") as fout:
                while chunk := fin.read(1 << 16):
                    digest.update(chunk)
                    fout.write(chunk)
        tmp.replace(dest)
        return str(rel), dest.stat().st_size, digest.hexdigest(), mtime

    async def ingest(self, path: Path, source: str = "asterisk", *, settled: bool = True) -> int:
        """Copy one complete file into storage under a name we make (the same name again when it is
        read again), and index it; `settled`: judged after its call ended, so its state is final."""
        fmt = AUDIO_SUFFIXES[path.suffix]
        known = await self.store.recordings.by_name(source, path.name)
        earlier = known["storage_path"] if known and known["storage_path"] else None
        if earlier is not None and Path(earlier).suffix != f".{fmt}":
            earlier = None
        rel, size, sha, mtime_s = await asyncio.to_thread(
            self._copy, path, fmt, Path(earlier) if earlier else None
        )
        state, duration = await asyncio.to_thread(inspect_audio, self.storage_dir / rel, fmt)
        mtime = datetime.fromtimestamp(mtime_s, UTC)
        rid = await self.store.recordings.store_file(
            source,
            path.name,
            storage_path=rel,
            size=size,
            sha256=sha,
            fmt=fmt,
            duration_s=duration,
            state=state,
            mtime=mtime,
            settled=settled,
        )
        log.info("event=recording_indexed id=%d state=%s size=%d", rid, state, size)
        if self.on_indexed is not None and state == "indexed":
            self.on_indexed(rid)
        return rid

    async def scan_once(
        self,
        directory: Path | None = None,
        *,
        force: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> ScanReport:
        """Index the complete, not yet indexed audio files of a directory (the PBX's, by default).

        MixMonitor writes a call's file until the call ends (with option `b` it does not even grow
        while the caller waits), so a file whose call was announced is left alone while the call is
        up, and taken once the call has ended and its size held for one scan. A file no call
        announced counts as complete when its size held and it was not written to for
        `settle_seconds`. A file judged while its call was still up (a forced reindex, or one from
        before this rule) is judged again once the call has ended. `force` (a reindex) takes every
        file as it is.
        """
        directory = directory or self.watch_dir
        report = ScanReport()
        if directory is None or not await asyncio.to_thread(directory.is_dir):
            return report
        entries, refused = await asyncio.to_thread(list_audio, directory)
        for name in refused:
            report.seen += 1
            report.refused += 1
            report.errors.append(f"{name}: a link or not a plain file, never read")
            if name not in self._refused:  # said once, not at every poll
                self._refused.add(name)
                log.warning("event=recording_refused name=%r reason=not_a_plain_file", name)
        now = self.clock().timestamp()
        total = len(entries) + len(refused)
        if refused and progress is not None:
            progress(len(refused), total)
        for n, entry in enumerate(entries, start=len(refused) + 1):
            report.seen += 1
            known = await self.store.recordings.by_name("asterisk", entry.name)
            call_key = known["call_key"] if known else None
            ended = call_key is not None and await self.store.recordings.call_has_ended(call_key)
            stable = self._sizes.get(entry.name) == entry.size
            if (
                known is not None
                and known["storage_path"]
                and known["size"] == entry.size
                and (known["settled"] or not ended or force)
            ):
                report.skipped += 1  # final, or judged again once its call has ended
            elif not force and (
                # MixMonitor is still writing it
                (call_key is not None and not ended and now - entry.mtime < self.live_quiet_seconds)
                or not stable
                or (call_key is None and now - entry.mtime < self.settle_seconds)
            ):
                self._sizes[entry.name] = entry.size
                report.waiting += 1
            else:
                try:
                    await self.ingest(entry.path, settled=call_key is None or ended)
                    report.indexed += 1
                    self._sizes.pop(entry.name, None)
                except NotAPlainFile as exc:  # swapped for a link since the listing
                    report.refused += 1
                    report.errors.append(f"{entry.name}: {exc.strerror}, never read")
                    log.warning("event=recording_refused name=%r reason=%s", entry.name, exc.strerror)
                except OSError as exc:
                    report.errors.append(f"{entry.name}: {exc.strerror}")
            if progress is not None:
                progress(n, total)
        return report

    async def watch(self, poll_seconds: float) -> None:
        """Poll the PBX's directory for ever (catches files written while we were down, too)."""
        while True:
            try:
                await self.scan_once()
            except Exception:
                log.exception("event=recording_scan_failed")
            await asyncio.sleep(poll_seconds)

    async def apply_retention(self, days: int) -> int:
        """Delete audio older than `days` from our storage; each deletion goes to the audit log."""
        cutoff = self.clock() - timedelta(days=days)
        deleted = 0
        for row in await self.store.recordings.older_than(cutoff):
            with contextlib.suppress(FileNotFoundError):
                (self.storage_dir / row["storage_path"]).unlink()
            await self.store.recordings.mark_deleted(row["id"])
            await self.store.audit.write(
                "recording.retention_delete",
                user_id=None,
                object_type="recording",
                object_id=row["id"],
                days=days,
            )
            deleted += 1
        return deleted
