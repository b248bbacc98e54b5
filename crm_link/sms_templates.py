"""Saved SMS texts: a name and a text with merge codes, picked by a rep on a contact page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crm_link.db import Database, one_row, to_db_time
from crm_link.errors import Conflict, NotFound, ValidationError

MAX_TEXT = 1600


@dataclass(frozen=True, slots=True)
class SmsTemplate:
    id: int
    name: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "text": self.text}


def validate_sms_template(name: Any, text: Any) -> tuple[str, str]:
    """A template's (name, text), or ValidationError naming the field."""
    if not isinstance(name, str) or not name.strip() or len(name) > 120:
        raise ValidationError("name", "give a name of 1 to 120 characters")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise ValidationError("text", f"give a text of 1 to {MAX_TEXT} characters")
    return name.strip(), text


class SmsTemplates:
    """The saved SMS texts of the dealership."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(self) -> list[SmsTemplate]:
        rows = await self._db.fetchall("SELECT id, name, text FROM sms_templates ORDER BY name")
        return [SmsTemplate(r["id"], r["name"], r["text"]) for r in rows]

    async def get(self, template_id: int) -> SmsTemplate:
        row = await self._db.fetchone("SELECT id, name, text FROM sms_templates WHERE id = ?", (template_id,))
        if row is None:
            raise NotFound("sms template", template_id)
        return SmsTemplate(row["id"], row["name"], row["text"])

    async def save(
        self, name: Any, text: Any, *, user_id: int | None, template_id: int | None = None
    ) -> SmsTemplate:
        """Create (no id) or replace a template; Conflict when another has the name."""
        name, text = validate_sms_template(name, text)
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            async with tx.execute(
                "SELECT id FROM sms_templates WHERE name = ? AND id != ?", (name, template_id or 0)
            ) as cur:
                if await cur.fetchone():
                    raise Conflict("name", f"a saved text named {name!r} exists")
            if template_id is None:
                async with tx.execute(
                    "INSERT INTO sms_templates (name, text, created_by, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?) RETURNING id",
                    (name, text, user_id, now, now),
                ) as cur:
                    template_id = int((await one_row(cur))[0])
            else:
                async with tx.execute(
                    "UPDATE sms_templates SET name = ?, text = ?, updated_at = ? WHERE id = ? RETURNING id",
                    (name, text, now, template_id),
                ) as cur:
                    if await cur.fetchone() is None:
                        raise NotFound("sms template", template_id)
        return SmsTemplate(template_id, name, text)

    async def delete(self, template_id: int) -> None:
        async with self._db.transaction() as tx:
            async with tx.execute(
                "DELETE FROM sms_templates WHERE id = ? RETURNING id", (template_id,)
            ) as cur:
                if await cur.fetchone() is None:
                    raise NotFound("sms template", template_id)
