"""A local stand-in for the parts of Twilio's REST API Switchboard uses, on a real loopback socket.

It checks HTTP basic auth (Account SID : Auth Token), answers in Twilio's JSON shapes (a created
call is `201` with `sid` "CA…", `status` "queued"; errors are `{"code", "message", "more_info",
"status"}`), fetches the call's TwiML from `Url` the way Twilio does (a signed POST), then drives the
call's lifecycle with signed status callbacks (`X-Twilio-Signature`, computed with the twilio
library's RequestValidator) to `StatusCallback`. Every request is kept for assertions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

API = "/2010-04-01/Accounts/{account}"


def _dial_of(twiml: str) -> tuple[str, str] | None:
    """The number a TwiML document dials and its <Dial action> URL, if it dials a number."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(twiml)
    except ET.ParseError:
        return None
    dial = root.find("Dial")
    number = dial.find("Number") if dial is not None else None
    if dial is None or number is None or not (number.text or "").strip():
        return None
    return (number.text or "").strip(), dial.get("action", "")


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class FakeCall:
    sid: str
    to: str
    from_: str
    url: str
    status_callback: str | None
    status: str = "queued"
    twiml: str = ""
    callbacks: list[dict[str, str]] = field(default_factory=list)


class FakeTwilioApi:
    """`async with FakeTwilioApi(account_sid, auth_token) as api:` then point the client at `api.base_url`."""

    def __init__(
        self, account_sid: str, auth_token: str, *, talk_seconds: float = 0.2, outcome: str = "completed"
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.talk_seconds = talk_seconds
        self.outcome = outcome  # completed | busy | no-answer | failed
        # how a <Dial><Number> leg goes, by number (default completed): completed | busy | no-answer | failed
        self.dial_outcomes: dict[str, str] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.calls: dict[str, FakeCall] = {}
        self.fail_next: int | None = None  # answer the next create with this HTTP status
        self.recordings: dict[str, bytes] = {}
        self.messages: dict[str, dict[str, str]] = {}
        self.message_status: dict[str, str] = {}
        self.message_created: dict[str, datetime] = {}
        self.drop_next_response = False  # create the next message but never answer the request
        self.unsubscribed: set[str] = set()  # numbers that texted STOP to Twilio (error 21610)
        self.message_outcome: dict[
            str, str
        ] = {}  # To -> delivered | undelivered | failed  # RecordingSid -> WAV bytes served at .../Recordings/{sid}.wav
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.base_url = ""

    async def __aenter__(self) -> FakeTwilioApi:
        app = web.Application()
        base = API.format(account="{account}")
        app.router.add_post(base + "/Calls.json", self._create_call)
        app.router.add_get(base + "/Calls/{sid}.json", self._get_call)
        app.router.add_get(base + "/Recordings/{sid}.wav", self._get_recording)
        app.router.add_post(base + "/Messages.json", self._create_message)
        app.router.add_get(base + "/Messages.json", self._list_messages)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _error(self, status: int, code: int, message: str) -> web.Response:
        return web.json_response(
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status=status,
        )

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return (
            user == self.account_sid
            and password == self.auth_token
            and request.match_info["account"] == self.account_sid
        )

    def _call_json(self, call: FakeCall) -> dict[str, Any]:
        return {
            "sid": call.sid,
            "account_sid": self.account_sid,
            "to": call.to,
            "from": call.from_,
            "status": call.status,
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "uri": f"{API.format(account=self.account_sid)}/Calls/{call.sid}.json",
        }

    async def _create_call(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append(("POST", request.path, form))
        if not self._authorized(request):
            return self._error(401, 20003, "Authenticate")
        if self.fail_next is not None:
            status, self.fail_next = self.fail_next, None
            return self._error(status, 20500, "Internal Server Error")
        for name in ("To", "From"):
            if not form.get(name):
                return self._error(400, 21201 if name == "To" else 21213, f"No '{name}' number is specified")
        if not form.get("Url") and not form.get("Twiml"):
            return self._error(400, 21205, "Url parameter is required")
        call = FakeCall(_sid("CA"), form["To"], form["From"], form.get("Url", ""), form.get("StatusCallback"))
        self.calls[call.sid] = call
        task = asyncio.create_task(self._lifecycle(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(self._call_json(call), status=201)

    async def _get_call(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(401, 20003, "Authenticate")
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return self._error(404, 20404, "The requested resource was not found")
        return web.json_response(self._call_json(call))

    async def _create_message(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append(("POST", request.path, form))
        if not self._authorized(request):
            return self._error(401, 20003, "Authenticate")
        if self.fail_next is not None:
            status, self.fail_next = self.fail_next, None
            return self._error(status, 20500 if status >= 500 else 21211, "Error")
        to = form.get("To", "")
        if not to.startswith("+") or not to[1:].isdigit():
            return self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if to in self.unsubscribed:
            return self._error(400, 21610, "Attempt to send to unsubscribed recipient")
        if not form.get("Body"):
            return self._error(400, 21602, "Message body is required.")
        sid = _sid("SM")
        self.messages[sid] = form
        self.message_status[sid] = "queued"
        self.message_created[sid] = datetime.now(UTC)
        task = asyncio.create_task(self._message_lifecycle(sid, form))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self.drop_next_response:
            # the message is created, but the answer never reaches the client (a crash, a timeout)
            self.drop_next_response = False
            await asyncio.sleep(2.0)  # longer than the test lets the client live
        return web.json_response(self._message_json(sid), status=201)

    def _message_json(self, sid: str) -> dict[str, Any]:
        """A Message resource as Twilio's API shows it."""
        form = self.messages[sid]
        body = form.get("Body", "")
        return {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": form.get("To"),
            "from": form.get("From"),
            "body": body,
            "status": self.message_status.get(sid, "queued"),
            "num_segments": str(max(1, -(-len(body) // 153)) if len(body) > 160 else 1),
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "error_code": None,
            "error_message": None,
            "date_created": format_datetime(self.message_created[sid]),
            "uri": f"{API.format(account=self.account_sid)}/Messages/{sid}.json",
        }

    async def _message_lifecycle(self, sid: str, form: dict[str, str]) -> None:
        callback = form.get("StatusCallback")
        if not callback:
            self.message_status[sid] = "sent"
            return
        final = self.message_outcome.get(form["To"], "delivered")
        for status in ("sent", final):
            await asyncio.sleep(0.01)
            self.message_status[sid] = status
            params = {
                "MessageSid": sid,
                "SmsSid": sid,
                "AccountSid": self.account_sid,
                "From": form.get("From", ""),
                "To": form["To"],
                "MessageStatus": status,
                "SmsStatus": status,
                "ApiVersion": "2010-04-01",
            }
            if status in ("undelivered", "failed"):
                params["ErrorCode"] = "30003"
            with contextlib.suppress(aiohttp.ClientError):
                resp = await self._signed_post(callback, params)
                resp.release()

    async def _list_messages(self, request: web.Request) -> web.Response:
        """Message list, newest first, filtered by To / From as Twilio's list resource does."""
        if not self._authorized(request):
            return self._error(401, 20003, "Authenticate")
        q = request.query
        items = [
            self._message_json(sid)
            for sid, form in sorted(
                self.messages.items(), key=lambda kv: self.message_created[kv[0]], reverse=True
            )
            if all(not q.get(k) or form.get(k) == q[k] for k in ("To", "From"))
        ]
        size = int(q.get("PageSize", "50"))
        base = API.format(account=self.account_sid) + "/Messages.json"
        return web.json_response(
            {
                "messages": items[:size],
                "page": 0,
                "page_size": size,
                "start": 0,
                "end": min(size, len(items)) - 1,
                "uri": base,
                "first_page_uri": base,
                "next_page_uri": None,
                "previous_page_uri": None,
            }
        )

    async def send_inbound(
        self, url: str, sender: str, to: str, body: str, *, message_sid: str | None = None
    ) -> int:
        """A customer's message, posted to an incoming-message webhook the way Twilio does; the status.
        `message_sid`: the sid of a message posted before (Twilio retrying its webhook)."""
        params = {
            "MessageSid": message_sid or _sid("SM"),
            "AccountSid": self.account_sid,
            "From": sender,
            "To": to,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": "1",
            "ApiVersion": "2010-04-01",
        }
        resp = await self._signed_post(url, params)
        resp.release()
        return resp.status

    async def _get_recording(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(401, 20003, "Authenticate")
        audio = self.recordings.get(request.match_info["sid"])
        if audio is None:
            return self._error(404, 20404, "The requested resource was not found")
        return web.Response(body=audio, content_type="audio/x-wav")

    def recording_url(self, sid: str) -> str:
        """Where Twilio would say a recording is (without the .wav a client adds)."""
        return f"https://api.twilio.com{API.format(account=self.account_sid)}/Recordings/{sid}"

    async def _signed_post(self, url: str, params: dict[str, str]) -> aiohttp.ClientResponse:
        assert self._session is not None
        sig = RequestValidator(self.auth_token).compute_signature(url, params)
        return await self._session.post(url, data=params, headers={"X-Twilio-Signature": sig})

    async def _status(self, call: FakeCall, status: str, **extra: str) -> None:
        call.status = status
        if not call.status_callback:
            return
        params = {
            "CallSid": call.sid,
            "AccountSid": self.account_sid,
            "From": call.from_,
            "To": call.to,
            "CallStatus": status,
            "Direction": "outbound-api",
            "ApiVersion": "2010-04-01",
            **extra,
        }
        call.callbacks.append(params)
        with contextlib.suppress(aiohttp.ClientError):
            resp = await self._signed_post(call.status_callback, params)
            resp.release()

    async def _lifecycle(self, call: FakeCall) -> None:
        await asyncio.sleep(0.02)
        await self._status(call, "ringing")
        if self.outcome != "completed":
            await self._status(call, self.outcome, CallDuration="0")
            return
        await self._status(call, "in-progress")
        if call.url:
            params = {
                "CallSid": call.sid,
                "AccountSid": self.account_sid,
                "From": call.from_,
                "To": call.to,
                "CallStatus": "in-progress",
                "Direction": "outbound-api",
            }
            with contextlib.suppress(aiohttp.ClientError):
                resp = await self._signed_post(call.url, params)
                call.twiml = await resp.text()
        dial = _dial_of(call.twiml)
        if dial is not None:
            # the TwiML dials a number: that leg rings, then is answered, busy or not answered; Twilio
            # then requests the <Dial action> with DialCallStatus and continues with its TwiML
            number, action = dial
            outcome = self.dial_outcomes.get(number, "completed")
            await asyncio.sleep(0.02)
            if outcome == "completed":
                await asyncio.sleep(self.talk_seconds)
            if action:
                dial_params = params | {
                    "DialCallStatus": outcome,
                    "DialCallDuration": str(max(1, round(self.talk_seconds)))
                    if outcome == "completed"
                    else "0",
                }
                with contextlib.suppress(aiohttp.ClientError):
                    resp = await self._signed_post(action, dial_params)
                    resp.release()
            await self._status(call, "completed", CallDuration=str(max(1, round(self.talk_seconds))))
            return
        await asyncio.sleep(self.talk_seconds)
        await self._status(call, "completed", CallDuration=str(max(1, round(self.talk_seconds))))
