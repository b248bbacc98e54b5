"""Domain events of a call, the same whether it came from Asterisk or Twilio."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Direction = Literal["inbound", "outbound", "internal"]


@dataclass(frozen=True, slots=True)
class CallRinging:
    """An agent's interface is ringing for a call."""

    call_id: str
    direction: Direction
    from_number: str | None
    to_number: str | None
    interface: str
    queue: str | None
    at: datetime
    started_at: datetime | None = None  # when the call arrived (before any phone rang), if known


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """An agent's interface answered the call."""

    call_id: str
    interface: str | None
    at: datetime
    # an attended transfer put the customer through to this interface (who answered the consult call)
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is over: exactly one per call."""

    call_id: str
    direction: Direction
    from_number: str | None
    to_number: str | None
    answered: bool
    answered_by: str | None
    queue: str | None
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    duration_s: float
    talk_s: float | None
    hangup_cause: int | None
    hangup_cause_text: str | None
    transferred_to: str | None
    recording_files: tuple[str, ...] = ()
    # set when the source never reported the end and Switchboard closed the call itself
    closed_reason: str | None = None
    placed_by: str | None = None  # the agent interface that placed an outbound call
    dial_status: str | None = None  # how dialling the customer ended: ANSWER, BUSY, NOANSWER, ...
    abandoned: bool = False  # inbound, unanswered: the caller hung up while waiting for an agent


@dataclass(frozen=True, slots=True)
class RecordingReady:
    """The PBX announced where a call's recording is written."""

    call_id: str
    path: str


CallEvent = CallRinging | CallAnswered | CallEnded | RecordingReady
