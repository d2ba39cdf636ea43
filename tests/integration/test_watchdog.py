"""The database watchdog (db/watchdog.py): a connection whose statement waits for its answer
past the time the database has to answer is closed, and whatever waits on it fails as
retryable; opening a connection is bounded, and holds no caller's context while it waits.
The whole server against a frozen PostgreSQL: tests/integration/test_faults.py."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import time
import weakref
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import event, literal, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection

from giftgraph.db.engine import Database, create_database
from giftgraph.db.session import OperationDb, unavailable
from giftgraph.db.watchdog import MARGIN_SECONDS, SILENT_SECONDS
from giftgraph.errors import AppliedUnanswered
from tests.conftest import make_settings

STATEMENT_TIMEOUT_MS = 200
BUDGET = STATEMENT_TIMEOUT_MS / 1000 + MARGIN_SECONDS


@contextlib.asynccontextmanager
async def watched(url: str) -> AsyncIterator[Database]:
    database = create_database(url, make_settings(url, statement_timeout_ms=STATEMENT_TIMEOUT_MS))
    assert database.watch() is database.watchdog
    try:
        yield database
    finally:
        await database.watchdog.stop()
        await database.dispose()


# A statement PostgreSQL itself would not end (its statement_timeout lifted for the
# connection): what a database that stopped answering looks like from the client.
UNENDING = "SELECT pg_sleep(30)"


async def unbounded(connection: AsyncConnection) -> None:
    await connection.execute(text("SET statement_timeout = 0"))


async def until(condition: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.05)


async def test_a_statement_unanswered_past_the_budget_is_cut(database_url: str) -> None:
    async with watched(database_url) as database:
        watchdog = database.watchdog
        connection = await database.read_engine.connect()
        await unbounded(connection)
        started = time.monotonic()
        with pytest.raises(DBAPIError) as failed:
            await connection.execute(text(UNENDING))
        took = time.monotonic() - started
        with contextlib.suppress(Exception):
            await connection.close()
        assert BUDGET - 0.1 < took < BUDGET + watchdog.tick + 2, took
        assert unavailable(failed.value)  # the client is told to retry
        assert watchdog.cut == 1
        assert watchdog.silent_since is not None
        # The pool replaces it; a statement answered ends the silence.
        async with database.engine.connect() as connection:
            assert (await connection.execute(text("SELECT 2"))).scalar() == 2
        assert watchdog.silent_since is None


async def test_an_idle_or_busy_connection_that_gets_its_answers_is_left_alone(
        database_url: str) -> None:
    """The bound is on waiting for an answer, not on holding a connection: a checkout idle
    past the budget, or running statements that take it all together, is the operation's
    own business (an HTTP operation holds its reads' connection from authentication to
    its end; a dashboard reads its parts one after another)."""
    async with watched(database_url) as database:
        async with database.read_engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            await asyncio.sleep(BUDGET + database.watchdog.tick + 0.3)  # idle
            for _ in range(4):  # each well within statement_timeout, together past the budget
                await connection.execute(text("SELECT pg_sleep(0.15)"))
                await asyncio.sleep(BUDGET / 4)
            assert (await connection.execute(text("SELECT 3"))).scalar() == 3
        assert database.watchdog.cut == 0
        assert database.watchdog.silent_since is None


async def _silent_server() -> tuple[asyncio.Server, int]:
    """A TCP server that accepts connections and never answers (a frozen PostgreSQL)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_opening_a_connection_is_bounded_then_shorter_while_silent() -> None:
    """The first connect waits its bound; then the database is silent: a connect right
    after fails at once, and one later tries for `SILENT_SECONDS` only."""
    server, port = await _silent_server()
    url = f"postgresql://postgres@127.0.0.1:{port}/nothing"
    database = create_database(url, make_settings(url, statement_timeout_ms=STATEMENT_TIMEOUT_MS))
    database.watch()

    async def connect() -> float:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with database.engine.connect():
                pass
        return time.monotonic() - started

    try:
        assert BUDGET - 0.2 < await connect() < BUDGET + 1
        assert database.watchdog.silent_since is not None
        assert await connect() < 0.5
        await asyncio.sleep(SILENT_SECONDS)
        assert SILENT_SECONDS - 0.2 < await connect() < SILENT_SECONDS + 1
    finally:
        await database.watchdog.stop()
        await database.dispose()
        server.close()


