"""Surveys end to end over HTTP: versions, answers checked against what was asked, once per call,
locked answers corrected by a manager as a new version, a dissatisfied customer escalated onto the
manager's day with the answers, the resolution on the timeline; and the pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_link.clock import ManualClock
from crm_link.contacts import validate_contact
from crm_link.errors import ValidationError
from crm_link.touches import TouchInput
from followups.surveys import check_answers, parse_survey, score, shown
from switchboard.app import create_app
from switchboard.keys import STORE
from switchboard.settings import Settings
from tests.conftest import Api, make_api

NOW = datetime(2026, 6, 15, 15, 0, tzinfo=UTC)

AFTER_SERVICE: dict[str, Any] = {
    "name": "After service",
    "script": "Hi {first name}, this is Ann from the dealership: two minutes about your service visit?",
    "questions": [
        {
            "key": "overall",
            "text": "Overall satisfaction?",
            "type": "scale",
            "min": 1,
            "max": 5,
            "required": True,
        },
        {"key": "on_time", "text": "Was the car ready on time?", "type": "yes_no"},
        {
            "key": "reasons",
            "text": "What went wrong?",
            "type": "multi",
            "options": ["waiting time", "price", "advisor", "car not clean"],
            "required": True,
            "show_if": {"key": "overall", "op": "lte", "value": 2},
        },
        {"key": "better", "text": "What could we do better?", "type": "text"},
    ],
    "dissatisfied_if": {"key": "overall", "op": "lte", "value": 2},
    "escalate_to": "role:manager",
}


@pytest.fixture
async def sclient(aiohttp_client: Any, settings: Settings) -> Any:
    return await aiohttp_client(create_app(settings, clock=ManualClock(NOW)))


async def _put(api: Api, path: str, body: Any) -> Any:
    return await api.client.put(path, json=body, headers={"Authorization": f"Bearer {api.token}"})


async def _setup(client: Any) -> tuple[Api, Api, int, str]:
    """A rep, a manager, the rep's customer and a call the rep had with her."""
    store = client.server.app[STORE]
    ann = await make_api(client, "ann", "rep", extension="1001")
    boss = await make_api(client, "maria", "manager")
    jane = await store.contacts.create(
        validate_contact(
            {"first_name": "Jane", "last_name": "Doe", "phones": ["+12127365001"], "owner": "ann"},
            region="US",
        )
    )
    await store.touches.record(
        TouchInput(
            source_key="asterisk:1750000000.1",
            kind="call",
            direction="outbound",
            started_at=NOW - timedelta(minutes=5),
            ended_at=NOW - timedelta(minutes=1),
            contact_id=jane.id,
            user_id=ann.user.id,
            channel="asterisk",
            status="answered",
            number="+12127365001",
        )
    )
    return ann, boss, jane.id, "asterisk:1750000000.1"


async def _error(resp: Any, status: int) -> dict[str, Any]:
    body = await resp.json()
    assert resp.status == status, body
    return dict(body["error"])


async def test_surveys_are_versioned_and_bad_definitions_name_the_field(sclient: Any) -> None:
    ann, boss, _, _ = await _setup(sclient)
    r = await boss.post("/api/v1/surveys", AFTER_SERVICE)
    created = await r.json()
    assert r.status == 201, created
    assert created["version"] == 1 and created["satisfied_at"] == 4.0 and created["reasons_key"] == "reasons"
    sid = created["id"]
    assert (await ann.post("/api/v1/surveys", AFTER_SERVICE | {"name": "x"})).status == 403
    bad: list[tuple[dict[str, Any], str]] = [
        ({"questions": [{"key": "a", "text": "A?", "type": "stars"}]}, "questions[0].type"),
        (
            {
                "questions": [
                    {"key": "a", "text": "A?", "type": "scale"},
                    {
                        "key": "b",
                        "text": "B?",
                        "type": "text",
                        "show_if": {"key": "nope", "op": "eq", "value": 1},
                    },
                ]
            },
            "questions[1].show_if.key",
        ),
        (
            {"questions": [{"key": "a", "text": "A?", "type": "choice", "options": []}]},
            "questions[0].options",
        ),
        ({"dissatisfied_if": {"key": "overall", "op": "lte", "value": "two"}}, "dissatisfied_if.value"),
        ({"escalate_to": "nobody"}, "escalate_to"),
        ({"escalate_to": "user:ghost"}, "escalate_to"),
    ]
    for patch, field in bad:
        err = await _error(await boss.post("/api/v1/surveys", AFTER_SERVICE | {"name": "Bad"} | patch), 400)
        assert err["field"] == field, (patch, err)
    assert (await boss.post("/api/v1/surveys", AFTER_SERVICE)).status == 409  # same name
    edited = AFTER_SERVICE | {"script": "New script"}
    r = await _put(boss, f"/api/v1/surveys/{sid}", edited)
    v2 = await r.json()
    assert r.status == 200 and v2["version"] == 2 and v2["script"] == "New script"
    v1 = await (await ann.get(f"/api/v1/surveys/{sid}?version=1")).json()
    assert v1["version"] == 1 and v1["script"] == AFTER_SERVICE["script"] and v1["current_version"] == 2


