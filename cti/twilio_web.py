"""Twilio voice webhooks: signature-checked, answered with TwiML, folded into call events."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Dial, VoiceResponse

from crm_link.store import Store
from cti.service import CallService
from cti.twilio_voice import CLIENT_PREFIX, TwilioCallFolder, TwilioParamError

log = logging.getLogger("cti.twilio")


def _error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "field": field}}, status=status)


def twiml(response: VoiceResponse) -> web.Response:
    return web.Response(text=str(response), content_type="application/xml")


class TwilioVoiceWebhooks:
    """The `/twilio/voice/*` endpoints; every request must carry a valid X-Twilio-Signature."""

    def __init__(
        self,
        *,
        auth_token: str,
        public_url: str,
        store: Store,
        service: CallService,
        online_users: Callable[[], Awaitable[list[str]]],
        fallback_queue: str,
        record: bool,
        owner_first_seconds: int = 0,
        folder: TwilioCallFolder | None = None,
        recordings: Any = None,
        on_recording: Callable[[], None] | None = None,
    ) -> None:
        self.validator = RequestValidator(auth_token)
        self.public_url = public_url.rstrip("/")
        self.store = store
        self.service = service
        self.online_users = online_users
        self.fallback_queue = fallback_queue
        self.record = record
        # a known customer's own salesperson rings alone this long before the others (0: together)
        self.owner_first_seconds = owner_first_seconds
        self.folder = folder or TwilioCallFolder(store.clock)
        self.recordings = recordings
        self.on_recording = on_recording

    def url(self, path: str) -> str:
        return self.public_url + path

    async def verified(self, request: web.Request) -> dict[str, str] | web.Response:
        """The form parameters if Twilio signed them for this URL; otherwise a 403 response."""
        form = await request.post()
        params = {k: str(v) for k, v in form.items()}
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not self.validator.validate(self.url(request.path_qs), params, signature):
            log.warning("event=twilio_bad_signature path=%s", request.path)
            return _error(
                403, "bad_signature", "X-Twilio-Signature is missing or does not match", "X-Twilio-Signature"
            )
        return params

    async def _feed(self, events: list[Any]) -> None:
        for ev in events:
            await self.service.handle(ev)

    def _dial(self, targets: list[str], *, timeout: int, then: str | None) -> Dial:
        """A <Dial> ringing these reps' Twilio Clients; `then` names the next stage (dial-result)."""
        action = self.url("/twilio/voice/dial-result" + (f"?then={then}" if then else ""))
        dial_kw: dict[str, Any] = {"action": action, "timeout": timeout}
        if self.record:
            dial_kw |= {
                "record": "record-from-answer-dual",
                "recording_status_callback": self.url("/twilio/voice/recording"),
            }
        dial = Dial(**dial_kw)
        for username in targets:
            dial.client(
                username,
                status_callback=self.url("/twilio/voice/leg-status"),
                status_callback_event="answered completed",
            )
        return dial

    async def _owner(self, caller: str) -> str | None:
        matches = await self.store.contacts.find_by_phone(caller) if caller else []
        return matches[0].owner_username if len(matches) == 1 else None

    async def incoming(self, request: web.Request) -> web.Response:
        """A known customer's own salesperson first: alone for `owner_first_seconds` (then everyone
        else online, else the queue), or alone as before when owner-first is off; an unknown or
        unowned caller rings every online rep, else waits in the queue."""
        params = await self.verified(request)
        if isinstance(params, web.Response):
            return params
        try:
            owner = await self._owner(params.get("From", ""))
            online = await self.online_users()
            resp = VoiceResponse()
            if owner and owner in online:
                targets = [owner]
                if self.owner_first_seconds > 0:
                    resp.append(self._dial(targets, timeout=self.owner_first_seconds, then="others"))
                else:
                    resp.append(self._dial(targets, timeout=20, then=None))
            else:
                targets = online
                if targets:
                    resp.append(self._dial(targets, timeout=20, then=None))
                else:
                    resp.enqueue(self.fallback_queue)
            queue = None if targets else self.fallback_queue
            events = self.folder.incoming(params, [CLIENT_PREFIX + u for u in targets], queue)
        except TwilioParamError as exc:
            return _error(400, "invalid", str(exc), exc.field)
        await self._feed(events)
        return twiml(resp)

    async def _after_owner(self, params: dict[str, str]) -> web.Response:
        """The owner did not take their customer's call in time: ring everyone else online (their
        pops go out now), else put the caller in the queue."""
        owner = await self._owner(params.get("From", ""))
        others = [u for u in await self.online_users() if u != owner]
        resp = VoiceResponse()
        if others:
            resp.append(self._dial(others, timeout=20, then=None))
        else:
            resp.enqueue(self.fallback_queue)
        try:
            events = self.folder.incoming(params, [CLIENT_PREFIX + u for u in others], None)
        except TwilioParamError as exc:
            return _error(400, "invalid", str(exc), exc.field)
        await self._feed(events)
        return twiml(resp)

    async def leg_status(self, request: web.Request) -> web.Response:
        params = await self.verified(request)
        if isinstance(params, web.Response):
            return params
        try:
            events = self.folder.leg_status(params)
        except TwilioParamError as exc:
            return _error(400, "invalid", str(exc), exc.field)
        await self._feed(events)
        return web.Response(status=204)

    async def status(self, request: web.Request) -> web.Response:
        params = await self.verified(request)
        if isinstance(params, web.Response):
            return params
        try:
            events = self.folder.call_status(params)
        except TwilioParamError as exc:
            return _error(400, "invalid", str(exc), exc.field)
        await self._feed(events)
        return web.Response(status=204)

    async def dial_result(self, request: web.Request) -> web.Response:
        """After the <Dial>: hang up when it was answered, else apologise (the status ends the call)."""
        params = await self.verified(request)
        if isinstance(params, web.Response):
            return params
        resp = VoiceResponse()
        if request.query.get("outbound"):
            # our outbound call: note how the customer's leg went; the agent hears why it ended
            try:
                self.folder.dial_result(params)
            except TwilioParamError as exc:
                return _error(400, "invalid", str(exc), exc.field)
            status = params.get("DialCallStatus")
            if status in ("busy", "no-answer", "failed"):
                resp.say(
                    {"busy": "The line is busy.", "no-answer": "No answer."}.get(status, "The call failed.")
                )
        elif request.query.get("then") == "others" and params.get("DialCallStatus") not in (
            "completed",
            "answered",
        ):
            return await self._after_owner(params)
        elif params.get("DialCallStatus") not in ("completed", "answered"):
            with contextlib.suppress(TwilioParamError):
                self.folder.dial_result(params)  # nobody took it: a missed call, not an abandoned one
            resp.say("Sorry, nobody could take your call. We will call you back shortly.")
        resp.hangup()
        return twiml(resp)

    async def outbound_connect(self, request: web.Request) -> web.Response:
        """TwiML for a click-to-call once the agent's leg answers: dial the customer."""
        params = await self.verified(request)
        if isinstance(params, web.Response):
            return params
        to = request.query.get("to", "")
        if not to:
            return _error(400, "invalid", "to is missing", "to")
        resp = VoiceResponse()
        dial_kw: dict[str, Any] = {
            "caller_id": request.query.get("caller_id") or None,
            "action": self.url("/twilio/voice/dial-result?outbound=1"),
            "method": "POST",
        }
        if self.record:
            dial_kw |= {
                "record": "record-from-answer-dual",
                "recording_status_callback": self.url("/twilio/voice/recording"),
            }
        dial = Dial(**{k: v for k, v in dial_kw.items() if v})
        dial.number(to)
        resp.append(dial)
        return twiml(resp)

    async def click_to_call(self, client: Any, *, username: str, number: str, caller_id: str) -> str:
        """Ring the rep's Twilio Client, then (TwiML at outbound-connect) dial the customer; the CallSid.

        Creating a call is not idempotent, so a timeout is reported, never retried.
        """
        from urllib.parse import urlencode

        call = await client.calls.create_async(
            to=CLIENT_PREFIX + username,
            from_=caller_id,
            url=self.url(
                "/twilio/voice/outbound-connect?" + urlencode({"to": number, "caller_id": caller_id})
            ),
            method="POST",
            status_callback=self.url("/twilio/voice/status"),
            status_callback_event=["initiated", "ringing", "answered", "completed"],
            status_callback_method="POST",
        )
        self.folder.outbound_started(call.sid, CLIENT_PREFIX + username, number, caller_id)
        from cti.events import CallRinging

        await self.service.handle(
            CallRinging(
                call.sid, "outbound", caller_id, number, CLIENT_PREFIX + username, None, self.folder.now()
            )
        )
        return str(call.sid)

    async def recording(self, request: web.Request) -> web.Response:
        """Recording status callback: keep the pointer durably, then the downloader fetches the audio."""
        params = await self.verified(request)
        if isinstance(params, web.Response):
            return params
        if params.get("RecordingStatus", "completed") != "completed":
            return web.Response(status=204)
        for name in ("RecordingSid", "RecordingUrl", "CallSid"):
            if not params.get(name):
                return _error(400, "invalid", f"{name} is missing", name)
        if self.recordings is None:
            return _error(503, "unavailable", "recordings are not enabled")
        try:
            await self.recordings.remember_remote(
                "twilio", params["RecordingSid"], params["CallSid"], params["RecordingUrl"] + ".wav"
            )
        except ValueError as exc:
            return _error(400, "invalid", str(exc), "RecordingSid")
        if self.on_recording is not None:
            self.on_recording()
        return web.Response(status=204)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/twilio/voice/incoming", self.incoming),
            web.post("/twilio/voice/leg-status", self.leg_status),
            web.post("/twilio/voice/status", self.status),
            web.post("/twilio/voice/dial-result", self.dial_result),
            web.post("/twilio/voice/outbound-connect", self.outbound_connect),
        ]


def signed_headers(validator: RequestValidator, url: str, params: Mapping[str, str]) -> dict[str, str]:
    """Headers Twilio would send for these parameters (used by simulators and tests)."""
    return {"X-Twilio-Signature": validator.compute_signature(url, dict(params))}
