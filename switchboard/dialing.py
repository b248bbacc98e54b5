"""The dialer's phone-system adapters: Asterisk (AMI Originate) and Twilio (calls.create)."""

from __future__ import annotations

import uuid
from typing import Any

from campaigns.dialer.backends import AgentUnavailable, DialFailed
from crm_link.models import User
from cti.ami.client import AmiError

# OriginateResponse Reason codes (Asterisk's AST_CONTROL_* values) for a failed agent leg
_REASONS = {
    "0": "the agent's phone could not be reached",
    "1": "the agent's phone hung up",
    "3": "the agent did not answer",
    "5": "the agent's phone is busy",
    "8": "the agent's phone is congested",
}


class AmiDialBackend:
    """Originate through the Asterisk connector: ring the agent's interface; when the agent answers,
    the dialplan context dials the customer (`Exten` = the number), as click-to-call does."""

    source = "asterisk"

    def __init__(self, asterisk: Any, *, context: str) -> None:
        self.asterisk = asterisk  # cti.asterisk.AsteriskSource
        self.context = context

    async def interface_of(self, agent: User) -> str:
        interface = self.asterisk.directory.dial_interface_of(agent)
        if interface is None:
            raise AgentUnavailable(
                f"{agent.username} has no interface to ring: give them an extension or a [dial_interfaces] entry"
            )
        return str(interface)

    def name_call(self, attempt_id: int) -> str | None:
        """Given to Asterisk as the agent leg's ChannelId: the call's Linkedid, and so its id."""
        return f"attempt-{attempt_id}-{uuid.uuid4().hex[:12]}"

    async def dial(
        self,
        *,
        agent: User,
        number: str,
        caller_name: str,
        attempt_id: int,
        timeout_s: int,
        call_id: str | None = None,
    ) -> str:
        client = self.asterisk.client
        if client.state != "up":
            raise DialFailed("the PBX is not connected")
        interface = await self.interface_of(agent)
        name = caller_name.replace('"', "").replace("\n", " ")
        try:
            resp = await client.originate(
                interface,
                context=self.context,
                exten=number,
                caller_id=f'"{name}" <{number}>',
                timeout_ms=timeout_s * 1000,
                variables={"SWITCHBOARD_USER": agent.username, "SWITCHBOARD_ATTEMPT": str(attempt_id)},
                action_id=f"dial-{attempt_id}",
                wait=timeout_s + 30,
                channel_id=call_id,
            )
        except AmiError as exc:
            raise DialFailed(str(exc)) from None
        if resp.get("Response") != "Success":
            reason = resp.get("Reason") or "0"
            raise AgentUnavailable(_REASONS.get(reason, f"the agent's leg failed (reason {reason})"))
        call_id = resp.get("Uniqueid")
        if not call_id:
            raise DialFailed("the PBX did not say which call it placed")
        return str(call_id)


class TwilioDialBackend:
    """calls.create to the agent's Twilio Client; the outbound-connect TwiML dials the customer.

    Twilio reports the call as one CallSid, so a customer who does not answer and an agent who does
    not answer both end as `noanswer` (the attempt counts).
    """

    source = "twilio"

    def __init__(self, hooks: Any, client: Any, *, caller_id: str) -> None:
        self.hooks = hooks  # cti.twilio_web.TwilioVoiceWebhooks
        self.client = client
        self.caller_id = caller_id

    def name_call(self, attempt_id: int) -> str | None:
        return None  # Twilio names the call (its CallSid)

    async def dial(
        self,
        *,
        agent: User,
        number: str,
        caller_name: str,
        attempt_id: int,
        timeout_s: int,
        call_id: str | None = None,
    ) -> str:
        from twilio.base.exceptions import TwilioRestException

        try:
            return await self.hooks.click_to_call(
                self.client, username=agent.username, number=number, caller_id=self.caller_id
            )
        except TwilioRestException as exc:
            raise DialFailed(f"Twilio refused the call: {exc.msg} (code {exc.code})") from None
