"""Shared fixtures: settings on a temporary store, the real app on a loopback server, users, tokens."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from crm_link.store import Store
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"  # copied from the recordings of real systems (see their READMEs)
PASSWORD = "correct-horse-1"
# the test client of the real app (its `.app` is typed, unlike `.server.app`)
AppClient = TestClient[web.Request, web.Application]


def free_port() -> int:
    """A loopback port nobody listens on now (for servers whose URL must be known before they start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store a test runs on: a fresh SQLite file, or with SWITCHBOARD_TEST_STORE=postgres a fresh
    PostgreSQL database (from a migrated template) on the session's throwaway cluster."""
    if os.environ.get("SWITCHBOARD_TEST_STORE", "sqlite") != "postgres":
        return f"sqlite:///{tmp_path / 'test.db'}"
    pg = request.getfixturevalue("pg_databases")
    url: str = pg.create()
    request.addfinalizer(lambda: pg.drop(url))
    return url


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[Any]:
    from tests.pg_cluster import PgDatabases

    with PgDatabases.for_tests() as dbs:
        yield dbs


def _need_pg_server() -> None:
    """Skip the test where no PostgreSQL server is installed to start a cluster with."""
    from tests import pg_cluster

    try:
        pg_cluster.bin_dir()
    except pg_cluster.ClusterError as e:
        pytest.skip(f"needs a PostgreSQL server: {e}")


@pytest.fixture
def pg_server(request: pytest.FixtureRequest) -> Any:
    """The session's throwaway cluster (`pg_databases`); skipped where no PostgreSQL server is installed."""
    _need_pg_server()
    return request.getfixturevalue("pg_databases")


@pytest.fixture
def own_pg_cluster() -> Iterator[tuple[Path, str]]:
    """A cluster of this test's own, to stop and start (tests/pg_cluster.py): its directory and the
    URL of its superuser database; skipped where no PostgreSQL server is installed."""
    from tests import pg_cluster

    _need_pg_server()
    # not under pytest's temp dir: that one is private to root, and the server runs as postgres
    base = Path(tempfile.mkdtemp(prefix="switchboard-pg-own-"))
    try:
        admin_url = pg_cluster.start(base)
        yield base, admin_url
    finally:
        pg_cluster.stop(base, mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def settings(tmp_path: Path, store_url: str) -> Settings:
    s = load_settings(env={})
    s.store.url = store_url
    s.server.time_zone = "America/Chicago"
    s.recordings.storage_dir = str(tmp_path / "recordings")
    s.asterisk.recordings_dir = str(tmp_path / "monitor")
    return s


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    from switchboard.app import open_store

    async with open_store(settings) as s:
        yield s


class Api:
    """A client for one user: bearer token on every request."""

    def __init__(self, client: AppClient, token: str, user: Any) -> None:
        self.client = client
        self.token = token
        self.user = user

    def _h(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    async def get(self, path: str, **kw: Any) -> Any:
        return await self.client.get(path, headers=self._h(), **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return await self.client.post(path, json=json, headers=self._h(kw.pop("headers", None)), **kw)

    async def patch(self, path: str, json: Any = None) -> Any:
        return await self.client.patch(path, json=json, headers=self._h())


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> AppClient:
    app = create_app(settings)
    return await aiohttp_client(app)


@pytest.fixture
def app_store(client: AppClient) -> Store:
    return client.app[STORE]


async def make_api(client: AppClient, username: str, role: str, **kw: Any) -> Api:
    store = client.app[STORE]
    user = await store.users.add(username, role=role, password=PASSWORD, **kw)
    token = await store.users.create_token(user.id, "test")
    return Api(client, token, user)


@pytest.fixture
async def admin(client: AppClient) -> Api:
    return await make_api(client, "admin", "admin")


@pytest.fixture
async def rep(client: AppClient) -> Api:
    return await make_api(client, "jsmith", "rep", extension="1001", display_name="John Smith")


@pytest.fixture
async def manager(client: AppClient) -> Api:
    return await make_api(client, "maria", "manager")


@pytest.fixture
async def marketing(client: AppClient) -> Api:
    return await make_api(client, "kim", "marketing")


pytest_plugins = ["tests.browser"]


@pytest.fixture
async def pbx() -> AsyncIterator[Any]:
    """The AMI test PBX on a loopback port (scripted calls play at 1/100 of real time)."""
    from cti.ami.server import AmiTestServer

    async with AmiTestServer(secret="crm-secret", speed=0.01) as server:
        yield server


@pytest.fixture
async def live_app(aiohttp_server: Any, settings: Settings) -> Any:
    """The real app on a loopback port, for browsers and external clients."""
    app = create_app(settings)
    return await aiohttp_server(app)