CALLER: contextvars.ContextVar[object] = contextvars.ContextVar("caller")


class Socket:
    """Stands for what a socket's handler keeps in its context."""


async def test_opening_a_connection_holds_no_callers_context(database_url: str) -> None:
    """asyncio's loop keeps a cancelled timer, with the context it was armed in, until it
    would have fired: asyncpg's connect timeout armed in a socket's task held that socket
    (its handler, its buffers) for the whole timeout after the socket closed."""
    async with watched(database_url) as database:
        socket = Socket()
        gone = weakref.ref(socket)

        async def handler(held: Socket) -> None:
            CALLER.set(held)
            async with database.engine.connect() as connection:  # a new one: the pool is empty
                await connection.execute(text("SELECT 1"))

        await asyncio.create_task(handler(socket))
        await asyncio.sleep(0)  # the handle that woke this task (its args: that task) is let go
        del socket
        gc.collect()
        assert gone() is None


async def test_an_operation_gives_up_its_reads_while_the_database_is_silent(
        database_url: str) -> None:
    """After one of its reads failed for want of an answer, an operation's next reads fail
    at once (retryable) instead of each waiting again (the adversary's re-attack: 26-62 s
    for one request at the default bound); once its connection is given back, reads start
    afresh. After a change of it was applied, they say so (`AppliedUnanswered`)."""
    async with watched(database_url) as database:
        db = OperationDb(database)
        checkouts: list[int] = []
        event.listen(database.engine.sync_engine.pool, "checkout",
                     lambda *_: checkouts.append(1))
        await db.scalar(text(  # type: ignore[arg-type]
            "SELECT set_config('statement_timeout', '0', false)"))
        with pytest.raises(DBAPIError):
            await db.scalar(text(UNENDING))  # type: ignore[arg-type]
        taken = len(checkouts)
        with pytest.raises(TimeoutError):
            await db.scalar(select(literal(3)))
        assert len(checkouts) == taken  # not even a checkout
        db.commits = 1  # as after a mutation's unit of work
        with pytest.raises(AppliedUnanswered):
            async with db.write():
                pass
        db.commits = 0
        await db.close()
        assert await db.scalar(select(literal(4))) == 4
        assert database.watchdog.silent_since is None
        await db.end()


async def test_while_silent_a_full_pool_refuses_at_once(database_url: str) -> None:
    """The pool's own wait for a connection is 30 s: while the database does not answer,
    requests queued there waited it out (adversary, 2026-11-27: answers at 30 s under 50
    clients, with every connection bounded)."""
    database = create_database(database_url, make_settings(
        database_url, statement_timeout_ms=STATEMENT_TIMEOUT_MS, db_pool_size=1))
    database.watch()
    try:
        held = await database.read_engine.connect()  # the pool's one connection, idle
        await held.execute(text("SELECT 1"))
        assert database.lane_engine is not None
        hanging = await database.lane_engine.connect()  # the silence comes from elsewhere
        await unbounded(hanging)
        with pytest.raises(DBAPIError):
            await hanging.execute(text(UNENDING))
        assert database.watchdog.silent_since is not None
        started = time.monotonic()
        with pytest.raises(PoolTimeout) as refused:
            async with database.engine.connect():
                pass
        assert time.monotonic() - started < 1
        assert unavailable(refused.value)
        assert (await held.execute(text("SELECT 5"))).scalar() == 5  # held: still fine
        for connection in (hanging, held):
            with contextlib.suppress(Exception):
                await connection.close()
    finally:
        await database.watchdog.stop()
        await database.dispose()


async def test_a_database_error_names_no_value(database_url: str) -> None:
    """Unexpected errors are logged in full: their text must not carry the statement's
    values (an e-mail address, a password hash, a family's data), which SQLAlchemy adds
    to it unless told not to. (A message of the driver's or PostgreSQL's own may still
    quote a value: a conversion error, a unique key's detail.)"""
    database = create_database(database_url, make_settings(database_url))
    try:
        async with database.engine.connect() as connection:
            with pytest.raises(DBAPIError) as failed:
                await connection.execute(text("SELECT CAST(:v AS text), 1 / 0"),
                                         {"v": "secret-value"})
        assert "division by zero" in str(failed.value)
        assert "secret-value" not in str(failed.value)
        assert "SELECT CAST" in str(failed.value)  # the statement itself is still named
    finally:
        await database.dispose()
