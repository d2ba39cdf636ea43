"""Application errors: each carries a GraphQL `extensions.code`."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """An expected failure shown to the client as-is, with a code."""

    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, *, code: str | None = None, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extensions = extensions


class Unauthenticated(AppError):
    code = "UNAUTHENTICATED"

    def __init__(self, message: str = "Authentication required") -> None:
        super().__init__(message)


class Forbidden(AppError):
    code = "FORBIDDEN"

    def __init__(self, message: str = "You are not allowed to do this") -> None:
        super().__init__(message)


class NotFound(AppError):
    code = "NOT_FOUND"

    def __init__(self, what: str = "Node") -> None:
        super().__init__(f"{what} not found")


class BadInput(AppError):
    code = "BAD_USER_INPUT"

    def __init__(self, fields: dict[str, str], message: str = "Invalid input") -> None:
        super().__init__(message, fields=fields)
        self.fields = fields


class Conflict(AppError):
    code = "CONFLICT"

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message, **extensions)


class InvalidTransition(AppError):
    code = "INVALID_TRANSITION"

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message, **extensions)


class RateLimited(AppError):
    code = "RATE_LIMITED"

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many requests, retry later", retryAfter=retry_after)


class QueryTooComplex(AppError):
    code = "QUERY_TOO_COMPLEX"


class OutcomeUnknown(AppError):
    """The database connection was lost while a change was being committed (the database
    stopped answering: db/watchdog.py closed it). The COMMIT may have reached it and taken
    effect: not retryable, unlike every other loss of the database (a client that retried
    as told made the change twice: adversary, 2026-11-27, 4 of 120)."""

    code = "INTERNAL_SERVER_ERROR"

    def __init__(self) -> None:
        super().__init__("The database connection was lost while the change was being "
                         "committed; it may have been applied. Read it back before trying "
                         "again", retryable=False)


class AppliedUnanswered(AppError):
    """The database stopped answering after a change of the operation was committed (its
    payload's reads, or a later root field): resending the operation would apply that
    change again (adversary, 2026-11-27: 10 of 495 'retryable' answers were committed)."""

    code = "INTERNAL_SERVER_ERROR"

    def __init__(self) -> None:
        super().__init__("The database stopped answering after this operation's change was "
                         "applied. Read it back before trying again", retryable=False)


class AppliedThenFailed(AppError):
    """A statement ran out of `statement_timeout`, or a root field's transaction kept
    colliding, after a change of the operation was committed (its payload's reads, or a
    later root field): as `AppliedUnanswered`, resending the operation would apply that
    change again, so not the retryable answer either gets otherwise (adversary,
    2026-11-29: three `createList`s resent as a timeout's 'retryable' answer told)."""

    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} after this operation's change was applied. Read it back "
                         "before trying again", retryable=False)


class ServiceUnavailable(AppError):
    """A dependency (the database) is down; the client may retry shortly."""

    code = "INTERNAL_SERVER_ERROR"

    def __init__(self) -> None:
        super().__init__("Service temporarily unavailable, please retry", retryable=True)
