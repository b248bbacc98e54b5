"""Login, session cookie, CSRF and rate limiting through the real pages."""

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from crm_link.clock import ManualClock
from switchboard.app import create_app
from switchboard.keys import LIMITER, STORE
from switchboard.settings import Settings
from switchboard.web.client_address import ProxyTrust
from tests.conftest import PASSWORD, make_api


def _found(pattern: str, html: str) -> str:
    """The first group of `pattern` in a page; the test fails when the page lacks it."""
    m = re.search(pattern, html)
    assert m is not None, f"{pattern} is not in the page"
    return m.group(1)


async def _login(
    client: Any, username: str, password: str = PASSWORD, *, forwarded_for: str | None = None
) -> Any:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    page = await (await client.get("/login", headers=headers)).text()
    token = _found(r'name="login_token" value="([^"]+)"', page)
    return await client.post(
        "/login",
        data={"username": username, "password": password, "login_token": token},
        headers=headers,
        allow_redirects=False,
    )


def _csrf(html: str) -> str:
    return _found(r'name="csrf-token" content="([^"]+)"', html)


async def test_login_sets_secure_cookie_and_opens_my_day(client: Any) -> None:
    await make_api(client, "jsmith", "rep")
    resp = await _login(client, "jsmith")
    assert resp.status == 303 and resp.headers["Location"] == "/"
    cookie = resp.headers.getall("Set-Cookie")
    session = next(c for c in cookie if c.startswith("sb_session="))
    assert "HttpOnly" in session and "SameSite=Lax" in session
    page = await client.get("/")
    assert page.status == 200 and "Due today" in await page.text()


async def test_wrong_password_and_rate_limit(client: Any) -> None:
    await make_api(client, "jsmith", "rep")
    resp = await _login(client, "jsmith", "nope-nope")
    assert resp.status == 401 and "Wrong username or password" in await resp.text()
    statuses = [(await _login(client, "jsmith", "nope-nope")).status for _ in range(12)]
    assert 429 in statuses
    # even the right password is refused while limited
    assert (await _login(client, "jsmith")).status == 429


async def test_csrf_required_for_form_posts(client: Any) -> None:
    api = await make_api(client, "jsmith", "rep")
    resp = await api.post("/api/v1/contacts", json={"first_name": "A", "phones": ["+12125550100"]})
    cid = (await resp.json())["id"]
    await _login(client, "jsmith")
    resp = await client.post(f"/contacts/{cid}/touches", data={"summary": "hi"}, allow_redirects=False)
    assert resp.status == 403
    html = await (await client.get(f"/contacts/{cid}")).text()
    resp = await client.post(
        f"/contacts/{cid}/touches", data={"summary": "hi", "csrf_token": _csrf(html)}, allow_redirects=False
    )
    assert resp.status == 303
    # JSON with the session cookie needs the header
    resp = await client.post("/api/v1/contacts", json={"first_name": "B"})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "csrf"
    resp = await client.post(
        "/api/v1/contacts", json={"first_name": "B"}, headers={"X-CSRF-Token": _csrf(html)}
    )
    assert resp.status == 201


