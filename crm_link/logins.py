"""Failed sign-ins in the store, so every instance sharing it judges a guesser by the same count.

What the counts mean (how long an address or an account must wait) is the login limiter's business
(switchboard.web.auth.LoginLimiter); this part keeps the facts: each failure by client address and
account name, which failures a later sign-in cleared, and the addresses an account signed in from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from crm_link.db import Database, from_db_time, to_db_time

ADDRESS_WINDOW = timedelta(minutes=1)
ACCOUNT_WINDOW = timedelta(days=1)
KNOWN_PER_ACCOUNT = 5
# an account name longer than any username can be (32) is still told apart from others, not kept whole
ACCOUNT_KEY_LENGTH = 64
ADDRESS_KEY_LENGTH = 64


@dataclass(frozen=True, slots=True)
class LoginStanding:
    """What the store knows about one (address, account) pair at `now`."""

    now: datetime
    address_failures: list[datetime]  # this address's failures in the last minute, newest first
    account_failures: int  # the account's failures in the account window since its last sign-in
    account_last: datetime | None  # the newest of those
    known_address: bool  # the account signed in from this address lately


def _account(name: str) -> str:
    return name[:ACCOUNT_KEY_LENGTH]


def _address(address: str) -> str:
    return address[:ADDRESS_KEY_LENGTH]


class LoginAttempts:
    """Failed sign-ins per client address and per account, shared by every instance on the store."""

    def __init__(
        self,
        db: Database,
        *,
        account_window: timedelta = ACCOUNT_WINDOW,
        known_per_account: int = KNOWN_PER_ACCOUNT,
    ) -> None:
        self._db = db
        self.account_window = account_window
        self.known_per_account = known_per_account

    async def standing(self, address: str, account: str, *, address_limit: int) -> LoginStanding:
        """The address's newest failures of the last minute (at most `address_limit`), the account's
        uncleared failures of the account window, and whether the account knows this address."""
        now = self._db.now()
        address, account = _address(address), _account(account)
        recent = await self._db.fetchall(
            "SELECT at FROM login_failures WHERE address = ? AND at > ? ORDER BY at DESC LIMIT ?",
            (address, to_db_time(now - ADDRESS_WINDOW), max(address_limit, 1)),
        )
        row = await self._db.fetchone(
            "SELECT (SELECT COUNT(*) FROM login_failures WHERE account = ? AND cleared = 0 AND at > ?) AS n,"
            " (SELECT MAX(at) FROM login_failures WHERE account = ? AND cleared = 0 AND at > ?) AS last,"
            " (SELECT COUNT(*) FROM login_known_addresses WHERE account = ? AND address = ?) AS known",
            (account, to_db_time(now - self.account_window)) * 2 + (account, address),
        )
        assert row is not None  # scalar subqueries: always one row
        times = [from_db_time(r["at"]) for r in recent]
        return LoginStanding(
            now=now,
            address_failures=[t for t in times if t is not None],
            account_failures=int(row["n"]),
            account_last=from_db_time(row["last"]),
            known_address=int(row["known"]) > 0,
        )

    async def failed(self, address: str, account: str) -> None:
        """Count one failure; failures older than the account window are forgotten."""
        now = self._db.now()
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO login_failures (address, account, at) VALUES (?, ?, ?)",
                (_address(address), _account(account), to_db_time(now)),
            )
            await tx.execute(
                "DELETE FROM login_failures WHERE at <= ?", (to_db_time(now - self.account_window),)
            )

    async def succeeded(self, address: str, account: str) -> None:
        """A sign-in: the account's failures so far no longer count against it (they still count
        against the addresses they came from) and this address is among the account's known ones."""
        now = self._db.now()
        address, account = _address(address), _account(account)
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE login_failures SET cleared = 1 WHERE account = ? AND cleared = 0", (account,)
            )
            await tx.execute(
                "INSERT INTO login_known_addresses (account, address, at) VALUES (?, ?, ?)"
                " ON CONFLICT (account, address) DO UPDATE SET at = excluded.at",
                (account, address, to_db_time(now)),
            )
            await tx.execute(
                "DELETE FROM login_known_addresses WHERE account = ? AND address NOT IN"
                " (SELECT address FROM login_known_addresses WHERE account = ?"
                " ORDER BY at DESC, address LIMIT ?)",
                (account, account, self.known_per_account),
            )
