"""Crafted input through the real HTTP app: every malformed cursor, limit, path id, filter number and
JSON body is a 400 naming its field, never a 500 (and a bad `limit` never widens a page)."""

from __future__ import annotations

import base64
import io
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from crm_link.call_lists import ListSpec
from crm_link.contacts import validate_contact
from crm_link.errors import ValidationError
from crm_link.models import MAX_ID, check_limit, decode_cursor, encode_cursor, parse_id
from crm_link.segments import compile_filter
from crm_link.store import Store
from switchboard.web.errors import MAX_JSON_DEPTH, loads_bounded
from tests.conftest import Api, AppClient


def b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


BIG = 10**20  # well past SQLite's signed 64-bit integers
NESTED = "[" * 100_000 + "]" * 100_000
DEEP_CURSOR = base64.urlsafe_b64encode(("[" * 2000 + "]" * 2000).encode()).decode()  # fits in a URL

BAD_CURSORS = [
    ("string_id", b64(["x"])),
    ("string_key_and_id", b64(["2026-01-01", "x"])),
    ("big_id", b64([BIG])),
    ("big_id_of_two", b64(["2026-01-01", BIG])),
    ("negative_huge", b64([-BIG])),
    ("float_id", b64([1.5])),
    ("bool_id", b64([True])),
    ("null_id", b64([None])),
    ("list_id", b64([[1]])),
    ("object", b64({"id": 1})),
    ("wrong_arity", b64([1, 2, 3])),
    ("not_base64", "!!!"),
    ("not_json", base64.urlsafe_b64encode(b"\xff\xfe").decode()),
    ("deep_json", DEEP_CURSOR),
    ("huge", "A" * 5_000),
]
BAD_LIMITS = ["-1", "0", "-99999999999999999999", "100000", "99999999999999999999", "ten", "1.5"]


@pytest.fixture
async def world(admin: Api, app_store: Store) -> dict[str, int]:
    """A contact with two touches and a call list of three entries, so every list has pages."""
    ids = []
    for i in range(3):
        c = await app_store.contacts.create(
            validate_contact({"first_name": f"C{i}", "phones": [f"+1212555030{i}"]}, region="US")
        )
        ids.append(c.id)
    for note in ("first", "second"):
        resp = await admin.post(f"/api/v1/contacts/{ids[0]}/touches", json={"summary": note})
        assert resp.status == 201, await resp.text()
    cl, _ = await app_store.call_lists.create(
        ListSpec(name="Crafted"), contact_ids=ids, now=datetime(2026, 1, 5, 15, tzinfo=UTC)
    )
    return {"contact": ids[0], "list": cl.id}


def paginated(world: dict[str, int]) -> list[str]:
    return [
        "/api/v1/contacts",
        f"/api/v1/contacts/{world['contact']}/touches",
        "/api/v1/recordings",
        f"/api/v1/call-lists/{world['list']}/entries",
    ]


async def _field(resp: Any) -> str | None:
    assert resp.status == 400, (resp.status, await resp.text())
    return (await resp.json())["error"]["field"]


async def test_bad_cursors_are_400_on_every_paginated_list(admin: Api, world: dict[str, int]) -> None:
    for path in paginated(world):
        for name, cursor in BAD_CURSORS:
            resp = await admin.get(path, params={"cursor": cursor})
            assert await _field(resp) == "cursor", (path, name)
    for name, cursor in BAD_CURSORS:  # the contacts page says what is wrong on the page itself
        resp = await admin.get("/contacts", params={"q": "C", "cursor": cursor})
        assert resp.status == 200 and "cursor: is not a cursor" in await resp.text(), name


async def test_bad_limits_are_400_on_every_paginated_list(admin: Api, world: dict[str, int]) -> None:
    for path in paginated(world):
        for limit in BAD_LIMITS:
            resp = await admin.get(path, params={"limit": limit})
            assert await _field(resp) == "limit", (path, limit)