async def test_pages_redirect_to_login_and_logout_ends_session(client: Any) -> None:
    await make_api(client, "jsmith", "rep")
    resp = await client.get("/contacts", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/login")
    await _login(client, "jsmith")
    html = await (await client.get("/")).text()
    resp = await client.post("/logout", data={"csrf_token": _csrf(html)}, allow_redirects=False)
    assert resp.status == 303
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 303


async def test_admin_page_is_admin_only(client: Any) -> None:
    await make_api(client, "jsmith", "rep")
    await make_api(client, "boss", "admin")
    await _login(client, "jsmith")
    resp = await client.get("/admin")
    assert resp.status == 403
    await _login(client, "boss")
    html = await (await client.get("/admin")).text()
    assert "jsmith" in html and "Add a user" in html
    resp = await client.post(
        "/admin/users",
        data={"username": "newrep", "role": "rep", "password": "long-pass-1", "csrf_token": _csrf(html)},
        allow_redirects=False,
    )
    assert resp.status == 303
    assert "newrep" in await (await client.get("/admin")).text()


async def test_login_redirect_target_is_local_only(client: Any) -> None:
    await make_api(client, "jsmith", "rep")
    page = await (await client.get("/login?next=//evil.example.com/")).text()
    assert 'name="next" value="/"' in page


async def _login_next(client: Any, next_value: str) -> Any:
    page = await (await client.get("/login")).text()
    token = _found(r'name="login_token" value="([^"]+)"', page)
    form = {"username": "jsmith", "password": PASSWORD, "login_token": token, "next": next_value}
    return await client.post("/login", data=form, allow_redirects=False)


@pytest.mark.parametrize(
    "target",
    [
        "/\t/evil.example/phish",
        "/\n/evil.example/",
        "\t//evil.example/",
        " //evil.example/",
        "/\\evil.example/",
        "\\\\evil.example/",
        "/\t\\evil.example/",
        "https://evil.example/",
        "javascript:alert(1)",
        "//evil.example/",
        "\x00//evil.example/",
    ],
)
async def test_login_never_redirects_off_site(client: Any, target: str) -> None:
    await make_api(client, "jsmith", "rep")
    resp = await _login_next(client, target)
    assert resp.status == 303 and resp.headers["Location"] == "/"
    # the query form of the attack, as a link would carry it
    page = await (await client.get("/login", params={"next": target})).text()
    assert 'name="next" value="/"' in page


async def test_login_open_redirect_link_from_the_report(client: Any) -> None:
    await make_api(client, "jsmith", "rep")
    page = await (await client.get("/login?next=/%09/evil.example/phish")).text()
    assert 'name="next" value="/"' in page


async def test_login_returns_to_a_local_page(client: Any) -> None:
    await make_api(client, "jsmith", "rep")
    resp = await client.get("/contacts?q=Pat", allow_redirects=False)
    assert resp.status == 303
    page = await (await client.get(resp.headers["Location"])).text()
    next_value = _found(r'name="next" value="([^"]*)"', page)
    resp = await _login_next(client, next_value.replace("&amp;", "&"))
    assert resp.status == 303 and resp.headers["Location"] == "/contacts?q=Pat"


async def _ws_status(client: Any, path: str = "/ws/agent", origin: str | None = None) -> int:
    """101 when the socket opens (and says hello), else the refusing status."""
    try:
        ws = await client.ws_connect(path, origin=origin)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    hello = await ws.receive_json(timeout=5)
    await ws.close()
    assert hello["type"] == "hello"
    return 101


async def test_agent_socket_is_not_compressed_even_when_the_client_offers(client: Any) -> None:
    """A browser offers permessage-deflate; the server declines it (no zlib state per tab)."""
    api = await make_api(client, "jsmith", "rep")
    ws = await client.ws_connect(f"/ws/agent?token={api.token}", compress=15)
    try:
        assert "Sec-WebSocket-Extensions" not in ws._response.headers
        assert ws.compress == 0
        assert (await ws.receive_json(timeout=5))["type"] == "hello"
    finally:
        await ws.close()


async def test_agent_socket_with_the_cookie_needs_our_origin(client: Any) -> None:
    api = await make_api(client, "jsmith", "rep")
    await _login(client, "jsmith")
    own = f"http://{client.host}:{client.port}"
    assert await _ws_status(client, origin=own) == 101
    # a page of another site, or the same host on another port, gets nothing with the cookie
    assert await _ws_status(client, origin=f"http://{client.host}:{client.port + 1}") == 403
    assert await _ws_status(client, origin="http://evil.example") == 403
    assert await _ws_status(client, origin="null") == 403
    assert await _ws_status(client) == 403
    # a token client (a script, a softphone plug-in) needs no Origin
    await client.post("/logout", headers={"X-CSRF-Token": "ignored"})
    client.session.cookie_jar.clear()
    assert await _ws_status(client, f"/ws/agent?token={api.token}") == 101


async def test_agent_socket_origin_is_the_public_url_when_set(aiohttp_client: Any, settings: Any) -> None:
    settings.server.public_url = "https://crm.example.com"
    settings.server.cookie_secure = False
    client = await aiohttp_client(create_app(settings))
    await make_api(client, "jsmith", "rep")
    await _login(client, "jsmith")
    assert await _ws_status(client, origin="https://crm.example.com") == 101
    assert await _ws_status(client, origin="https://crm.example.com:443") == 101
    assert await _ws_status(client, origin="http://crm.example.com") == 403
    assert await _ws_status(client, origin="https://crm.example.com:8443") == 403
    assert await _ws_status(client, origin="https://evil.example") == 403
    # the name the browser actually used (e.g. an internal one) is this request's own host
    assert await _ws_status(client, origin=f"http://{client.host}:{client.port}") == 101


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2031, 3, 4, 15, 0, tzinfo=UTC))


