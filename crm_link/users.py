"""Users, API tokens and web sessions. Passwords are argon2 hashes; tokens are stored hashed."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from crm_link.db import Database, from_db_time, one_row, to_db_time
from crm_link.errors import Conflict, NotFound, ValidationError
from crm_link.models import ROLES, User

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,31}$")
_EXTENSION = re.compile(r"^[0-9*#]{2,10}$")
_hasher = PasswordHasher()
# a hash of a random password: verifying against it costs as much as a real user (no timing oracle)
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


# a user row with its manager's username
_WITH_MANAGER = (
    "SELECT u.*, m.username AS manager_username FROM users u LEFT JOIN users m ON m.id = u.manager_id"
)


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def validate_username(name: str) -> str:
    """A login name: 2-32 lowercase letters, digits, dot, dash, underscore."""
    if not isinstance(name, str) or not _USERNAME.match(name):
        raise ValidationError("username", "must be 2-32 characters: lowercase letters, digits, . _ -")
    return name


def validate_password(password: str) -> str:
    """A password of 8 to 256 characters."""
    if not isinstance(password, str) or not 8 <= len(password) <= 256:
        raise ValidationError("password", "must be 8-256 characters")
    return password


def _user(row: Any, interfaces: list[str], manager: str | None = None) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        display_name=row["display_name"],
        email=row["email"],
        role=row["role"],
        extension=row["extension"],
        active=bool(row["active"]),
        time_zone=row["time_zone"],
        interfaces=interfaces,
        manager_id=row["manager_id"],
        manager=manager,
    )


class Users:
    """Staff accounts and how they prove who they are."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # bumped on every change to users or their interfaces, so caches in this process can tell
        self.version = 0

    async def add(
        self,
        username: str,
        *,
        role: str,
        password: str,
        display_name: str = "",
        email: str | None = None,
        extension: str | None = None,
        interfaces: list[str] | None = None,
        time_zone: str | None = None,
    ) -> User:
        """Create a user; Conflict when the username or extension is taken."""
        validate_username(username)
        if role not in ROLES:
            raise ValidationError("role", f"must be one of {', '.join(ROLES)}")
        validate_password(password)
        if extension is not None and not _EXTENSION.match(extension):
            raise ValidationError("extension", "must be 2-10 digits")
        pw_hash = await asyncio.to_thread(_hasher.hash, password)
        async with self._db.transaction() as tx:
            async with tx.execute("SELECT 1 FROM users WHERE username = ?", (username,)) as cur:
                if await cur.fetchone():
                    raise Conflict("username", f"{username!r} already exists")
            if extension is not None:
                async with tx.execute("SELECT username FROM users WHERE extension = ?", (extension,)) as cur:
                    row = await cur.fetchone()
                if row:
                    raise Conflict("extension", f"{extension} already belongs to {row[0]}")
            async with tx.execute(
                "INSERT INTO users (username, display_name, email, role, extension, password_hash, time_zone, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    username,
                    display_name,
                    email,
                    role,
                    extension,
                    pw_hash,
                    time_zone,
                    to_db_time(self._db.now()),
                ),
            ) as cur:
                user_id = int((await one_row(cur))[0])
            for iface in interfaces or []:
                async with tx.execute("SELECT 1 FROM user_interfaces WHERE interface = ?", (iface,)) as cur:
                    if await cur.fetchone():
                        raise Conflict("interfaces", f"{iface} already belongs to another user")
                await tx.execute(
                    "INSERT INTO user_interfaces (interface, user_id) VALUES (?, ?)", (iface, user_id)
                )
        self.version += 1
        return await self.get(user_id)

    async def add_many(self, rows: list[tuple[str, str, str | None]], *, password: str) -> int:
        """Create many users (username, role, extension) sharing one initial password (hashed once)."""
        validate_password(password)
        for username, role, _ in rows:
            validate_username(username)
            if role not in ROLES:
                raise ValidationError("role", f"must be one of {', '.join(ROLES)}")
        pw_hash = await asyncio.to_thread(_hasher.hash, password)
        now = to_db_time(self._db.now())
        async with self._db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO users (username, role, extension, password_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                [(u, r, e, pw_hash, now) for u, r, e in rows],
            )
        self.version += 1
        return len(rows)

    async def set_password(self, user_id: int, password: str) -> None:
        validate_password(password)
        pw_hash = await asyncio.to_thread(_hasher.hash, password)
        async with self._db.transaction() as tx:
            await tx.execute("UPDATE users SET password_hash = ? WHERE id = ?", (pw_hash, user_id))
            await tx.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))

    async def set_active(self, user_id: int, active: bool) -> None:
        async with self._db.transaction() as tx:
            await tx.execute("UPDATE users SET active = ? WHERE id = ?", (int(active), user_id))
            if not active:  # signed out everywhere, and its API tokens end for good
                await tx.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
                await tx.execute(
                    "UPDATE api_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                    (to_db_time(self._db.now()), user_id),
                )
        self.version += 1

    async def update(
        self,
        user_id: int,
        *,
        display_name: str,
        role: str,
        extension: str | None,
        email: str | None,
        time_zone: str | None,
    ) -> User:
        """Change a user's name, role, extension, email and zone; Conflict when the extension is taken."""
        if role not in ROLES:
            raise ValidationError("role", f"must be one of {', '.join(ROLES)}")
        if extension is not None and not _EXTENSION.match(extension):
            raise ValidationError("extension", "must be 2-10 digits")
        if time_zone:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(time_zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValidationError("time_zone", f"unknown time zone {time_zone!r}") from None
        async with self._db.transaction() as tx:
            if extension is not None:
                async with tx.execute(
                    "SELECT username FROM users WHERE extension = ? AND id != ?", (extension, user_id)
                ) as cur:
                    row = await cur.fetchone()
                if row:
                    raise Conflict("extension", f"{extension} already belongs to {row[0]}")
            async with tx.execute(
                "UPDATE users SET display_name = ?, role = ?, extension = ?, email = ?, time_zone = ?"
                " WHERE id = ? RETURNING id",
                (display_name, role, extension, email, time_zone or None, user_id),
            ) as cur:
                if await cur.fetchone() is None:
                    raise NotFound("user", user_id)
        self.version += 1
        return await self.get(user_id)

    async def verify_password(self, user_id: int, password: str) -> bool:
        """Whether `password` is this user's current one."""
        row = await self._db.fetchone("SELECT password_hash FROM users WHERE id = ?", (user_id,))
        if row is None:
            return False
        try:
            return bool(await asyncio.to_thread(_hasher.verify, row[0], password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def get(self, user_id: int) -> User:
        row = await self._db.fetchone(_WITH_MANAGER + " WHERE u.id = ?", (user_id,))
        if row is None:
            raise NotFound("user", user_id)
        return _user(row, await self._interfaces(user_id), row["manager_username"])

    async def by_username(self, username: str) -> User | None:
        row = await self._db.fetchone(_WITH_MANAGER + " WHERE u.username = ?", (username,))
        return _user(row, await self._interfaces(row["id"]), row["manager_username"]) if row else None

    async def list(self) -> list[User]:
        rows = await self._db.fetchall(_WITH_MANAGER + " ORDER BY u.username")
        ifaces: dict[int, list[str]] = {}
        for r in await self._db.fetchall("SELECT user_id, interface FROM user_interfaces ORDER BY interface"):
            ifaces.setdefault(r[0], []).append(r[1])
        return [_user(r, ifaces.get(r["id"], []), r["manager_username"]) for r in rows]

    async def check_manager(self, manager: str | None, user_id: int | None = None) -> int | None:
        """The id of a would-be manager (an active manager or admin, not the user themselves), None
        for none; ValidationError naming `manager` otherwise."""
        if not manager:
            return None
        found = await self.by_username(manager)
        if found is None or not found.active:
            raise ValidationError("manager", f"no active user named {manager!r}")
        if found.role not in ("manager", "admin"):
            raise ValidationError("manager", f"{manager} is a {found.role}, not a manager or admin")
        if found.id == user_id:
            raise ValidationError("manager", "a user cannot be their own manager")
        return found.id

    async def set_manager(self, user_id: int, manager: str | None) -> User:
        """Give a user a manager (an active manager or admin, by username), or none (None/"")."""
        manager_id = await self.check_manager(manager, user_id)
        async with self._db.transaction() as tx:
            async with tx.execute(
                "UPDATE users SET manager_id = ? WHERE id = ? RETURNING id", (manager_id, user_id)
            ) as cur:
                if await cur.fetchone() is None:
                    raise NotFound("user", user_id)
        self.version += 1
        return await self.get(user_id)

    async def manager_of_owner(self, contact_id: int) -> int | None:
        """The active manager of the active-or-not owner of a contact, or None (no owner, no manager)."""
        row = await self._db.fetchone(
            "SELECT m.id FROM contacts c JOIN users o ON o.id = c.owner_id JOIN users m ON m.id = o.manager_id"
            " WHERE c.id = ? AND m.active = 1",
            (contact_id,),
        )
        return int(row[0]) if row else None

    async def _interfaces(self, user_id: int) -> builtins.list[str]:
        rows = await self._db.fetchall(
            "SELECT interface FROM user_interfaces WHERE user_id = ? ORDER BY interface", (user_id,)
        )
        return [r[0] for r in rows]

    async def authenticate(self, username: str, password: str) -> User | None:
        """The active user whose password this is, or None (same cost either way)."""
        row = await self._db.fetchone("SELECT * FROM users WHERE username = ?", (username,))
        stored = row["password_hash"] if row is not None else _DUMMY_HASH
        try:
            await asyncio.to_thread(_hasher.verify, stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if row is None or not row["active"]:
            return None
        if _hasher.check_needs_rehash(stored):
            new_hash = await asyncio.to_thread(_hasher.hash, password)
            async with self._db.transaction() as tx:
                await tx.execute("UPDATE users SET password_hash = ? WHERE id = ?", (new_hash, row["id"]))
        return _user(row, await self._interfaces(row["id"]))

    # API tokens ---------------------------------------------------------------------------

    async def create_token(self, user_id: int, name: str = "") -> str:
        """A new API token for the user; only its hash is kept, so this is the one chance to see it."""
        token = "sb_" + secrets.token_urlsafe(32)
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO api_tokens (user_id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
                (user_id, name, _sha256(token), to_db_time(self._db.now())),
            )
        return token

    async def user_for_token(self, token: str) -> User | None:
        """The active user an API token belongs to, or None."""
        row = await self._db.fetchone(
            "SELECT u.* FROM api_tokens t JOIN users u ON u.id = t.user_id"
            " WHERE t.token_hash = ? AND t.revoked_at IS NULL AND u.active = 1",
            (_sha256(token),),
        )
        return _user(row, await self._interfaces(row["id"])) if row else None

    async def revoke_tokens(self, user_id: int) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                (to_db_time(self._db.now()), user_id),
            )

    # web sessions -------------------------------------------------------------------------

    async def create_session(self, user_id: int, lifetime: timedelta) -> tuple[str, str]:
        """A new session: (cookie value, CSRF token)."""
        sid = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        now = self._db.now()
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM sessions WHERE expires_at < ?", (to_db_time(now),))
            await tx.execute(
                "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                (_sha256(sid), user_id, csrf, to_db_time(now), to_db_time(now + lifetime)),
            )
        return sid, csrf

    async def session(self, sid: str) -> tuple[User, str] | None:
        """(user, CSRF token) of a live session cookie, or None."""
        row = await self._db.fetchone(
            "SELECT u.*, s.csrf_token, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id"
            " WHERE s.id_hash = ? AND u.active = 1",
            (_sha256(sid),),
        )
        if row is None:
            return None
        expires = from_db_time(row["expires_at"])
        if expires is None or expires < self._db.now():
            return None
        return _user(row, await self._interfaces(row["id"])), row["csrf_token"]

    async def end_session(self, sid: str) -> None:
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM sessions WHERE id_hash = ?", (_sha256(sid),))

    async def interface_map(self) -> dict[str, str]:
        """Every interface and extension known to belong to a user → username."""
        out: dict[str, str] = {}
        for r in await self._db.fetchall("SELECT extension, username FROM users WHERE extension IS NOT NULL"):
            out[r[0]] = r[1]
        for r in await self._db.fetchall(
            "SELECT i.interface, u.username FROM user_interfaces i JOIN users u ON u.id = i.user_id"
        ):
            out[r[0]] = r[1]
        return out


def session_expiry(now: datetime, lifetime: timedelta) -> datetime:
    return now + lifetime