async def test_pages_still_walk_with_the_cursors_the_server_issues(admin: Api, world: dict[str, int]) -> None:
    for path, expected in (
        (f"/api/v1/call-lists/{world['list']}/entries", 3),
        (f"/api/v1/contacts/{world['contact']}/touches", 2),
        ("/api/v1/contacts", 3),
    ):
        seen, cursor = 0, None
        for _ in range(10):
            params = {"limit": "1"} | ({"cursor": cursor} if cursor else {})
            resp = await admin.get(path, params=params)
            assert resp.status == 200, await resp.text()
            page = await resp.json()
            assert len(page["items"]) <= 1
            seen += len(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected, path


def _id_routes(client: AppClient) -> list[tuple[str, str, re.Pattern[str] | None]]:
    """Every (method, path template, path regex) of the app with an `{id}` in its path."""
    routes = {}
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        template = info.get("formatter") or info.get("path") or ""
        if "{id" in template and route.method != "HEAD":
            routes[(route.method, template)] = info.get("pattern")
    return [(m, t, p) for (m, t), p in sorted(routes.items())]


ACTIONS = {"action": "cancel"}  # a valid value for the `{action}` routes (their ids are checked first)
BAD_IDS = ["99999999999999999999", str(MAX_ID + 1), "0", "-1", "abc", "1e3", "١٢"]


async def test_every_id_route_answers_400_naming_id(client: AppClient, admin: Api, manager: Api) -> None:
    routes = _id_routes(client)
    assert len(routes) >= 20, routes  # the table is the app's own router, not a hand-kept list
    for method, template, pattern in routes:
        for bad in BAD_IDS:
            path = template.replace("{id}", bad).replace("{action}", ACTIONS["action"])
            assert "{" not in path, template
            resp = await client.request(method, path, headers=admin._h(), json={})
            if resp.status == 403:  # the agents' routes: a manager may use them
                resp = await client.request(method, path, headers=manager._h(), json={})
            body = await resp.text()
            assert resp.status != 500, (method, path, body)
            if pattern is not None and pattern.fullmatch(path) is None:
                assert resp.status == 404, (method, path, body)  # the route itself only matches digits
                continue
            assert resp.status == 400, (method, path, body)
            assert json.loads(body)["error"]["field"] == "id", (method, path, body)
    for bad in BAD_IDS:  # a call's key is the telephony's own text: an unknown one is simply not found
        resp = await admin.post(f"/api/v1/calls/{bad}/disposition", json={"note": "x"})
        assert resp.status == 404, (bad, await resp.text())


BIG_VALUES = [
    ({"field": "attributes.miles", "op": "eq", "value": BIG}, "filter.value"),
    ({"field": "attributes.miles", "op": "gt", "value": -BIG}, "filter.value"),
    ({"field": "attributes.miles", "op": "between", "value": [1, BIG]}, "filter.value"),
    ({"field": "attributes.miles", "op": "in", "value": [1, BIG]}, "filter.value"),
    (
        {"all": [{"tag": "vip"}, {"field": "attributes.miles", "op": "lt", "value": BIG}]},
        "filter.all[1].value",
    ),
    ({"touches": {"kind": "call"}, "op": "count_gte", "value": BIG}, "filter.value"),
]


@pytest.mark.parametrize(("f", "field"), BIG_VALUES)
async def test_huge_numbers_in_a_segment_are_400(admin: Api, f: dict[str, Any], field: str) -> None:
    for path, body in (
        ("/api/v1/segments/preview", {"filter": f}),
        ("/api/v1/segments", {"name": "Big", "filter": f}),
    ):
        resp = await admin.post(path, json=body)
        assert (await _field(resp)).startswith(field), (path, f)  # type: ignore[union-attr]


JSON_ROUTES = [
    ("POST", "/api/v1/contacts"),
    ("PATCH", "/api/v1/contacts/{contact}"),
    ("POST", "/api/v1/contacts/{contact}/touches"),
    ("POST", "/api/v1/users"),
    ("POST", "/api/v1/segments"),
    ("POST", "/api/v1/segments/preview"),
    ("POST", "/api/v1/call-lists"),
    ("POST", "/api/v1/calls"),
    ("POST", "/api/v1/email/send"),
    ("POST", "/api/v1/calls/abc/disposition"),
    ("POST", "/api/v1/email/templates"),
    ("POST", "/api/v1/recordings/export"),
]


@pytest.mark.parametrize(
    "text",
    [
        NESTED,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        '{"first_name": ' + "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1) + "}",
    ],
    ids=["list_100k", "object_100k", "just_over"],
)
async def test_deep_json_is_400_on_every_json_route(
    client: AppClient, admin: Api, world: dict[str, int], text: str
) -> None:
    for method, template in JSON_ROUTES:
        path = template.format(**world)
        resp = await client.request(
            method,
            path,
            data=io.BytesIO(text.encode()),
            headers=admin._h({"Content-Type": "application/json"}),
        )
        assert await _field(resp) == "body", (method, path)


