"""Boards of several instances fed the same inputs agree: what one board takes (a call event, a tab,
a pause) is relayed to the other, and an agent's tabs count per instance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from crm_link.clock import ManualClock
from crm_link.models import User
from cti.events import CallAnswered, CallEnded, CallRinging
from reports.board import AgentBoard

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
ANN = User(1, "ann", "Ann Rep", None, "rep", "1001", True, None)


def _board(clock: ManualClock) -> tuple[AgentBoard, list[dict[str, Any]]]:
    published: list[dict[str, Any]] = []

    async def publish(message: dict[str, Any], user_id: int | None) -> None:
        published.append(message)

    board = AgentBoard(clock, publish, time_zone="UTC", wrap_up_s=30)
    board.load([ANN])
    return board, published


def _state(board: AgentBoard) -> str:
    return board.agents[ANN.id].state


async def test_two_instances_boards_take_each_others_inputs_and_agree() -> None:
    clock = ManualClock(T0)
    a, _ = _board(clock)
    b, b_published = _board(clock)
    outbox: list[dict[str, Any]] = []
    a.relay = lambda item: outbox.append(item | {"i": "inst-a"})

    async def deliver() -> None:
        while outbox:
            await b.apply(outbox.pop(0), ANN)

    await a.presence(ANN, True)  # ann's tab is on a
    await deliver()
    assert _state(a) == _state(b) == "ready" and b.agents[ANN.id].where == {"inst-a"}

    ring = CallRinging("c1", "inbound", "+15551234567", "7000", "PJSIP/1001", "sales", T0)
    await a.call_event(ring, ANN)
    await deliver()
    assert _state(a) == _state(b) == "ringing" and b.waiting() == {"sales": 1}
    await a.call_event(CallAnswered("c1", "PJSIP/1001", T0), ANN)
    await deliver()
    assert _state(a) == _state(b) == "talking" and b.waiting() == {}
    clock.advance(seconds=40)
    end = CallEnded(
        "c1", "inbound", "+15551234567", "7000", True, "PJSIP/1001", "sales",
        T0, T0, clock(), 40.0, 40.0, 16, "Normal Clearing", None,
    )  # fmt: skip
    await a.call_event(end, ANN)
    await deliver()
    assert _state(a) == _state(b) == "wrap_up"
    assert a.agents[ANN.id].counts == b.agents[ANN.id].counts == {"answered": 1, "outbound": 0, "talk_s": 40}
    assert await a.set_state(ANN, "paused") == a.agents[ANN.id].as_json()
    await deliver()
    assert _state(a) == _state(b) == "paused"
    assert b_published[-1] == {"type": "agent", "agent": b.agents[ANN.id].as_json()}


async def test_an_agents_tabs_count_per_instance_and_a_silent_instance_stops_counting() -> None:
    clock = ManualClock(T0)
    board, _ = _board(clock)
    await board.presence(ANN, True)  # a tab here
    await board.present_at("inst-b", {ANN.id})  # and one on b (b's periodic word)
    await board.presence(ANN, False)  # the tab here closes: the one on b still counts
    assert _state(board) == "ready"
    clock.advance(timedelta(minutes=1))
    assert await board.present_at("inst-b", ()) == 1  # b went silent (or closed its last tab)
    assert _state(board) == "offline" and board.agents[ANN.id].where == set()
    assert await board.present_at("inst-b", ()) == 0  # nothing more to change
    # an instance's word about a user this board had not loaded yet
    bob = User(2, "bob", "Bob", None, "rep", "1002", True, None)
    assert await board.present_at("inst-c", {bob.id}, [bob]) == 1
    assert board.agents[bob.id].state == "ready"
