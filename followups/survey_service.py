"""Surveys at work: definitions saved as versions, answers checked and locked, a dissatisfied
customer escalated to a follow-up for `escalate_to`, corrections and resolutions by managers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from crm_link.errors import Conflict, NotFound, ValidationError
from crm_link.models import Touch, User
from crm_link.surveys import NewResponse, Response, SurveyRow
from followups.service import MANAGERS, FollowupService
from followups.sms_reply import parse_score
from followups.surveys import (
    SurveySpec,
    check_answers,
    parse_survey,
    score,
    sms_question,
    sms_text,
    spec_of,
    summary_lines,
)

log = logging.getLogger("followups.surveys")

SURVEY_DISPOSITION = "completed survey"
SMS_SURVEY_WINDOW = timedelta(days=7)  # a reply this long after the survey text may still answer it


def target_of(escalate_to: str) -> str:
    """A survey's `escalate_to` in the follow-up loop's words (`role:manager` is the managers' pool)."""
    return MANAGERS if escalate_to == "role:manager" else escalate_to


class SurveyService:
    """Handlers, the dialer's pages and the SMS path call this; it calls the store and the loop."""

    def __init__(self, loop: FollowupService) -> None:
        self.loop = loop
        self.store = loop.store

    # definitions ------------------------------------------------------------------------------

    async def save(self, survey_id: int | None, data: Any, by: User) -> SurveyRow:
        """Create a survey, or edit one (a new version; answers given keep theirs)."""
        spec = parse_survey(data)
        await self.loop.check_target(target_of(spec.escalate_to), "escalate_to")
        stored = spec.to_dict()
        if survey_id is None:
            row = await self.store.surveys.create(stored, user_id=by.id)
        else:
            row = await self.store.surveys.new_version(survey_id, stored, user_id=by.id)
        await self.store.audit.write(
            "survey.save", user_id=by.id, object_type="survey", object_id=row.id, version=row.version
        )
        return row

    async def definition(self, survey_id: int, version: int | None = None) -> tuple[SurveyRow, SurveySpec]:
        row = await self.store.surveys.get(survey_id, version)
        return row, spec_of(row.spec)

    # answers ----------------------------------------------------------------------------------

    async def submit(
        self,
        survey_id: int,
        contact_id: int,
        answers: Any,
        *,
        by: User | None,
        call_id: str | None = None,
        attempt_id: int | None = None,
        channel: str = "call",
        source_key: str | None = None,
        touch_id: int | None = None,
    ) -> Response:
        """Check and lock a set of answers (once per call: Conflict the second time) and escalate a
        dissatisfied customer."""
        row, spec = await self.definition(survey_id)
        if not row.active:
            raise ValidationError("survey_id", "this survey is switched off")
        clean = check_answers(spec, answers)
        scored = score(spec, clean)
        list_id = None
        if attempt_id is not None:
            attempt = await self.store.call_lists.attempt(attempt_id)
            if attempt.contact_id != contact_id:
                raise ValidationError("attempt_id", "is a call with another customer")
            if call_id is not None and attempt.call_id not in (None, call_id):
                raise ValidationError("call_id", "is not the call of this attempt")
            touch_id, list_id = attempt.touch_id, attempt.list_id
            if touch_id is not None:
                call_id = (await self.store.touches.get(touch_id)).source_key
            source_key = source_key or f"attempt:{attempt_id}"
        elif call_id is not None:
            touch = await self.store.touches.by_source_key(call_id)
            if touch is None or touch.kind != "call":
                raise ValidationError("call_id", f"no call {call_id!r}")
            if touch.contact_id not in (None, contact_id):
                raise ValidationError("call_id", "is a call with another customer")
            touch_id = touch.id
            found = await self.store.call_lists.attempt_by_touch(touch.id)
            if found is not None:
                attempt_id, list_id = found.id, found.list_id
            source_key = source_key or f"call:{call_id}"
        now = self.loop.clock()
        source_key = source_key or f"{channel}:{survey_id}:{contact_id}:{now.isoformat()}"
        response = await self.store.surveys.record(
            NewResponse(
                survey_id=row.id,
                survey_version=row.version,
                source_key=source_key,
                contact_id=contact_id,
                answers=clean,
                score=scored.score,
                satisfied=scored.satisfied,
                dissatisfied=scored.dissatisfied,
                reasons=scored.reasons,
                summary=self._summary(row, spec, clean),
                channel=channel,
                call_id=call_id,
                attempt_id=attempt_id,
                list_id=list_id,
                touch_id=touch_id,
                agent_id=by.id if by else None,
            )
        )
        log.info(
            "event=survey_answered survey=%d response=%d dissatisfied=%s",
            row.id,
            response.id,
            scored.dissatisfied,
        )
        if scored.dissatisfied:
            response = await self._escalate(response, row, spec, clean)
        return response

    # by SMS -----------------------------------------------------------------------------------

    async def sms_text(self, survey_id: int, field_name: str = "survey_id") -> str:
        """The text that asks a survey by SMS ("How was your service? Reply 1-5."); ValidationError
        naming `field_name` when the survey cannot be asked in one question or is switched off."""
        try:
            row, spec = await self.definition(survey_id)
        except NotFound:
            raise ValidationError(field_name, f"no survey {survey_id}") from None
        if not row.active:
            raise ValidationError(field_name, "this survey is switched off")
        return sms_text(spec, field_name)

    async def take_sms_reply(self, text: str, touches: Sequence[Touch]) -> bool:
        """A customer's inbound text (its touches, one per contact with the number): True when it
        answers the survey texted to one of them (stored as that customer's response with the SMS
        touch, escalated when dissatisfied); False when it is not an answer, so it lands as a reply."""
        since = self.loop.clock() - SMS_SURVEY_WINDOW
        by_contact = {t.contact_id: t for t in touches if t.contact_id is not None}
        found = await self.store.surveys.open_sms_survey(list(by_contact), since)
        if found is None:
            return False
        outbox_id, survey_id, contact_id = found
        try:
            row, spec = await self.definition(survey_id)
            q = sms_question(spec)
        except (NotFound, ValidationError):  # deleted, or edited into more than one question since
            return False
        assert q.min is not None and q.max is not None
        value = parse_score(text, q.min, q.max)
        if value is None or not row.active:
            return False
        try:
            await self.submit(
                survey_id,
                contact_id,
                {q.key: value},
                by=None,
                channel="sms",
                source_key=f"sms-survey:{outbox_id}",
                touch_id=by_contact[contact_id].id,
            )
        except Conflict:  # a second reply raced the first: it is a normal reply
            return False
        return True

    @staticmethod
    def _summary(row: SurveyRow, spec: SurveySpec, answers: dict[str, Any], extra: str = "") -> str:
        lines = summary_lines(spec, answers) or ["no answers"]
        return f"Survey “{row.name}” (v{row.version}): " + " · ".join(lines) + extra

    async def _escalate(
        self, response: Response, row: SurveyRow, spec: SurveySpec, answers: dict[str, Any]
    ) -> Response:
        """A follow-up for `escalate_to` carrying the answers (once per response)."""
        assert response.contact_id is not None
        # owner_manager: the manager of the customer's owner; a user or pool gone since: the managers
        assignee_id, pool = await self.loop.escalation_target(
            target_of(spec.escalate_to), response.contact_id
        )
        note = "Dissatisfied customer: " + self._summary(row, spec, answers)
        f, created = await self.store.followups.create(
            response.contact_id,
            self.loop.clock(),
            note=note,
            assignee_id=assignee_id,
            pool=pool,
            kind="survey",
            source_key=f"survey:{response.id}",
        )
        await self.store.surveys.set_followup(response.id, f.id)
        if created:
            await self.loop.followup_added(f)
            await self.store.audit.write(
                "survey.escalate",
                user_id=response.agent_id,
                object_type="survey_response",
                object_id=response.id,
                to=spec.escalate_to,
                followup_id=f.id,
            )
        return await self.store.surveys.response(response.id)

    async def correct(self, response_id: int, answers: Any, reason: str, *, by: User) -> Response:
        """A manager's correction: a new answers version (who, when, why); the old stay."""
        current = await self.store.surveys.response(response_id)
        if current.status != "completed":
            raise ValidationError("answers", "an unreachable customer gave no answers to correct")
        row, spec = await self.definition(current.survey_id, current.survey_version)
        clean = check_answers(spec, answers)
        scored = score(spec, clean)
        updated = await self.store.surveys.correct(
            response_id,
            clean,
            score=scored.score,
            satisfied=scored.satisfied,
            dissatisfied=scored.dissatisfied,
            reasons=scored.reasons,
            summary=self._summary(row, spec, clean, f" (corrected by {by.username}: {reason})"),
            user_id=by.id,
            reason=reason,
        )
        await self.store.audit.write(
            "survey.correct",
            user_id=by.id,
            object_type="survey_response",
            object_id=response_id,
            version=updated.answers_version,
            reason=reason,
        )
        if scored.dissatisfied and current.followup_id is None:
            updated = await self._escalate(updated, row, spec, clean)
            updated.versions.extend(await self.store.surveys.answer_versions(response_id))
        return updated

    async def resolve(self, response_id: int, text: str, satisfied: bool, *, by: User) -> Response:
        """The manager records what was done and whether the customer is satisfied now; the
        escalation follow-up closes with it."""
        current = await self.store.surveys.response(response_id)
        outcome = "satisfied now" if satisfied else "still dissatisfied"
        row = await self.store.surveys.get(current.survey_id, current.survey_version)
        summary = f"Survey “{row.name}” complaint resolved by {by.username}: {text} — customer {outcome}"
        resolved = await self.store.surveys.resolve(
            response_id, text, satisfied, user_id=by.id, summary=summary
        )
        if current.followup_id is not None:
            f = await self.store.followups.get(current.followup_id)
            if f.status == "open":
                await self.loop.done(f, f"resolved: {outcome}", note=text, by=by)
        await self.store.audit.write(
            "survey.resolve",
            user_id=by.id,
            object_type="survey_response",
            object_id=response_id,
            satisfied=satisfied,
        )
        return resolved