async def test_answers_are_checked_locked_once_per_call_and_corrected_as_a_new_version(sclient: Any) -> None:
    ann, boss, jane, call = await _setup(sclient)
    store = sclient.server.app[STORE]
    sid = (await (await boss.post("/api/v1/surveys", AFTER_SERVICE)).json())["id"]
    url = f"/api/v1/surveys/{sid}/responses"
    cases = [
        ({"overall": 6}, "answers.overall", "out_of_range"),
        ({"overall": 5, "reasons": ["price"]}, "answers.reasons", "invalid"),  # not asked at 5
        ({"overall": 2}, "answers.reasons", "required"),  # asked at 2, required
        ({"on_time": True}, "answers.overall", "required"),
        ({"overall": 4, "colour": "red"}, "answers.colour", "invalid"),
        ({"overall": 2, "reasons": ["rude"]}, "answers.reasons", "invalid"),
    ]
    for answers, field, code in cases:
        err = await _error(
            await ann.post(url, {"contact_id": jane, "call_id": call, "answers": answers}), 400
        )
        assert (err["field"], err["code"]) == (field, code), answers
    # an edit after the call does not change what the rep's answers are checked against
    r = await _put(boss, f"/api/v1/surveys/{sid}", AFTER_SERVICE | {"script": "v2"})
    assert r.status == 200
    r = await ann.post(
        url,
        {
            "contact_id": jane,
            "call_id": call,
            "answers": {"overall": 4, "on_time": False, "better": " coffee "},
        },
    )
    given_ = await r.json()
    assert r.status == 201, given_
    assert given_["answers"] == {"overall": 4, "on_time": False, "better": "coffee"}
    assert given_["survey_version"] == 2 and given_["satisfied"] is True and given_["dissatisfied"] is False
    again = await ann.post(url, {"contact_id": jane, "call_id": call, "answers": {"overall": 5}})
    assert (await _error(again, 409))["field"] == "call_id"
    # the answers sit on the customer's timeline, linked with the call's touch (now "completed survey")
    history = (await store.touches.history(jane)).items
    note = next(t for t in history if t.channel == "survey")
    assert "Overall satisfaction? 4" in note.summary and "Was the car ready on time? no" in note.summary
    call_touch = next(t for t in history if t.kind == "call")
    assert (
        call_touch.payload["survey_response_id"] == given_["id"]
        and note.payload["call_touch_id"] == call_touch.id
    )
    assert call_touch.payload["disposition"] == "completed survey"
    # locked: the rep cannot change them; the manager's correction is version 2 with who and why
    rid = given_["id"]
    fix = {"answers": {"overall": 5, "on_time": False, "better": "coffee"}, "reason": "customer called back"}
    assert (await _put(ann, f"/api/v1/survey-responses/{rid}", fix)).status == 403
    err = await _error(await _put(boss, f"/api/v1/survey-responses/{rid}", {"answers": fix["answers"]}), 400)
    assert err["field"] == "reason"
    err = await _error(
        await _put(boss, f"/api/v1/survey-responses/{rid}", fix | {"answers": {"overall": 0}}), 400
    )
    assert err["field"] == "answers.overall"
    r = await _put(boss, f"/api/v1/survey-responses/{rid}", fix)
    corrected = await r.json()
    assert r.status == 200, corrected
    assert corrected["answers"]["overall"] == 5 and corrected["answers_version"] == 2
    v1, v2 = corrected["versions"]
    assert v1["answers"]["overall"] == 4 and v1["by"] == "ann"
    assert (v2["version"], v2["by"], v2["reason"], v2["answers"]) == (
        2,
        "maria",
        "customer called back",
        fix["answers"],
    )
    assert v2["at"] == "2026-06-15T15:00:00Z"
    seen = await (await ann.get(f"/api/v1/survey-responses/{rid}")).json()
    assert seen["score"] == 5 and len(seen["versions"]) == 2
    note = await store.touches.by_source_key(f"survey:{rid}")
    assert note is not None and "corrected by maria: customer called back" in note.summary


