"""The CRM store: one object holding the database and its parts, opened and closed by the app."""

from __future__ import annotations

from crm_link.call_lists import CallLists
from crm_link.clock import Clock, system_clock
from crm_link.contacts import Contacts
from crm_link.db import Database
from crm_link.email import EmailStore
from crm_link.recordings import Recordings
from crm_link.segments import Segments
from crm_link.sms import SmsStore
from crm_link.touches import Audit, Touches
from crm_link.transcripts import Transcripts
from crm_link.users import Users


class Store:
    """Entry point to everything persisted; other packages call its parts, never SQL."""

    def __init__(
        self, path: str, *, region: str = "US", time_zone: str = "UTC", clock: Clock = system_clock
    ) -> None:
        self.clock = clock
        self.db = Database(path, clock=clock)
        self.region = region
        self.time_zone = time_zone
        self.users = Users(self.db)
        self.contacts = Contacts(self.db, region, time_zone)
        self.touches = Touches(self.db, time_zone)
        self.audit = Audit(self.db)
        self.sms = SmsStore(self.db, self.touches)
        self.email = EmailStore(self.db, self.touches)
        self.recordings = Recordings(self.db)
        self.transcripts = Transcripts(self.db, self.recordings)
        self.segments = Segments(self.db, time_zone)
        self.call_lists = CallLists(self.db, time_zone)

    async def open(self) -> Store:
        """Open the database and apply pending migrations."""
        await self.db.open()
        return self

    async def close(self) -> None:
        await self.touches.stop_batching()
        await self.db.close()

    async def __aenter__(self) -> Store:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
