"""Typed keys under which the app keeps its resources (no module-level singletons)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from crm_link.clock import Clock
from crm_link.models import User
from crm_link.store import Store
from followups.service import FollowupService
from followups.steps import StepSender
from followups.survey_service import SurveyService
from reports.board import AgentBoard
from switchboard.hub import Hub
from switchboard.settings import Settings
from switchboard.supervisor import Supervisor
from switchboard.web.auth import LoginLimiter
from switchboard.web.client_address import ProxyTrust

if TYPE_CHECKING:
    from twilio.rest import Client as TwilioClient

    from campaigns.dialer.service import Dialer
    from campaigns.sms.channel import SmsChannel
    from campaigns.sms.inbound import SmsEvents
    from cti.asterisk import AsteriskSource
    from cti.service import CallService
    from cti.twilio_web import TwilioVoiceWebhooks
    from recordings.service import RecordingService
    from switchboard.cluster import Instance
    from switchboard.web.sms import SmsRuntime
    from templates.email_service import EmailService

SETTINGS = web.AppKey("settings", Settings)
# this process among the instances sharing the store: its id, its AMI role, the event relay
INSTANCE: web.AppKey[Instance] = web.AppKey("instance")
# the one clock every handler, worker and the store read "now" from (tests pass their own)
CLOCK = web.AppKey[Clock]("clock")
STORE = web.AppKey("store", Store)
HUB = web.AppKey("hub", Hub)
LIMITER = web.AppKey("login_limiter", LoginLimiter)
# `[server] trusted_proxies`: the balancers whose X-Forwarded-For names the client's address
PROXY_TRUST = web.AppKey("proxy_trust", ProxyTrust)
# the owner of every long-lived background worker (restarts, state for /healthz)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
# connector name -> a function returning its state ("up", "down", "connecting", "disabled")
HEALTH = web.AppKey[dict[str, Callable[[], str]]]("health")
# async functions (request, user) -> dict merged into My Day (call lists add their entries)
MY_DAY_EXTRAS = web.AppKey[list[Callable[[web.Request, User], Awaitable[dict[str, Any]]]]]("my_day_extras")

# The long-lived services, each set by its cleanup context when it starts. A connector the settings
# may leave off is absent then: read those with `app.get(KEY)` (None when disabled).
# (Their types are imported for the type checker only: their modules import this one.)
RECORDINGS: web.AppKey[RecordingService] = web.AppKey("recordings")  # always started
ASTERISK: web.AppKey[AsteriskSource] = web.AppKey("asterisk")  # [asterisk] enabled
ASTERISK_CALLS: web.AppKey[CallService] = web.AppKey("asterisk_calls")  # [asterisk] enabled
TWILIO_VOICE: web.AppKey[TwilioVoiceWebhooks] = web.AppKey("twilio_voice")  # [twilio] enabled
TWILIO_CALLS: web.AppKey[CallService] = web.AppKey("twilio_calls")  # [twilio] enabled
TWILIO_CLIENT: web.AppKey[TwilioClient] = web.AppKey("twilio_client")  # [twilio] enabled
DIALER: web.AppKey[Dialer] = web.AppKey("dialer")  # always started (no backend without telephony)
EMAIL: web.AppKey[EmailService] = web.AppKey("email")  # always started
SMS: web.AppKey[SmsRuntime] = web.AppKey("sms")  # some [sms.channels.NAME]
SMS_EVENTS: web.AppKey[SmsEvents] = web.AppKey("sms_events")  # some [sms.channels.NAME]
SMS_CHANNELS: web.AppKey[dict[str, SmsChannel]] = web.AppKey("sms_channels")  # some [sms.channels.NAME]
# the call service of each call source, by the source's name (the prefix of its touches' source keys)
CALL_SERVICES: dict[str, web.AppKey[CallService]] = {"asterisk": ASTERISK_CALLS, "twilio": TWILIO_CALLS}
# name -> a function returning a JSON-able dict shown under that name in /healthz (e.g. the CRM backlog)
HEALTH_DETAILS = web.AppKey[dict[str, Callable[[], dict[str, Any]]]]("health_details")
# the follow-up loop: cadence rules, routing, actions on a follow-up, the daily sweep
FOLLOWUPS = web.AppKey("followups", FollowupService)
FOLLOWUP_STEPS = web.AppKey("followup_steps", StepSender)  # SMS/email cadence steps
# the live agent board (states from call events and presence; published on the hub's "board" topic)
BOARD = web.AppKey("agent_board", AgentBoard)
# surveys: definitions as versions, locked answers, dissatisfaction escalated through the follow-up loop
SURVEYS = web.AppKey("surveys", SurveyService)