async def test_a_low_score_puts_a_follow_up_with_the_answers_on_the_managers_day(sclient: Any) -> None:
    ann, boss, jane, call = await _setup(sclient)
    store = sclient.server.app[STORE]
    sid = (await (await boss.post("/api/v1/surveys", AFTER_SERVICE)).json())["id"]
    r = await ann.post(
        f"/api/v1/surveys/{sid}/responses",
        {
            "contact_id": jane,
            "call_id": call,
            "answers": {"overall": 2, "reasons": ["waiting time", "price"]},
        },
    )
    resp = await r.json()
    assert r.status == 201 and resp["dissatisfied"] is True and resp["followup_id"] is not None
    day = await (await boss.get("/api/v1/followups?pool=managers")).json()
    (f,) = day["items"]
    assert f["id"] == resp["followup_id"] and f["contact_id"] == jane
    assert "Overall satisfaction? 2" in f["reason"] and "price" in f["reason"]
    # the rep neither sees it on their day nor resolves it
    assert all(i["id"] != f["id"] for i in (await (await ann.get("/api/v1/followups")).json())["items"])
    rid = resp["id"]
    body = {"text": "refunded the diagnostic fee", "satisfied": True}
    assert (await ann.post(f"/api/v1/survey-responses/{rid}/resolution", body)).status == 403
    err = await _error(await boss.post(f"/api/v1/survey-responses/{rid}/resolution", {"text": "x"}), 400)
    assert err["field"] == "satisfied"
    r = await boss.post(f"/api/v1/survey-responses/{rid}/resolution", body)
    done = await r.json()
    assert r.status == 200 and done["resolution"]["satisfied"] is True and done["resolution"]["by"] == "maria"
    assert (await boss.post(f"/api/v1/survey-responses/{rid}/resolution", body)).status == 409
    closed = await store.followups.get(f["id"])
    assert closed.status == "done" and closed.result == "resolved: satisfied now"
    summaries = [t.summary for t in (await store.touches.history(jane)).items]
    assert any("refunded the diagnostic fee" in s and "satisfied now" in s for s in summaries)
    assert any("Overall satisfaction? 2" in s for s in summaries)


async def test_escalation_goes_to_a_named_user_and_a_correction_can_escalate(sclient: Any) -> None:
    ann, boss, jane, call = await _setup(sclient)
    await make_api(sclient, "sam", "manager")
    spec = AFTER_SERVICE | {"name": "To Sam", "escalate_to": "user:sam"}
    sid = (await (await boss.post("/api/v1/surveys", spec)).json())["id"]
    r = await ann.post(
        f"/api/v1/surveys/{sid}/responses", {"contact_id": jane, "call_id": call, "answers": {"overall": 3}}
    )
    resp = await r.json()
    assert r.status == 201 and resp["followup_id"] is None
    fix = {"answers": {"overall": 1, "reasons": ["advisor"]}, "reason": "typed 3 for 1"}
    corrected = await (await _put(boss, f"/api/v1/survey-responses/{resp['id']}", fix)).json()
    f = await sclient.server.app[STORE].followups.get(corrected["followup_id"])
    assert f.assignee_username == "sam" and "advisor" in f.note


# pure rules ---------------------------------------------------------------------------------


def test_show_if_follows_the_answers_given() -> None:
    spec = parse_survey(AFTER_SERVICE)
    assert [q.key for q in shown(spec, {"overall": 5})] == ["overall", "on_time", "better"]
    assert "reasons" in [q.key for q in shown(spec, {"overall": 1})]
    s = score(spec, check_answers(spec, {"overall": 1, "reasons": ["price"]}))
    assert (s.score, s.satisfied, s.dissatisfied, s.reasons) == (1.0, False, True, ["price"])
    nps = parse_survey(
        {
            "name": "NPS",
            "questions": [{"key": "nps", "text": "Recommend us?", "type": "scale", "min": 0, "max": 10}],
        }
    )
    assert nps.is_nps and nps.satisfied_at == 7.0


@given(st.integers(-5, 15), st.lists(st.sampled_from(["waiting time", "price", "advisor", "x"]), max_size=4))
def test_answers_are_either_refused_with_a_field_or_within_the_questions(
    overall: int, reasons: list[str]
) -> None:
    spec = parse_survey(AFTER_SERVICE)
    try:
        clean = check_answers(spec, {"overall": overall, "reasons": reasons})
    except ValidationError as exc:
        assert exc.field in ("answers.overall", "answers.reasons")
        return
    assert 1 <= clean["overall"] <= 5
    assert ("reasons" in clean) == (clean["overall"] <= 2)
    assert set(clean.get("reasons", [])) <= {"waiting time", "price", "advisor", "car not clean"}


# on a call list and a cadence step --------------------------------------------------------


