"""Security headers on every response, and every page working under the Content-Security-Policy."""

from __future__ import annotations

from typing import Any

import pytest

from crm_link.contacts import validate_contact
from switchboard.keys import STORE
from tests.browser import login
from tests.conftest import PASSWORD, make_api

FIXED = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _check(resp: Any, where: str) -> None:
    for name, value in FIXED.items():
        assert resp.headers.get(name) == value, f"{where}: {name}"
    csp = resp.headers.get("Content-Security-Policy", "")
    directives = dict([*d.strip().split(" ", 1), ""][:2] for d in csp.split(";") if d.strip())
    assert directives.get("frame-ancestors") == "'none'", where
    assert directives.get("script-src") == "'self'", where
    assert directives.get("object-src") == "'none'" and directives.get("base-uri") == "'none'", where


async def test_every_kind_of_response_carries_the_headers(client: Any) -> None:
    rep = await make_api(client, "jsmith", "rep")
    anonymous = [
        ("GET", "/login"),
        ("GET", "/healthz"),
        ("GET", "/static/app.css"),
        ("GET", "/static/agent.js"),
        ("GET", "/static/missing.js"),
        ("GET", "/api/v1/me"),  # 401
        ("GET", "/contacts"),  # redirect to the login page
        ("POST", "/sms/kannel/dlr"),  # 405
        ("GET", "/email/unsubscribe/not-a-token"),
    ]
    for method, path in anonymous:
        resp = await client.request(method, path, allow_redirects=False)
        _check(resp, f"{method} {path} -> {resp.status}")
    for path in ("/", "/contacts", "/api/v1/me", "/api/v1/contacts/999", "/admin", "/nowhere"):
        resp = await rep.get(path, allow_redirects=False)
        _check(resp, f"GET {path} as a rep -> {resp.status}")


PAGE_SWEEP = """
() => new Promise((resolve) => setTimeout(() => resolve(window.__csp), 300))
"""
CSP_WATCH = (
    "window.__csp = [];"
    "document.addEventListener('securitypolicyviolation',"
    " (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + e.sourceFile + ':' + e.lineNumber));"
)


@pytest.mark.browser
async def test_every_page_works_under_the_policy(live_app: Any, browser: Any) -> None:
    """Each page, as the roles that see it: no CSP violation, and its script ran (the page is live)."""
    store = live_app.app[STORE]
    for name, role in (("boss", "admin"), ("maria", "manager"), ("jsmith", "rep"), ("kim", "marketing")):
        await store.users.add(name, role=role, password=PASSWORD, extension="1001" if role == "rep" else None)
    jane = await store.contacts.create(
        validate_contact(
            {"first_name": "Jane", "last_name": "Doe", "email": "jane@example.com", "owner": "jsmith"},
            region="US",
        )
    )
    await store.email.save_template(
        template_id=None,
        name="Styled",
        subject="Hi {{ contact.first_name }}",
        html='<p style="color: rgb(200, 0, 0)" class="x">Hi {{ contact.first_name }}</p><style>.x{font-weight:700}</style>',
        text="",
        merge_codes=[],
        user_id=None,
    )
    base = str(live_app.make_url("")).rstrip("/")
    pages = {
        "boss": [
            "/",
            "/contacts",
            "/contacts/new",
            f"/contacts/{jane.id}",
            "/admin",
            "/call-lists",
            "/recordings",
        ],
        "maria": ["/call-lists", "/recordings", "/sms/blasts", "/email/templates"],
        "jsmith": ["/", f"/contacts/{jane.id}", "/call-lists", "/email/templates"],
        "kim": ["/sms/blasts", "/email/templates"],
    }
    for user, paths in pages.items():
        context = await browser.new_context()
        await context.add_init_script(CSP_WATCH)
        page = await context.new_page()
        await login(page, base, user, PASSWORD)
        for path in paths:
            await page.goto(base + path)
            await page.wait_for_load_state("networkidle")
            assert await page.evaluate(PAGE_SWEEP) == [], f"{user} on {path}"
        if user == "jsmith":
            # the live call panel's socket opened under the policy
            await page.goto(base + "/")
            await page.wait_for_selector(".badge.ok")
            # the email preview keeps the email's own inline styles (a sandboxed frame, no scripts)
            await page.goto(f"{base}/contacts/{jane.id}")
            await page.select_option("#email-send select[name=template_id]", label="Styled")
            await page.wait_for_selector("#email-preview .preview-subject:text('Hi Jane')")
            frame = page.frame_locator("#email-preview iframe")
            color = await frame.locator("p").evaluate("(p) => getComputedStyle(p).color")
            weight = await frame.locator("p").evaluate("(p) => getComputedStyle(p).fontWeight")
            assert (color, weight) == ("rgb(200, 0, 0)", "700")
            assert await page.evaluate(PAGE_SWEEP) == []
        await context.close()
