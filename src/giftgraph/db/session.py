"""One database session per GraphQL operation, safe for concurrent resolvers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import Row, Select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from giftgraph.db.models import Event
from giftgraph.events import take_after_commit, take_pending

T = TypeVar("T")
log = logging.getLogger("giftgraph.db")
Publisher = Callable[[list[Event]], Awaitable[None]]


class OperationDb:
    """Lazily opened session shared by an operation's resolvers.

    Strawberry resolves sibling fields concurrently, and an AsyncSession must not be
    used concurrently, so every use goes through one lock. DataLoaders batch the
    reads, so the lock costs little and the statement count stays deterministic.
    """

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], publish: Publisher | None = None
    ) -> None:
        self._sessions = sessions
        self._publish = publish
        self._session: AsyncSession | None = None
        self._read_failed = False  # a read raised since the last write began
        self._lock = asyncio.Lock()

    def _get(self) -> AsyncSession:
        if self._session is None:
            self._session = self._sessions()
        return self._session

    async def scalars(self, stmt: Select[tuple[T]],
                      params: Mapping[str, Any] | None = None) -> Sequence[T]:
        async with self._lock:
            try:
                return (await self._get().scalars(stmt, params)).all()
            except BaseException:
                self._read_failed = True
                raise

    async def rows(self, stmt: Select[Any],
                   params: Mapping[str, Any] | None = None) -> Sequence[Any]:
        async with self._lock:
            try:
                return (await self._get().execute(stmt, params)).all()
            except BaseException:
                self._read_failed = True
                raise

    async def scalar(self, stmt: Select[tuple[T]],
                     params: Mapping[str, Any] | None = None) -> T | None:
        async with self._lock:
            try:
                return await self._get().scalar(stmt, params)
            except BaseException:
                self._read_failed = True
                raise

    async def detached(self, stmt: Select[tuple[T]]) -> T | None:
        """One row, expunged: later rollbacks in this session can't expire it."""
        async with self._lock:
            session = self._get()
            try:
                row = await session.scalar(stmt)
            except BaseException:
                self._read_failed = True
                raise
            if row is not None:
                session.expunge(row)
            return row

    async def detached_row(self, stmt: Select[Any],
                           params: Mapping[str, Any] | None = None) -> Row[Any] | None:
        """One row whose first column is an entity, expunged (as `detached`)."""
        async with self._lock:
            session = self._get()
            try:
                row = (await session.execute(stmt, params)).first()
            except BaseException:
                self._read_failed = True
                raise
            if row is not None:
                session.expunge(row[0])
            return row

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """The unit of work of one mutation: committed once on success, else rolled back."""
        async with self._lock:
            session = self._get()
            if session.in_transaction() and (session.identity_map or self._read_failed):
                # A failed write's ROLLBACK would expire the objects the operation's reads
                # loaded, and a read that failed left the transaction aborted: end it first
                # (COMMIT, which expires nothing; PostgreSQL rolls an aborted one back).
                # Otherwise (the usual case: the caller is expunged, loaders read plain rows)
                # the write continues the transaction and keeps its connection: no COMMIT,
                # pool checkout, ping and BEGIN in between. Each statement reads fresh data
                # either way (READ COMMITTED).
                await session.commit()
            self._read_failed = False
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                take_pending(session)  # rolled-back work publishes nothing
                take_after_commit(session)
                raise
            events = take_pending(session)
            hooks = take_after_commit(session)
        # Publish only after COMMIT, outside the lock.
        if events and self._publish is not None:
            await self._publish(events)
        for hook in hooks:
            await hook()

    async def recover(self) -> None:
        """After a failed read: end the transaction it aborted (PostgreSQL refuses every
        later statement in it), so that the operation's next reads work. COMMIT, which
        expires nothing (PostgreSQL rolls an aborted transaction back); a session whose
        connection broke is closed, and the next read opens a new one."""
        async with self._lock:
            if not self._read_failed:
                return
            self._read_failed = False
            session = self._session
            if session is None or not session.in_transaction():
                return
            try:
                await session.commit()
            except Exception:  # the connection broke: the next read opens a new session
                await self.close()

    async def close(self) -> None:
        """Release the session; a connection broken meanwhile is only logged."""
        session, self._session = self._session, None
        if session is None:
            return
        try:
            await session.close()
        except Exception:  # the connection died (database restart): the pool replaces it
            log.warning("closing a session on a broken connection failed", exc_info=True)
