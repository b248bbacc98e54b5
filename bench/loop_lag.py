"""The event loop's longest stall while big jobs run, measured by a task that sleeps 10 ms in a loop.

    python bench/loop_lag.py [--recipients 10000] [--recordings 500] [--files 20000]

Everything runs in the service's own loop, through HTTP where a user would start it:
a mail merge (`POST /api/v1/email/send`, queueing, then the outbox loop sending to aiosmtpd on
loopback), a recordings export (`POST /api/v1/recordings/export`, 1 MB files), and one pass of the
recording watcher over a directory of many files. Figures are printed, not asserted (the tests
hold a generous bound; these are the measured values).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import SmtpCountingSink as Sink
from _common import free_port, report
from aiohttp.test_utils import TestClient, TestServer
from aiosmtpd.controller import Controller

from crm_link.contacts import ContactFields
from recordings.service import RecordingService
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.settings import load_settings
from tests.loop_lag import LoopLag

HTML = (
    "<html><body><p>Dear {{ contact.first_name }} {{ contact.last_name }},</p>"
    + "<p>Thank you for choosing us for your {{ contact.attributes.vehicle }}. " * 12
    + "</p><p>{{ user.name }}</p></body></html>"
)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=10_000)
    ap.add_argument("--recordings", type=int, default=500)
    ap.add_argument("--files", type=int, default=20_000)
    args = ap.parse_args()
    lines = []
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        settings = load_settings(env={})
        settings.store.url = f"sqlite:///{tmp / 'bench.db'}"
        settings.recordings.storage_dir = str(tmp / "recordings")
        settings.smtp.port = port
        settings.smtp.rate_per_second = 0
        client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        try:
            store = client.app[STORE]
            user = await store.users.add("kim", role="marketing", password="bench-pass-1")
            headers = {"Authorization": f"Bearer {await store.users.create_token(user.id, 'bench')}"}
            n = args.recipients
            await store.contacts.bulk_insert(
                [
                    ContactFields(
                        first_name=f"P{i}",
                        last_name="Doe",
                        email=f"p{i}@example.com",
                        attributes={"vehicle": "2024 Civic"},
                    )
                    for i in range(n)
                ]
            )
            resp = await client.post(
                "/api/v1/email/templates",
                json={"name": "b", "subject": "Hi {{ contact.first_name }}", "html": HTML},
                headers=headers,
            )
            tpl = await resp.json()
            t = time.perf_counter()
            async with LoopLag() as queueing:
                resp = await client.post(
                    "/api/v1/email/send",
                    json={"template_id": tpl["id"], "contact_ids": list(range(1, n + 1))},
                    headers=headers,
                )
                job_id = (await resp.json())["id"]
            queued_s = time.perf_counter() - t
            async with LoopLag() as sending:
                while (job := await store.email.job(job_id))["state"] != "done":  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            sent_s = time.perf_counter() - t - queued_s
            assert job["counts"]["sent"] == n, job
            lines.append(
                f"loop_lag mail_merge recipients={n} queue_s={queued_s:.1f} max_stall_ms={queueing.max_stall_ms:.0f} max_busy_ms={queueing.max_busy_ms:.0f}"
            )
            lines.append(
                f"loop_lag mail_merge_sending recipients={n} send_s={sent_s:.1f} max_stall_ms={sending.max_stall_ms:.0f} max_busy_ms={sending.max_busy_ms:.0f}"
            )

            storage = Path(settings.recordings.storage_dir) / "bench"
            storage.mkdir(parents=True)
            audio = os.urandom(1 << 20)
            ids = []
            for i in range(args.recordings):
                data = audio[:-4] + i.to_bytes(4, "big")
                (storage / f"{i}.wav").write_bytes(data)
                ids.append(
                    await store.recordings.store_file(
                        "asterisk",
                        f"{i}.wav",
                        storage_path=f"bench/{i}.wav",
                        size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(),
                        fmt="wav",
                        duration_s=60.0,
                        state="indexed",
                        mtime=datetime.now(UTC),
                    )
                )
            manager = await store.users.add("maria", role="manager", password="bench-pass-1")
            mh = {"Authorization": f"Bearer {await store.users.create_token(manager.id, 'bench')}"}
            t = time.perf_counter()
            async with LoopLag() as exporting:
                resp = await client.post("/api/v1/recordings/export", json={"ids": ids}, headers=mh)
                body = await resp.read()
            assert resp.status == 200
            lines.append(
                f"loop_lag recordings_export recordings={len(ids)} zip_mb={len(body) / 1e6:.0f}"
                f" seconds={time.perf_counter() - t:.1f} max_stall_ms={exporting.max_stall_ms:.0f} max_busy_ms={exporting.max_busy_ms:.0f}"
            )

            monitor = tmp / "monitor"
            monitor.mkdir()
            for i in range(args.files):
                (monitor / f"{i}.wav").write_bytes(b"RIFF")
            service = RecordingService(store, watch_dir=monitor, storage_dir=tmp / "store")
            t = time.perf_counter()
            async with LoopLag() as scanning:
                scan = await service.scan_once()
            lines.append(
                f"loop_lag recordings_watch_scan files={scan.seen} seconds={time.perf_counter() - t:.1f}"
                f" max_stall_ms={scanning.max_stall_ms:.0f} max_busy_ms={scanning.max_busy_ms:.0f}"
            )
        finally:
            await client.close()
            controller.stop()
    report(lines)


if __name__ == "__main__":
    asyncio.run(main())
