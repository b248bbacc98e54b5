"""How the dialer places a call: the agent's leg first, then the customer.

The adapters for Asterisk (AMI Originate) and Twilio (calls.create) live in `switchboard.dialing`,
which wires the dialer to the telephony connectors; this module only says what they must do.
"""

from __future__ import annotations

from typing import Protocol

from crm_link.models import User


class AgentUnavailable(Exception):
    """The agent's leg failed: the customer was never dialed."""


class DialFailed(Exception):
    """The call could not be placed at all (phone system down, request refused)."""


class DialBackend(Protocol):
    """One phone system. `dial` returns the call id once the customer is being dialed; the call's
    end arrives later as a CallEnded through the call service of `source`."""

    source: str

    def name_call(self, attempt_id: int) -> str | None:
        """The id the attempt's call will have, when the phone system lets us choose it (so the
        agent's pop carries the call's id from the start), else None."""
        ...

    async def dial(
        self,
        *,
        agent: User,
        number: str,
        caller_name: str,
        attempt_id: int,
        timeout_s: int,
        call_id: str | None = None,
    ) -> str: ...
