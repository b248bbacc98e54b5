"""Admins edit, reset and deactivate users (page and CLI); a user changes their own password; the audit
log reads as sentences; saved SMS texts over the API; error pages for browsers, JSON for APIs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.conftest import PASSWORD, make_api
from tests.test_cli import run


async def _login(client: Any, username: str, password: str = PASSWORD) -> Any:
    page = await (await client.get("/login")).text()
    found = re.search(r'name="login_token" value="([^"]+)"', page)
    assert found is not None
    token = found.group(1)
    return await client.post(
        "/login",
        data={"username": username, "password": password, "login_token": token},
        allow_redirects=False,
    )


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert found is not None
    return found.group(1)


async def test_deactivating_a_user_ends_their_session_and_tokens_at_once(client: Any, admin: Any) -> None:
    rep = await make_api(client, "jsmith", "rep")
    assert (await _login(client, "jsmith")).status == 303
    assert (await client.get("/", allow_redirects=False)).status == 200
    resp = await admin.post(f"/admin/users/{rep.user.id}/active", data={"active": "0"}, allow_redirects=False)
    assert resp.status == 303 and "Deactivated" in resp.headers["Location"].replace("%20", " ")
    gone = await client.get("/", allow_redirects=False)
    assert gone.status == 303 and gone.headers["Location"].startswith("/login")
    assert (await rep.get("/api/v1/me")).status == 401
    assert (await _login(client, "jsmith")).status == 401
    # reactivating lets them sign in again, but the old token stays revoked
    await admin.post(f"/admin/users/{rep.user.id}/active", data={"active": "1"}, allow_redirects=False)
    assert (await _login(client, "jsmith")).status == 303
    assert (await rep.get("/api/v1/me")).status == 401
    # the audit log says who did what to whom, linked
    html = await (await admin.get("/admin")).text()
    assert re.search(rf'admin</a>\s*deactivated\s*<a href="/admin/users/{rep.user.id}">jsmith</a>', html), (
        html
    )
    # an admin cannot lock themselves out
    resp = await admin.post(
        f"/admin/users/{admin.user.id}/active", data={"active": "0"}, allow_redirects=False
    )
    assert "cannot deactivate yourself" in resp.headers["Location"].replace("%20", " ")


async def test_admin_edits_a_user_and_resets_the_password(client: Any, admin: Any) -> None:
    rep = await make_api(client, "jsmith", "rep")
    resp = await admin.post(
        f"/admin/users/{rep.user.id}",
        data={
            "display_name": "John Smith",
            "role": "manager",
            "extension": "1005",
            "time_zone": "America/Denver",
        },
        allow_redirects=False,
    )
    assert resp.status == 303
    me = await (await rep.get("/api/v1/me")).json()
    assert (me["name"], me["role"], me["extension"], me["time_zone"]) == (
        "John Smith",
        "manager",
        "1005",
        "America/Denver",
    )
    resp = await admin.post(
        f"/admin/users/{rep.user.id}", data={"role": "rep", "time_zone": "Mars/Base"}, allow_redirects=False
    )
    assert "time_zone" in resp.headers["Location"]
    resp = await admin.post(
        f"/admin/users/{rep.user.id}/password", data={"password": "short"}, allow_redirects=False
    )
    assert "password" in resp.headers["Location"] and "error" in resp.headers["Location"]
    await admin.post(
        f"/admin/users/{rep.user.id}/password", data={"password": "brand-new-pw"}, allow_redirects=False
    )
    assert (await _login(client, "jsmith")).status == 401
    assert (await _login(client, "jsmith", "brand-new-pw")).status == 303
    page = await (await admin.get(f"/admin/users/{rep.user.id}")).text()
    assert 'value="1005"' in page and "Deactivate jsmith" in page


async def test_a_user_changes_their_own_password(client: Any) -> None:
    await make_api(client, "jsmith", "rep")
    await _login(client, "jsmith")
    csrf = _csrf(await (await client.get("/account")).text())
    form = {
        "csrf_token": csrf,
        "current": "wrong-password",
        "password": "n3w-password",
        "confirm": "n3w-password",
    }
    resp = await client.post("/account/password", data=form, allow_redirects=False)
    assert "current" in resp.headers["Location"] and "error" in resp.headers["Location"]
    form |= {"current": PASSWORD, "confirm": "something-else"}
    resp = await client.post("/account/password", data=form, allow_redirects=False)
    assert "confirm" in resp.headers["Location"]
    form |= {"confirm": "n3w-password"}
    resp = await client.post("/account/password", data=form, allow_redirects=False)
    assert resp.status == 303 and "done" in resp.headers["Location"]
    # this browser stays signed in with its new session; the old password no longer works
    assert (await client.get("/account", allow_redirects=False)).status == 200
    assert (await _login(client, "jsmith")).status == 401
    assert (await _login(client, "jsmith", "n3w-password")).status == 303


async def test_saved_sms_texts(client: Any, manager: Any, rep: Any) -> None:
    resp = await manager.post(
        "/api/v1/sms/templates", json={"name": "Reminder", "text": "Hi {{ contact.first_name }}"}
    )
    assert resp.status == 201
    tid = (await resp.json())["id"]
    assert (await manager.post("/api/v1/sms/templates", json={"name": "reminder", "text": "x"})).status == 409
    bad = await manager.post("/api/v1/sms/templates", json={"name": "Empty", "text": ""})
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "text"
    assert (await rep.post("/api/v1/sms/templates", json={"name": "Mine", "text": "x"})).status == 403
    items = (await (await rep.get("/api/v1/sms/templates")).json())["items"]
    assert items == [{"id": tid, "name": "Reminder", "text": "Hi {{ contact.first_name }}"}]
    put = await manager.client.put(
        f"/api/v1/sms/templates/{tid}",
        json={"name": "Reminder", "text": "Hello {{ contact.first_name }}"},
        headers=manager._h(),
    )
    assert put.status == 200 and (await put.json())["text"].startswith("Hello")
    assert (await manager.client.delete(f"/api/v1/sms/templates/{tid}", headers=manager._h())).status == 200
    assert (await manager.client.delete(f"/api/v1/sms/templates/{tid}", headers=manager._h())).status == 404


async def test_error_pages_for_browsers_json_for_apis(client: Any) -> None:
    await make_api(client, "jsmith", "rep")
    await _login(client, "jsmith")
    resp = await client.get("/contacts/999999")
    assert resp.status == 404 and resp.content_type == "text/html"
    assert "Page not found" in await resp.text() and "Back to My Day" in await resp.text()
    resp = await client.get("/admin")
    assert (
        resp.status == 403 and resp.content_type == "text/html" and "Not yours to open" in await resp.text()
    )
    resp = await client.get("/contacts/999999", headers={"Accept": "application/json"})
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await client.get("/api/v1/nothing-here")
    assert resp.status == 404 and resp.content_type == "application/json"
    resp = await client.get("/favicon.ico")
    assert resp.status == 200 and resp.content_type == "image/svg+xml"


def test_cli_user_passwd_disable_list(tmp_path: Path) -> None:
    run(tmp_path, "init")
    run(tmp_path, "user", "add", "jsmith", "--role", "rep", "--extension", "1001", "--password", "first-pass")
    out = run(tmp_path, "user", "passwd", "jsmith").stdout
    assert "sessions ended" in out and re.search(r"password: \S{12,}", out)
    run(tmp_path, "user", "passwd", "jsmith", "--password", "second-pass")
    bad = run(tmp_path, "user", "passwd", "jsmith", "--password", "short", check=2)
    assert "password" in bad.stderr
    assert "no user named 'nobody'" in run(tmp_path, "user", "disable", "nobody", check=2).stderr
    assert "deactivated" in run(tmp_path, "user", "disable", "jsmith").stdout
    listing = run(tmp_path, "user", "list").stdout
    assert re.search(r"jsmith\s+rep\s+1001\s+no", listing) and re.search(r"admin\s+admin\s+yes", listing)
    run(tmp_path, "user", "disable", "jsmith", "--enable")
    assert re.search(r"jsmith\s+rep\s+1001\s+yes", run(tmp_path, "user", "list").stdout)
