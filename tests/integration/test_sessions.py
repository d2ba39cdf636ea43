"""An operation's session: reads, then a mutation's unit of work, on a real PostgreSQL.

`now()` is the start of the current transaction: equal values in the reads and in the write
mean the write continued the reads' transaction; different ones, that it began its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from giftgraph.config import Settings
from giftgraph.db import models as m
from giftgraph.db.engine import Database, create_database
from giftgraph.db.session import OperationDb
from tests.conftest import make_settings

NOW: Any = text("SELECT now()")


@pytest.fixture
async def database(settings: Settings, database_url: str) -> AsyncIterator[Database]:
    db = create_database(database_url, settings)
    yield db
    await db.dispose()


async def add_family(op: OperationDb, name: str) -> Any:
    async with op.write() as session:
        family = m.Family(name=name)
        session.add(family)
        started = (await session.execute(NOW)).scalar()
    assert await op.scalar(select(m.Family.name).where(m.Family.id == family.id)) == name
    return started


async def test_a_write_after_plain_reads_continues_their_transaction(database: Database) -> None:
    op = OperationDb(database.sessions)
    try:
        read_started = await op.scalar(NOW)
        await op.rows(select(m.Family.id, m.Family.name))  # plain rows: nothing to expire
        assert await add_family(op, "Continued") == read_started
    finally:
        await op.close()


async def test_a_write_after_reads_that_loaded_objects_begins_its_own(database: Database) -> None:
    """A failed write's ROLLBACK would expire objects the reads loaded, so their transaction
    is committed first."""
    op = OperationDb(database.sessions)
    try:
        await add_family(op, "Loaded")
        read_started = await op.scalar(NOW)
        loaded = await op.scalars(select(m.Family).where(m.Family.name == "Loaded"))
        assert await add_family(op, "Second") != read_started
        assert loaded[0].name == "Loaded"  # still readable: nothing expired
    finally:
        await op.close()


async def test_a_write_after_a_failed_read_begins_a_clean_transaction(
        database: Database) -> None:
    """PostgreSQL aborts the transaction of a failed statement: the mutation that follows
    (say, the next root field of the same operation) must not run in it."""
    op = OperationDb(database.sessions)
    try:
        with pytest.raises(DBAPIError):
            await op.scalar(text("SELECT 1 / 0"))  # type: ignore[call-overload]
        await add_family(op, "After a failed read")
        # the failure is spent: a write after plain reads continues them again
        read_started = await op.scalar(NOW)
        assert await add_family(op, "Then continued") == read_started
    finally:
        await op.close()


async def test_reads_work_again_after_recover(database: Database) -> None:
    """The lean executor's rerun of a query (schema/execution.py) after a failed read."""
    op = OperationDb(database.sessions)
    try:
        await op.recover()  # nothing failed: nothing to do
        first = await op.scalar(NOW)
        assert await op.scalar(NOW) == first  # still one transaction
        with pytest.raises(DBAPIError):
            await op.scalar(text("SELECT 1 / 0"))  # type: ignore[call-overload]
        with pytest.raises(DBAPIError, match="aborted"):
            await op.scalar(text("SELECT 1"))  # type: ignore[call-overload]
        await op.recover()
        assert await op.scalar(text("SELECT 1")) == 1  # type: ignore[call-overload]
    finally:
        await op.close()


# -- the pool's idle check (`ping_when_idle`) ---------------------------------------------------

PID: Any = text("SELECT pg_backend_pid()")


async def _pid(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(PID)).scalar_one())


async def _kill(database_url: str, pid: int) -> None:
    """End a server process, and wait until it has exited (PostgreSQL 14+)."""
    db = create_database(database_url, make_settings(database_url))
    try:
        async with db.engine.connect() as c:
            ended = await c.execute(text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid})
            assert ended.scalar()
    finally:
        await db.dispose()
    await asyncio.sleep(0.05)  # the socket's end reaches the client


def _counting_pings(database_url: str, after: float,
                    monkeypatch: pytest.MonkeyPatch) -> tuple[Database, list[Any]]:
    """A pool that pings connections idle `after` seconds, and the list of its pings."""
    db = create_database(database_url, make_settings(database_url,
                                                     db_ping_after_idle_seconds=after))
    pings: list[Any] = []
    ping = db.engine.dialect.do_ping
    monkeypatch.setattr(db.engine.dialect, "do_ping",
                        lambda conn: pings.append(conn) or ping(conn))
    return db, pings


async def test_an_idle_connection_killed_meanwhile_is_replaced_before_use(
        database_url: str) -> None:
    """A connection idle for longer than `db_ping_after_idle_seconds` is pinged before use:
    one the server dropped meanwhile (a restart, an idle timeout) is replaced, and the
    request never sees it."""
    db = create_database(database_url, make_settings(database_url,
                                                     db_ping_after_idle_seconds=0.2))
    try:
        first = await _pid(db)
        await _kill(database_url, first)
        await asyncio.sleep(0.3)
        assert await _pid(db) != first
    finally:
        await db.dispose()


async def test_a_recently_used_connection_is_not_pinged_and_a_dead_one_fails_once(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Within the idle window there is no ping (no round trips before the statement); a
    connection the server dropped within it fails that one statement as a disconnect,
    which invalidates the pool, and the next request gets a new connection."""
    db, pings = _counting_pings(database_url, 60, monkeypatch)
    try:
        first = await _pid(db)
        assert await _pid(db) == first
        assert pings == []
        await _kill(database_url, first)
        with pytest.raises(DBAPIError) as failed:
            await _pid(db)
        assert failed.value.connection_invalidated
        assert await _pid(db) != first
        assert pings == []
    finally:
        await db.dispose()


async def test_ping_after_zero_seconds_checks_every_checkout(database_url: str,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             ) -> None:
    db, pings = _counting_pings(database_url, 0, monkeypatch)
    try:
        await _pid(db)  # a new connection: no ping
        await _pid(db)
        await _pid(db)
        assert len(pings) == 2
    finally:
        await db.dispose()
