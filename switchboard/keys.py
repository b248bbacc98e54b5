"""Typed keys under which the app keeps its resources (no module-level singletons)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from crm_link.clock import Clock
from crm_link.store import Store
from switchboard.hub import Hub
from switchboard.settings import Settings
from switchboard.supervisor import Supervisor
from switchboard.web.auth import LoginLimiter

SETTINGS = web.AppKey("settings", Settings)
# the one clock every handler, worker and the store read "now" from (tests pass their own)
CLOCK = web.AppKey[Clock]("clock")
STORE = web.AppKey("store", Store)
HUB = web.AppKey("hub", Hub)
LIMITER = web.AppKey("login_limiter", LoginLimiter)
# the owner of every long-lived background worker (restarts, state for /healthz)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
# connector name -> a function returning its state ("up", "down", "connecting", "disabled")
HEALTH = web.AppKey("health", dict)
# async functions (request, user) -> dict merged into My Day (call lists add their entries)
MY_DAY_EXTRAS = web.AppKey("my_day_extras", list)
# name -> long-lived service object (AMI client, dialer, blast sender …) for handlers to reach
SERVICES = web.AppKey("services", dict[str, Any])
