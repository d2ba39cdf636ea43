"""What signing up and managing members share: one account per email address, and the
app's bounded password hashing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from giftgraph.context import Info
from giftgraph.db import models as m
from giftgraph.errors import Conflict

if TYPE_CHECKING:
    from giftgraph.admission.throttle import Turn

EMAIL_TAKEN = "an account with this email already exists"


def email_conflict() -> Conflict:
    return Conflict(EMAIL_TAKEN, fields={"email": EMAIL_TAKEN})


async def ensure_email_free(
    session: AsyncSession, email: str, exclude: uuid.UUID | None = None
) -> None:
    stmt = select(m.User.id).where(func.lower(m.User.email) == email.lower())
    if exclude is not None:
        stmt = stmt.where(m.User.id != exclude)
    if (await session.scalar(stmt)) is not None:
        raise email_conflict()


@asynccontextmanager
async def unique_email() -> AsyncIterator[None]:
    """A concurrent writer that won the unique `lower(email)` index is a CONFLICT too."""
    try:
        yield
    except IntegrityError as exc:
        raise email_conflict() from exc


async def hashing_turn(info: Info, known: bool = False, account: str | None = None,
                       established: bool = True, recent: bool = False) -> Turn | None:
    """The app's bounded hashing as this caller (its family, or its IP when anonymous:
    one hash of theirs at a time; `known`: ahead of the others, later among them when
    `account`, the login's user id, or the client's network has logged in again and again
    lately or logged in within the hour (`recent`), or when the account is not
    `established`), once the operation's
    reads have given their connection back: none is held while argon2 runs, or waits for
    a thread (up to hash_wait_seconds)."""
    await info.context.db.close()
    throttle = info.context.throttle
    if throttle is None:
        return None
    user = info.context.user
    key = f"family:{user.family_id}" if user is not None else f"ip:{info.context.client_network}"
    return throttle.hashing.turn(key, known, account, info.context.client_network,
                                 established, recent)
