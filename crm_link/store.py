"""The CRM store: one object holding the database and its parts, opened and closed by the app."""

from __future__ import annotations

import dataclasses
from typing import Any

from crm_link.call_lists import CallLists
from crm_link.clock import Clock, system_clock
from crm_link.contact_sync import ContactSync
from crm_link.contacts import ContactFields, Contacts
from crm_link.crm_events import CrmEvents
from crm_link.db import Database, to_db_time
from crm_link.email import EmailStore
from crm_link.errors import Conflict, NotFound
from crm_link.followups import FollowupStore
from crm_link.logins import LoginAttempts
from crm_link.models import Contact, FollowUp, Touch
from crm_link.recordings import Recordings
from crm_link.reports import ReportStore
from crm_link.segments import Segments
from crm_link.sms import SmsStore
from crm_link.sms_templates import SmsTemplates
from crm_link.surveys import SurveyStore
from crm_link.touches import Audit, Touches, TouchInput
from crm_link.transcripts import Transcripts
from crm_link.users import Users


class Store:
    """Entry point to everything persisted; other packages call its parts, never SQL."""

    def __init__(
        self,
        path: str,
        *,
        region: str = "US",
        time_zone: str = "UTC",
        clock: Clock = system_clock,
        pool_size: int = 10,
    ) -> None:
        self.clock = clock
        self.db = Database(path, clock=clock, pool_size=pool_size)
        self.region = region
        self.time_zone = time_zone
        self.users = Users(self.db)
        self.contacts = Contacts(self.db, region, time_zone)
        self.touches = Touches(self.db, time_zone)
        self.followups = FollowupStore(self.db)
        self.audit = Audit(self.db)
        self.logins = LoginAttempts(self.db)
        self.sms = SmsStore(self.db, self.touches)
        self.email = EmailStore(self.db, self.touches)
        self.sms_templates = SmsTemplates(self.db)
        self.recordings = Recordings(self.db)
        self.transcripts = Transcripts(self.db, self.recordings)
        self.segments = Segments(self.db, time_zone)
        self.call_lists = CallLists(self.db, time_zone)
        self.reports = ReportStore(self.db, time_zone)
        self.crm_events = CrmEvents(self.db)
        self.surveys = SurveyStore(self.db, self.touches)
        self.contact_sync = ContactSync(self.db, self.contacts, self.crm_events)

    async def create_contact_for_call(
        self, fields: ContactFields, call_key: str, *, kind: str = "call"
    ) -> Contact:
        """A new contact for an unknown caller (or texter: `kind` sms), and that touch (and its
        recordings) now theirs; all or nothing: a touch that is gone or already someone's leaves no
        contact behind."""
        async with self.db.transaction() as tx:
            async with tx.execute(
                "SELECT contact_id FROM touches WHERE source_key = ? AND kind = ?", (call_key, kind)
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                raise NotFound("call", call_key)
            if row[0] is not None:
                raise Conflict("call_id", "this call already belongs to a customer")
            contact_id = await self.contacts.insert_in(tx, fields)
            await tx.execute(
                "UPDATE touches SET contact_id = ?, updated_at = ? WHERE source_key = ? AND contact_id IS NULL",
                (contact_id, to_db_time(self.db.now()), call_key),
            )
            await self.recordings.attach_contact_in(tx, call_key, contact_id)
        return await self.contacts.get(contact_id)

    async def record_touch_with_prospect(
        self, item: TouchInput, fields: ContactFields, *, followup_kind: str, followup_note: str
    ) -> tuple[Touch, FollowUp | None]:
        """A touch from a number no contact has (a missed call, an inbound text), recorded together
        with a new contact for it.

        One transaction: the contact (its phones and tags), the touch (and a call's recordings) made
        theirs, a follow-up on the unowned pool and the audit line commit together or not at all.
        So no reader, no crash and no CRM subscriber ever sees the touch without its contact, and the
        outbox holds exactly one contact event, then the touch's event, then the follow-up's, all in
        the contact's order. When the touch already has a contact (a call's contact made from its
        pop while it rang, a redelivered text's prospect), the touch is recorded for that contact
        and nothing is made: (touch, None). When the number has found a contact since the caller
        looked (another text or call from it, on this or another instance), the touch is that
        contact's, with the follow-up, and no second contact is made. Such transactions for one
        number run one at a time (`Database.serialize_in`)."""
        item.check()
        async with self.db.transaction() as tx:
            for e164 in sorted({p.e164 for p in fields.phones}):
                await self.db.serialize_in(tx, f"prospect:{e164}")
            async with tx.execute(
                "SELECT contact_id FROM touches WHERE source_key = ?", (item.source_key,)
            ) as cur:
                row = await cur.fetchone()
            if item.contact_id is not None or (row is not None and row[0] is not None):
                return await self.touches.record_in(tx, item), None
            contact_id = await self._has_number_in(tx, fields)
            made = contact_id is None
            if contact_id is None:
                contact_id = await self.contacts.insert_in(tx, fields)
            touch = await self.touches.record_in(tx, dataclasses.replace(item, contact_id=contact_id))
            await self.recordings.attach_contact_in(tx, item.source_key, contact_id)
            if made:
                await self.audit.write_in(
                    tx,
                    f"contact.prospect_from_{followup_kind}",
                    user_id=None,
                    object_type="contact",
                    object_id=contact_id,
                    touch=touch.id,
                )
            followup_id = await self.touches.add_followup_in(
                tx,
                contact_id,
                item.ended_at or item.started_at,
                kind=followup_kind,
                note=followup_note,
                created_by_touch_id=touch.id,
            )
        return touch, await self.touches.followup_made(followup_id)

    @staticmethod
    async def _has_number_in(tx: Any, fields: ContactFields) -> int | None:
        """The first contact (lowest id) with one of these numbers, inside an open transaction."""
        if not fields.phones:
            return None
        async with tx.execute(
            "SELECT MIN(contact_id) FROM contact_phones WHERE e164 IN"
            f" ({', '.join('?' for _ in fields.phones)})",
            [p.e164 for p in fields.phones],
        ) as cur:
            row = await cur.fetchone()
        return None if row is None or row[0] is None else int(row[0])

    async def open(self) -> Store:
        """Open the database and apply pending migrations."""
        await self.db.open()
        await self.reports.check_rollups()
        return self

    async def close(self) -> None:
        await self.touches.stop_batching()
        await self.db.close()

    async def __aenter__(self) -> Store:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
