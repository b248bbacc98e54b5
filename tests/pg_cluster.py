"""A throwaway PostgreSQL cluster for tests: Debian's server binaries, initdb + pg_ctl in a temp dir,
on a free loopback port, run as an ordinary user (`postgres` when we are root: initdb refuses root).

    python -m tests.pg_cluster start DIR    # prints the URL of a superuser connection; DIR/url holds it
    python -m tests.pg_cluster stop DIR
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path


class ClusterError(RuntimeError):
    pass


def bin_dir() -> Path:
    """The newest installed PostgreSQL server's bin directory (Debian's postgresql package)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise ClusterError("no PostgreSQL server installed (apt-get install -y postgresql)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_user() -> list[str]:
    """Prefix running a command as an ordinary user (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterError("running as root and there is no 'postgres' user to run PostgreSQL as") from None
    return ["runuser", "-u", "postgres", "--"]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(
            f"{Path(cmd[cmd.index('--') + 1] if '--' in cmd else cmd[0]).name} failed: {proc.stderr.strip()}"
        )


def start(base: Path) -> str:
    """Create and start a cluster under `base`; the URL of its `postgres` superuser database."""
    base.mkdir(parents=True, exist_ok=True)
    data, run = base / "data", base / "run"
    run.mkdir(exist_ok=True)
    prefix = _as_user()
    if prefix:
        shutil.chown(base, "postgres")
        shutil.chown(run, "postgres")
        os.chmod(base, 0o755)
    bins = bin_dir()
    port = _free_port()
    _run(
        [*prefix, str(bins / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "--no-locale", "-E", "UTF8", "--no-sync"]
    )  # fmt: skip
    opts = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={run}"
        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    (base / "opts").write_text(opts)
    _pg_ctl_start(base)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    (base / "url").write_text(url + "\n")
    return url


def _pg_ctl_start(base: Path) -> None:
    opts = (base / "opts").read_text()
    _run(
        [*_as_user(), str(bin_dir() / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "log"),
         "-o", opts, "-w", "-t", "60", "start"]
    )  # fmt: skip


def restart(base: Path) -> str:
    """Start again a cluster `start` made and `stop` stopped: same data, same port; its URL."""
    _pg_ctl_start(base)
    return (base / "url").read_text().strip()


def stop(base: Path, mode: str = "fast") -> None:
    """Stop the cluster under `base` if it runs (`mode`: pg_ctl's smart, fast or immediate)."""
    data = base / "data"
    if not (data / "postmaster.pid").exists():
        return
    subprocess.run(
        [*_as_user(), str(bin_dir() / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"],
        check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


class PgDatabases:
    """Fresh databases for tests, each a copy of one migrated template (CREATE DATABASE … TEMPLATE)."""

    TEMPLATE = "switchboard_template"

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._n = 0
        self._template_ready = False
        self._later: list[str] = []

    @classmethod
    @contextlib.contextmanager
    def for_tests(cls) -> Iterator[PgDatabases]:
        """SWITCHBOARD_TEST_PG_URL (a superuser URL of a running server) or a cluster of our own."""
        given = os.environ.get("SWITCHBOARD_TEST_PG_URL")
        if given:
            dbs = cls(given)
            try:
                yield dbs
            finally:
                dbs.drop_deferred(force=True)
            return
        # not under pytest's temp dir: that one is private to root, and the server runs as postgres
        own = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
        try:
            url = start(own)
            try:
                yield cls(url)
            finally:
                stop(own)
        finally:
            shutil.rmtree(own, ignore_errors=True)

    def _url(self, db: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + db

    def _admin(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for st in statements:
                conn.execute(st.encode())

    def _make_template(self) -> None:
        from crm_link.store import Store

        self._admin(
            f"DROP DATABASE IF EXISTS {self.TEMPLATE} WITH (FORCE)", f"CREATE DATABASE {self.TEMPLATE}"
        )

        async def migrate() -> None:
            async with Store(self._url(self.TEMPLATE), pool_size=1):
                pass

        errors: list[BaseException] = []

        def run() -> None:  # its own thread: a test's event loop may be running in this one
            try:
                asyncio.run(migrate())
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=run)
        t.start()
        t.join()
        if errors:
            raise errors[0]
        self._template_ready = True

    def create(self, *, empty: bool = False) -> str:
        """The URL of a new database holding the migrated schema and nothing else (empty: no schema)."""
        if not self._template_ready and not empty:
            self._make_template()
        self.drop_deferred()
        self._n += 1
        name = f"t{os.getpid()}_{self._n}"
        self._admin(f"CREATE DATABASE {name}" + ("" if empty else f" TEMPLATE {self.TEMPLATE}"))
        return self._url(name)

    def drop(self, url: str) -> None:
        """Drop a test's database, or, while something still uses it, at the next create or the end.

        pytest may tear the database's fixture down before the app using it (the `client` fixture
        asks for `aiohttp_client` first); dropping WITH (FORCE) then would cut a running app's
        connections and make its shutdown fail, which is not what a test means to check.
        """
        self._later.append(url.rsplit("/", 1)[1])
        self.drop_deferred()

    def drop_deferred(self, *, force: bool = False) -> None:
        """Drop the databases that were still in use when their test ended."""
        import psycopg

        names, self._later = self._later, []
        if not names:
            return
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            used = {
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT datname FROM pg_stat_activity WHERE datname = ANY(%s)", (names,)
                )
            }
            for name in names:
                # DROP DATABASE waits 5 s for sessions to leave before it gives up: ask first
                if name in used and not force:
                    self._later.append(name)
                    continue
                try:
                    conn.execute(f"DROP DATABASE IF EXISTS {name}" + (" WITH (FORCE)" if force else ""))
                except psycopg.errors.ObjectInUse:
                    self._later.append(name)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.pg_cluster start|stop DIR", file=sys.stderr)
        return 2
    base = Path(argv[1]).resolve()
    if argv[0] == "start":
        print(start(base))
    else:
        stop(base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
