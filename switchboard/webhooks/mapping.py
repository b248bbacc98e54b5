"""The generic REST adapter (pure): a mapping file turns our event into the request a CRM's own REST
API expects — which method and path per event type, and their JSON built from our fields.

```json
{"routes": [
  {"events": ["contact.created", "contact.updated"], "method": "PUT",
   "path": "/customers/{data.external_id}",
   "body": {"firstName": "$data.first_name", "lastName": "$data.last_name", "source": "switchboard"}},
  {"events": ["*"], "method": "POST", "path": "/activities",
   "body": {"eventId": "$id", "type": "$type", "customer": "$data.contact_external_id"}}
]}
```

The first route whose `events` match is used. In `body`, a string starting with `$` is a path into
our event (`$id`, `$type`, `$occurred_at`, `$data.status`, `$data.details.queue`), `$$…` is a literal
`$…`; anything else is sent as written. `{…}` in `path` is a path too, URL-quoted, and must not be
empty (such an event is dead-lettered with that reason rather than sent to the wrong URL).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

_METHODS = ("POST", "PUT", "PATCH")
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.]+)\}")


class MappingError(ValueError):
    """A mapping file that cannot be used; `where` names the spot (routes[1].method)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Route:
    events: tuple[str, ...]
    method: str
    path: str
    body: Any

    def matches(self, event_type: str) -> bool:
        return any(
            p == "*" or p == event_type or (p.endswith(".*") and event_type.startswith(p[:-1]))
            for p in self.events
        )


@dataclass(frozen=True, slots=True)
class Mapping:
    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    body: Any


def parse_mapping(data: Any) -> Mapping:
    """Check a mapping document; MappingError names what is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("routes"), list) or not data["routes"]:
        raise MappingError("routes", "expected a non-empty list of routes")
    routes = []
    for i, r in enumerate(data["routes"]):
        where = f"routes[{i}]"
        if not isinstance(r, dict):
            raise MappingError(where, "expected an object")
        events = r.get("events")
        if not isinstance(events, list) or not events or not all(isinstance(e, str) and e for e in events):
            raise MappingError(f"{where}.events", "expected a list of event types")
        method = str(r.get("method", "POST")).upper()
        if method not in _METHODS:
            raise MappingError(f"{where}.method", f"must be one of {', '.join(_METHODS)}")
        path = r.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise MappingError(f"{where}.path", "must be a path starting with /")
        if "body" not in r:
            raise MappingError(f"{where}.body", "is required")
        routes.append(Route(tuple(events), method, path, r["body"]))
    return Mapping(tuple(routes))


def load_mapping(path: str | Path) -> Mapping:
    """Read and check a mapping file."""
    try:
        return parse_mapping(json.loads(Path(path).read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise MappingError("file", f"not JSON: {exc}") from None


def lookup(event: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of the event, or None."""
    value: Any = event
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _build(template: Any, event: dict[str, Any]) -> Any:
    if isinstance(template, str):
        if template.startswith("$$"):
            return template[1:]
        if template.startswith("$"):
            return lookup(event, template[1:])
        return template
    if isinstance(template, dict):
        return {k: _build(v, event) for k, v in template.items()}
    if isinstance(template, list):
        return [_build(v, event) for v in template]
    return template


def apply(mapping: Mapping, event: dict[str, Any]) -> Request | None:
    """The request for an event, or None when no route takes its type; MappingError when the path
    would hold an empty value."""
    for route in mapping.routes:
        if route.matches(str(event.get("type"))):

            def fill(m: re.Match[str]) -> str:
                value = lookup(event, m.group(1))
                if value is None or value == "":
                    raise MappingError("path", f"{m.group(1)} is empty for this event")
                return quote(str(value), safe="")

            return Request(route.method, _PLACEHOLDER.sub(fill, route.path), _build(route.body, event))
    return None
