"""Mutations that collide with a concurrent transaction are run again.

PostgreSQL may abort a transaction that did nothing wrong: a deadlock between two
transactions (40P01, one of them is chosen to give way) or a serialization failure
(40001). Its changes are rolled back as a whole and nothing was published (events go out
only after COMMIT), so running the mutation again from the start is safe, and it is what
PostgreSQL's documentation asks of applications. Each root mutation field is run up to
`ATTEMPTS` times, after a short random pause; if it still collides, the client gets
INTERNAL_SERVER_ERROR with `retryable: true` (extensions.format_error).

Not retried: a failure after the attempt committed a unit of work (running it again would
apply the change twice), and the sign-in mutations (`NOT_RETRIED`), which do work outside
their transaction that an attempt would repeat (the login rate limit's hit, password hashing
and verification) and take no lock another family member's change could hold.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DBAPIError

from giftgraph.accel import internals
from giftgraph.errors import AppError, AppliedThenFailed, NotFound, Unauthenticated
from giftgraph.events import ENTITY_TYPES

log = logging.getLogger("giftgraph.db")

ATTEMPTS = 3
NOT_RETRIED = frozenset({"signUp", "login", "refreshToken", "logout"})
# SQLSTATE -> the `reason` label of giftgraph_transaction_retries_total
TRANSIENT = {"40P01": "deadlock", "40001": "serialization"}


def transient(exc: BaseException | None) -> str | None:
    """Why the database aborted this transaction for a concurrent one, or None when it did
    not (any other error)."""
    if isinstance(exc, DBAPIError):
        exc = exc.orig
    return TRANSIENT.get(getattr(exc, "sqlstate", None) or "")


# PostgreSQL's detail of a foreign-key violation by the referencing row (a RESTRICT one,
# by the referenced row, says "is still referenced from table").
_NOT_PRESENT = re.compile(
    r'^Key \((?P<column>[^)]*)\)=\((?P<key>.*)\) is not present in table "(?P<table>[^"]+)"')
_TYPE_OF_TABLE = {model.__tablename__: name for model, name in ENTITY_TYPES.items()}


def missing_reference(exc: DBAPIError, context: Any) -> AppError | None:
    """The error a client gets when its change pointed at a row that a concurrent
    transaction deleted (foreign-key violation, 23503), or None for any other error.

    A safety net: resolvers take a KEY SHARE lock on each row they are about to reference
    (resolvers/common.py, get_referenced), so they answer NOT_FOUND themselves. A row
    referenced without one (the caller's own user: an event's actor, a list's owner) can
    still go: the client gets the error of an ID that does not exist, NOT_FOUND, or for the
    caller's own row the UNAUTHENTICATED of its next request; nothing else of it."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) != "23503":
        return None
    cause = getattr(orig, "__cause__", None)
    detail = getattr(cause, "detail", None) or getattr(orig, "detail", None) or ""
    found = _NOT_PRESENT.match(detail)
    type_name = _TYPE_OF_TABLE.get(found["table"]) if found else None
    if found is None or type_name is None:
        return None
    caller = getattr(context, "user", None)
    if type_name == "User" and caller is not None and found["key"] == str(caller.id):
        return Unauthenticated()
    return NotFound(type_name)


def pause(attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: random, so that the two transactions that
    collided do not meet again in step (5-20 ms, then 20-80 ms)."""
    return random.uniform(0.005, 0.02) * 4.0 ** (attempt - 1)  # noqa: S311 - jitter, not a secret


def retrying(resolve: Callable[..., Any]) -> Callable[..., Any]:
    """`resolve` (a root mutation field's graphql-core resolver), run again when its
    transaction is aborted for a concurrent one."""

    async def resolve_again_on_collision(source: Any, info: Any, **args: Any) -> Any:
        db = info.context.db
        attempt = 1
        while True:
            committed = db.commits
            try:
                result = resolve(source, info, **args)
                return await result if inspect.isawaitable(result) else result
            except DBAPIError as exc:
                refused = missing_reference(exc, info.context)
                if refused is not None and db.commits == committed:
                    log.info("%s: %s", info.field_name, exc.orig)
                    raise refused from exc
                reason = transient(exc)
                if reason is not None and db.commits != committed:
                    # The change is in: not "not applied, retry" (an unexpected error).
                    raise RuntimeError(f"{reason} after the mutation committed") from exc
                if reason is not None and attempt >= ATTEMPTS and db.commits:
                    # An earlier root field's change is in: not "not applied, retry".
                    raise AppliedThenFailed("A later part of it kept colliding with "
                                            "concurrent changes") from exc
                if reason is None or attempt >= ATTEMPTS:
                    raise
                metrics = getattr(info.context, "metrics", None)
                if metrics is not None:
                    metrics.transaction_retries.labels(reason).inc()
                log.info("%s: %s (attempt %d of %d), running it again",
                         info.field_name, reason, attempt, ATTEMPTS)
                await asyncio.sleep(pause(attempt))
                attempt += 1

    return resolve_again_on_collision


def install_retries(schema: Any) -> int:
    """Wrap the root mutation fields' resolvers of a Strawberry schema (all but
    `NOT_RETRIED`); how many."""
    mutation = internals.graphql_schema(schema).mutation_type
    wrapped = 0
    for name, field in (mutation.fields.items() if mutation is not None else ()):
        if field.resolve is not None and name not in NOT_RETRIED:
            field.resolve = retrying(field.resolve)
            wrapped += 1
    return wrapped