async def test_numbers_json_cannot_hold_are_400_naming_them(admin: Api, world: dict[str, int]) -> None:
    resp = await admin.post("/api/v1/email/send", json={"template_id": 1, "contact_ids": [1, BIG]})
    assert await _field(resp) == "contact_ids[1]"
    resp = await admin.post("/api/v1/calls", json={"contact_id": BIG, "from_extension": "1001"})
    assert await _field(resp) == "contact_id"
    for raw, field in (('{"first_name": "A", "attributes": {"x": 1e999}}', "attributes.x"), ("NaN", "body")):
        resp = await admin.client.post(
            "/api/v1/contacts", data=raw, headers=admin._h({"Content-Type": "application/json"})
        )
        assert await _field(resp) == field


async def test_a_json_body_over_the_size_limit_is_413_naming_body(client: AppClient, admin: Api) -> None:
    from switchboard.web.errors import MAX_JSON_BYTES

    text = '{"first_name": "' + "a" * MAX_JSON_BYTES + '"}'
    resp = await client.post(
        "/api/v1/contacts",
        data=io.BytesIO(text.encode()),
        headers=admin._h({"Content-Type": "application/json"}),
    )
    assert resp.status == 413 and (await resp.json())["error"]["field"] == "body"


# -- the parsers themselves ----------------------------------------------------------------------


def test_decode_cursor_checks_the_type_and_range_of_each_value() -> None:
    assert decode_cursor(encode_cursor("2026-01-01T00:00:00Z", 7), str, int) == ["2026-01-01T00:00:00Z", 7]
    assert decode_cursor(encode_cursor(MAX_ID), int) == [MAX_ID]
    for _, cursor in BAD_CURSORS:
        for types in ((int,), (str, int)):
            with pytest.raises(ValidationError) as err:
                decode_cursor(cursor, *types)
            assert err.value.field == "cursor"


def test_check_limit_bounds_the_page() -> None:
    assert check_limit(None) == 50 and check_limit(1) == 1 and check_limit(500) == 500
    for bad in (0, -1, 501, BIG, -BIG):
        with pytest.raises(ValidationError) as err:
            check_limit(bad)
        assert err.value.field == "limit"


def test_parse_id_takes_only_positive_64_bit_decimal_ids() -> None:
    assert parse_id("1") == 1 and parse_id(str(MAX_ID)) == MAX_ID == 2**63 - 1
    for bad in ("", "0", "-1", "+1", " 1", "1 ", "1_000", "١٢", "1e3", "0x10", str(MAX_ID + 1), "9" * 5000):
        with pytest.raises(ValidationError) as err:
            parse_id(bad, "entry_id")
        assert err.value.field == "entry_id", bad


def test_loads_bounded_counts_depth_without_recursing() -> None:
    ok = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert loads_bounded(ok) is not None
    # brackets inside strings are text, not depth
    assert loads_bounded(json.dumps({"s": "[" * 10_000})) == {"s": "[" * 10_000}
    assert loads_bounded(json.dumps({"s": '\\"[[[[' * 100})) == {"s": '\\"[[[[' * 100}
    for text in (NESTED, "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "[" * 1_000_000):
        with pytest.raises(ValidationError) as err:
            loads_bounded(text)
        assert err.value.field == "body"
    with pytest.raises(ValidationError) as err:
        loads_bounded(json.dumps({"a": [{"b": BIG}]}))
    assert err.value.field == "a[0].b"
    assert loads_bounded(json.dumps({"n": -(2**63), "m": 2**63 - 1})) == {"n": -(2**63), "m": 2**63 - 1}


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, BIG, float("inf")])
def test_segment_compiler_refuses_numbers_sqlite_cannot_hold(value: Any) -> None:
    today = datetime(2026, 1, 5).date()
    for f, field in (
        ({"field": "attributes.miles", "op": "eq", "value": value}, "filter.value"),
        ({"not": {"field": "attributes.miles", "op": "in", "value": [1, value]}}, "filter.not.value"),
        ({"touches": {"kind": "call"}, "op": "count_lte", "value": value}, "filter.value"),
    ):
        with pytest.raises(ValidationError) as err:
            compile_filter(f, today)
        assert err.value.field == field
    assert compile_filter({"field": "attributes.miles", "op": "eq", "value": 2**63 - 1}, today).params == [
        2**63 - 1
    ]