async def test_a_list_carries_its_survey_and_an_unreached_customer_counts_as_unreachable(
    sclient: Any,
) -> None:
    ann, boss, jane, _ = await _setup(sclient)
    store = sclient.server.app[STORE]
    sid = (await (await boss.post("/api/v1/surveys", AFTER_SERVICE)).json())["id"]
    bad = await boss.post("/api/v1/call-lists", {"name": "L", "contact_ids": [jane], "survey_id": 999})
    assert (await _error(bad, 400))["field"] == "survey_id"
    r = await boss.post(
        "/api/v1/call-lists",
        {"name": "After service", "contact_ids": [jane], "survey_id": sid, "max_attempts": 1},
    )
    cl = await r.json()
    assert r.status == 201 and cl["survey_id"] == sid
    await boss.post(f"/api/v1/call-lists/{cl['id']}/start", {})
    # the preview card (the pop of next-call) shows the survey: script and questions
    nxt = await (await ann.post("/api/v1/agent/next-call", {})).json()
    assert nxt["pop"]["survey"]["id"] == sid and nxt["pop"]["survey"]["script"] == AFTER_SERVICE["script"]
    assert [q["key"] for q in nxt["pop"]["survey"]["questions"]] == [
        "overall",
        "on_time",
        "reasons",
        "better",
    ]
    # the only attempt rings out: the customer is recorded as unreachable for the response rate
    entry_id = nxt["entry"]["id"]
    attempt = await store.call_lists.start_attempt(
        entry_id,
        owner=f"agent:{ann.user.id}",
        agent_id=ann.user.id,
        source="asterisk",
        now=NOW,
        lease=timedelta(minutes=5),
    )
    assert attempt is not None
    await store.call_lists.finish_attempt(attempt.id, "noanswer", now=NOW)
    (resp,) = await store.surveys.responses(survey_id=sid)
    assert (resp.status, resp.contact_id, resp.list_id, resp.answers) == ("unreachable", jane, cl["id"], {})
    # (an unreachable customer has no answers to correct)
    fix = {"answers": {"overall": 3}, "reason": "x"}
    assert (await _put(boss, f"/api/v1/survey-responses/{resp.id}", fix)).status == 400


async def test_a_manager_attaches_and_detaches_a_survey_on_an_existing_list(sclient: Any) -> None:
    ann, boss, jane, _ = await _setup(sclient)
    sid = (await (await boss.post("/api/v1/surveys", AFTER_SERVICE)).json())["id"]
    r = await boss.post("/api/v1/call-lists", {"name": "Plain", "contact_ids": [jane], "start": True})
    cl = await r.json()
    assert r.status == 201 and cl["survey_id"] is None
    path = f"/api/v1/call-lists/{cl['id']}/survey"
    # bad input names the field; reps may not; an unknown list is 404
    for body in ({}, {"survey_id": 999}, {"survey_id": "1"}, {"survey_id": True}):
        assert (await _error(await _put(boss, path, body), 400))["field"] == "survey_id"
    assert (await _put(ann, path, {"survey_id": sid})).status == 403
    assert (await _put(boss, "/api/v1/call-lists/9999/survey", {"survey_id": sid})).status == 404
    # attached: the list says so and its next call's preview card asks it
    r = await _put(boss, path, {"survey_id": sid})
    assert r.status == 200 and (await r.json())["survey_name"] == "After service"
    assert (await (await boss.get(f"/api/v1/call-lists/{cl['id']}")).json())["survey_id"] == sid
    nxt = await (await ann.post("/api/v1/agent/next-call", {})).json()
    assert nxt["pop"]["survey"]["id"] == sid
    # detached: no survey on the list any more
    r = await _put(boss, path, {"survey_id": None})
    assert r.status == 200 and (await r.json())["survey_id"] is None
    assert (await (await boss.get(f"/api/v1/call-lists/{cl['id']}")).json())["survey_id"] is None


async def test_a_cadence_step_with_a_survey_shows_it_on_the_screen_pop(sclient: Any) -> None:
    from cti.screenpop import build_pop

    ann, boss, jane, _ = await _setup(sclient)
    store = sclient.server.app[STORE]
    sid = (await (await boss.post("/api/v1/surveys", AFTER_SERVICE)).json())["id"]
    contact = await store.contacts.get(jane)
    pop = await build_pop(store, {"id": "c1", "direction": "inbound"}, [contact], ann.user)
    assert pop["survey"] is None
    rule = {
        "name": "After service call",
        "date_field": "last_service_date",
        "steps": [{"offset": "+3d", "channel": "call", "survey_id": sid, "reason": "survey call"}],
    }
    r = await boss.post("/api/v1/cadences", rule)
    assert r.status == 201, await r.json()
    day = (NOW - timedelta(days=3)).date().isoformat()
    r = await boss.patch(f"/api/v1/contacts/{jane}", {"attributes": {"last_service_date": day}})
    assert r.status == 200, await r.json()
    pop = await build_pop(store, {"id": "c1", "direction": "inbound"}, [contact], ann.user)
    assert pop["survey"] is not None and pop["survey"]["id"] == sid
