"""The store's exceptions: one root, each also the builtin callers expect."""

from __future__ import annotations


class StoreError(Exception):
    """Root of every error the CRM store raises."""


class ValidationError(StoreError, ValueError):
    """Input the store refuses; `field` names it and `reason` says why."""

    def __init__(self, field: str, reason: str, *, code: str = "invalid") -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.code = code


class NotFound(StoreError, LookupError):
    """The row asked for does not exist (or is not visible to the caller)."""

    def __init__(self, what: str, ident: object) -> None:
        super().__init__(f"{what} {ident} not found")
        self.what = what
        self.ident = ident


class Conflict(StoreError):
    """The write would break a uniqueness rule (a duplicate username, say)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class StoreUnavailable(StoreError, ConnectionError):
    """The database cannot be reached (or refused us); the same request may succeed later."""