@pytest.fixture
async def timed(aiohttp_client: Any, settings: Settings, clock: ManualClock) -> Any:
    """The app on a clock that moves only when a test moves it."""
    return await aiohttp_client(create_app(settings, clock=clock))


@contextlib.asynccontextmanager
async def _browser_at(client: Any, address: str) -> AsyncIterator[Any]:
    """A separate client whose connections come from `address` (another machine behind loopback)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(
        base_url=str(client.make_url("/")), connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as session:
        yield session


async def test_successful_logins_never_count(client: Any) -> None:
    await make_api(client, "jsmith", "rep")
    await make_api(client, "agarcia", "rep")
    statuses = [(await _login(client, name)).status for _ in range(15) for name in ("jsmith", "agarcia")]
    assert statuses == [303] * 30


async def test_a_user_cannot_be_locked_out_by_someone_elses_guesses(timed: Any) -> None:
    client = timed
    await make_api(client, "jsmith", "rep")
    assert (await _login(client, "jsmith")).status == 303  # jsmith's own desk, 127.0.0.1
    async with _browser_at(client, "127.0.0.2") as attacker:
        statuses = [(await _login(attacker, "jsmith", f"guess-{n}")).status for n in range(30)]
        assert statuses[:5] == [401] * 5 and 429 in statuses
        # the attacker's address is refused even with the right password
        assert (await _login(attacker, "jsmith")).status == 429
    # the owner still signs in from where they always do, and that clears the account's count
    assert (await _login(client, "jsmith")).status == 303
    async with _browser_at(client, "127.0.0.3") as laptop:
        assert (await _login(laptop, "jsmith")).status == 303


async def test_account_failures_slow_down_exponentially_then_the_right_password_works(
    timed: Any, clock: ManualClock
) -> None:
    client = timed
    limiter = client.server.app[LIMITER]
    await make_api(client, "jsmith", "rep")
    waits = []
    async with _browser_at(client, "127.0.0.2") as guesser:
        for n in range(5):
            assert (await _login(guesser, "jsmith", f"guess-{n}")).status == 401
        for n in range(5, 9):
            assert (await _login(guesser, "jsmith", f"guess-{n}")).status == 401
            refused = await _login(guesser, "jsmith", "another")
            assert refused.status == 429
            waits.append(int(refused.headers["Retry-After"]))
            clock.advance(seconds=waits[-1])
        assert waits == [1, 2, 4, 8]
        assert (await _login(guesser, "jsmith", "guess-9")).status == 401
    async with _browser_at(client, "127.0.0.3") as owner:
        # a new address waits out the account's delay like anyone else, then gets in
        refused = await _login(owner, "jsmith")
        assert refused.status == 429 and refused.headers["Retry-After"] == "16"
        assert "Try again in 16 seconds" in await refused.text()
        clock.advance(seconds=16)
        assert (await _login(owner, "jsmith")).status == 303
        # and the success starts the account afresh
        assert limiter.account_delay(0) == 0 and await limiter.retry_after("127.0.0.9", "jsmith") == 0


async def test_failures_from_one_address_are_capped_per_minute(timed: Any, clock: ManualClock) -> None:
    client = timed
    await make_api(client, "jsmith", "rep")
    async with _browser_at(client, "127.0.0.2") as sprayer:
        statuses = [(await _login(sprayer, f"user{n}", "guess")).status for n in range(12)]
        assert statuses == [401] * 10 + [429] * 2
        clock.advance(seconds=61)
        assert (await _login(sprayer, "user99", "guess")).status == 401
    # other addresses are not affected
    assert (await _login(client, "jsmith")).status == 303


async def test_a_forged_x_forwarded_for_cannot_dodge_the_address_limit(
    aiohttp_client: Any, settings: Settings, clock: ManualClock
) -> None:
    # a balancer is trusted, but not the machine the guesses come from
    settings.server.trusted_proxies = ["10.0.0.0/8"]
    client = await aiohttp_client(create_app(settings, clock=clock))
    async with _browser_at(client, "127.0.0.2") as sprayer:
        statuses = [
            (await _login(sprayer, f"user{n}", "guess", forwarded_for=f"203.0.113.{n}, 10.0.0.{n}")).status
            for n in range(12)
        ]
    assert statuses == [401] * 10 + [429] * 2
    rows = await client.server.app[STORE].audit.recent(action="login.failed")
    assert len(rows) == 10 and {r["detail"]["remote"] for r in rows} == {"127.0.0.2"}
    assert all("proxy" not in r["detail"] for r in rows)


async def test_behind_a_trusted_proxy_each_client_address_is_limited_on_its_own(
    aiohttp_client: Any, settings: Settings, clock: ManualClock
) -> None:
    settings.server.trusted_proxies = ["127.0.0.1"]  # the balancer: every request comes through it
    client = await aiohttp_client(create_app(settings, clock=clock))
    await make_api(client, "jsmith", "rep")
    # the client's own X-Forwarded-For (left) is passed on; the balancer appends the address it saw
    guesses = [
        (await _login(client, f"user{n}", "guess", forwarded_for=f"198.51.100.{n}, 203.0.113.9")).status
        for n in range(11)
    ]
    assert guesses == [401] * 10 + [429]
    # another browser behind the same balancer is not held up by that one
    assert (await _login(client, "jsmith", forwarded_for="203.0.113.20")).status == 303
    store = client.server.app[STORE]
    (login,) = await store.audit.recent(action="login")
    assert login["detail"] == {"remote": "203.0.113.20", "proxy": "127.0.0.1"}
    failed = await store.audit.recent(action="login.failed")
    assert len(failed) == 10
    # a request straight from the balancer's host without the header is that host's
    assert (await _login(client, "user99", "guess")).status == 401


async def test_two_instances_on_one_store_refuse_a_guesser_together(
    aiohttp_client: Any, settings: Settings, clock: ManualClock
) -> None:
    one = await aiohttp_client(create_app(settings, clock=clock))
    two = await aiohttp_client(create_app(settings, clock=clock))
    await make_api(one, "jsmith", "rep")
    assert (await _login(two, "jsmith")).status == 303  # the owner's desk, 127.0.0.1
    # one address spraying names, half through each instance: the limit is for both together
    async with _browser_at(one, "127.0.0.2") as a, _browser_at(two, "127.0.0.2") as b:
        statuses = [(await _login((a, b)[n % 2], f"user{n}", "guess")).status for n in range(10)]
        assert statuses == [401] * 10
        assert (await _login(a, "user10", "guess")).status == 429
        assert (await _login(b, "user11", "guess")).status == 429
        clock.advance(seconds=61)
    # one account guessed from several addresses, through both instances: its delay is shared
    for n in range(6):
        async with _browser_at((one, two)[n % 2], f"127.0.1.{n}") as guesser:
            assert (await _login(guesser, "jsmith", f"guess-{n}")).status == 401
    async with _browser_at(one, "127.0.2.1") as newcomer:
        refused = await _login(newcomer, "jsmith")
        assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    # the owner, known on the other instance, signs in there and the account starts afresh everywhere
    assert (await _login(one, "jsmith")).status == 303
    async with _browser_at(two, "127.0.2.1") as newcomer:
        assert (await _login(newcomer, "jsmith")).status == 303


def test_the_client_address_is_the_rightmost_one_no_trusted_proxy_wrote() -> None:
    trust = ProxyTrust(["10.0.0.0/8", "2001:db8::/32"])
    assert trust.client("10.0.0.1", ["198.51.100.7"]) == "198.51.100.7"
    # several proxies, several header lines: the right-most untrusted entry
    assert trust.client("10.0.0.1", ["1.1.1.1, 198.51.100.7", "10.0.0.9"]) == "198.51.100.7"
    assert trust.client("2001:db8::1", ["[2001:db8::5]:443, 198.51.100.7:5000, 10.1.1.1"]) == "198.51.100.7"
    # an untrusted peer is the client whatever it says
    assert trust.client("192.0.2.1", ["10.0.0.1"]) == "192.0.2.1"
    assert trust.client("::ffff:192.0.2.1", ["10.0.0.1"]) == "192.0.2.1"
    # mapped IPv4 of a trusted proxy is trusted; no header: the proxy itself
    assert trust.client("::ffff:10.0.0.1", []) == "10.0.0.1"
    # only proxies in the chain: the furthest one; garbage: the last proxy that can be named
    assert trust.client("10.0.0.1", ["10.0.0.3, 10.0.0.2"]) == "10.0.0.3"
    assert trust.client("10.0.0.1", ["198.51.100.7, unknown, 10.0.0.2"]) == "10.0.0.2"
    assert trust.client(None, ["198.51.100.7"]) == "?"
    assert ProxyTrust([]).client("10.0.0.1", ["198.51.100.7"]) == "10.0.0.1"
