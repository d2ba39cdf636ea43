"""An operation's sessions: reads in autocommit, then a mutation's unit of work in a
transaction, on a real PostgreSQL. `now()` is the start of the current transaction."""

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
PID: Any = text("SELECT pg_backend_pid()")


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




async def _state(db: Database, pid: int) -> str:
    """What the server says a backend is doing, asked on another connection."""
    async with db.engine.connect() as conn:
        return str((await conn.execute(
            text("SELECT state FROM pg_stat_activity WHERE pid = :p"), {"p": pid})).scalar())


async def test_reads_run_without_begin_and_a_write_in_its_own_transaction(
        database: Database) -> None:
    """Reads are autocommit: no BEGIN and ROLLBACK round trips around them. The write is
    one transaction, on the connection the reads gave back: one connection at a time."""
    op = OperationDb(database)
    try:
        assert await op.scalar(NOW) != await op.scalar(NOW)  # a transaction each
        read_pid = await op.scalar(PID)
        assert await _state(database, read_pid) == "idle"  # not "idle in transaction"
        async with op.write() as session:
            began = (await session.execute(NOW)).scalar()
            assert database.engine.sync_engine.pool.checkedout() == 1
            session.add(m.Family(name="Written"))
            await session.flush()
            assert (await session.execute(NOW)).scalar() == began
            assert (await session.execute(PID)).scalar() == read_pid
            assert await _state(database, read_pid) == "idle in transaction"
        assert await op.scalar(select(m.Family.name).where(m.Family.name == "Written"))
        assert await _state(database, read_pid) == "idle"  # reads after the write: autocommit
    finally:
        await op.close()
    assert database.engine.sync_engine.pool.checkedout() == 0


async def _failing_write(op: OperationDb) -> None:
    async with op.write() as session:
        session.add(m.Family(name="Never"))
        await session.flush()
        raise RuntimeError("the resolver failed")


async def test_objects_the_reads_loaded_survive_a_failed_write(database: Database) -> None:
    op = OperationDb(database)
    try:
        await add_family(op, "Loaded")
        loaded = await op.scalars(select(m.Family).where(m.Family.name == "Loaded"))
        with pytest.raises(RuntimeError, match="the resolver failed"):
            await _failing_write(op)
        assert loaded[0].name == "Loaded"  # still readable: nothing expired
        assert await op.scalar(select(m.Family.id).where(m.Family.name == "Never")) is None
        await add_family(op, "Second")
    finally:
        await op.close()


async def test_a_failed_read_spoils_nothing_after_it(database: Database) -> None:
    """In a transaction, PostgreSQL refuses every statement after a failed one; in
    autocommit the next read and the next write simply work."""
    op = OperationDb(database)
    try:
        with pytest.raises(DBAPIError):
            await op.scalar(text("SELECT 1 / 0"))  # type: ignore[call-overload]
        assert await op.scalar(text("SELECT 1")) == 1  # type: ignore[call-overload]
        with pytest.raises(DBAPIError):
            await op.scalar(text("SELECT 1 / 0"))  # type: ignore[call-overload]
        await add_family(op, "After a failed read")
    finally:
        await op.close()


async def test_a_read_cancelled_mid_statement_spoils_no_read_after_it(
        database: Database) -> None:
    """A cancelled statement invalidates its connection: the operation's next read (another
    field's) runs on a new session, not into PendingRollbackError on the broken one."""
    op = OperationDb(database)
    try:
        await op.scalar(PID)
        slow = asyncio.create_task(op.scalar(text("SELECT pg_sleep(5)")))  # type: ignore[call-overload]
        await asyncio.sleep(0.3)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await op.scalar(text("SELECT 1")) == 1  # type: ignore[call-overload]
        assert await op.scalar(text("SELECT 2")) == 2  # type: ignore[call-overload]
    finally:
        await op.close()


async def test_recover_after_a_failed_read_opens_a_new_session(database: Database) -> None:
    """The lean executor's rerun of a query (accel/executor.py) after a failed read."""
    op = OperationDb(database)
    try:
        await op.recover()  # nothing failed: nothing to do
        pid = await op.scalar(PID)
        await op.recover()
        assert database.engine.sync_engine.pool.checkedout() == 1  # kept
        with pytest.raises(DBAPIError):
            await op.scalar(text("SELECT 1 / 0"))  # type: ignore[call-overload]
        await op.recover()
        assert database.engine.sync_engine.pool.checkedout() == 0  # given back
        assert await op.scalar(PID) == pid  # the pool's most recent connection again
    finally:
        await op.close()


# -- the pool's idle check (`ping_when_idle`) ---------------------------------------------------

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


async def test_a_recently_used_connection_is_not_pinged_and_a_dead_one_is_replaced(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Within the idle window there is no ping (no round trips before the statement). A
    connection the server dropped within it, once the client has seen its socket end, is
    closed on our side: the checkout replaces it without a ping and the request works
    (it used to fail that one statement as a disconnect)."""
    db, pings = _counting_pings(database_url, 60, monkeypatch)
    try:
        first = await _pid(db)
        assert await _pid(db) == first
        assert pings == []
        await _kill(database_url, first)
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


async def test_a_connection_closed_on_our_side_is_never_handed_out(database: Database) -> None:
    """A read in autocommit ends with no ROLLBACK at checkin (which failed on a closed
    connection and made the pool drop it). A connection asyncpg closed (it does after a
    cancelled statement) is now caught at checkout, even within the idle window that
    skips the ping, and the next read gets a working one."""
    op = OperationDb(database)
    try:
        pid = await op.scalar(PID)
        session = await op._get()
        raw = await (await session.connection()).get_raw_connection()
        await raw.driver_connection.close()
    finally:
        await op.close()  # back to the pool, closed
    op = OperationDb(database)
    try:
        assert await op.scalar(text("SELECT 1")) == 1  # type: ignore[call-overload]
        assert await op.scalar(PID) != pid
    finally:
        await op.close()


async def _family_of_one(op: OperationDb, email: str, role: m.Role) -> m.User:
    """A new family with one user, written through `op`."""
    async with op.write() as session:
        family = m.Family(name="F")
        session.add(family)
        await session.flush()
        user = m.User(family_id=family.id, email=email, display_name="P", role=role,
                      password_hash="x")
        session.add(user)
    return user


def _watching(database: Database) -> tuple[list[str], list[str], Any]:
    """The statements through the engine and those run directly, from now on; and the
    engine listener, to remove (`event.remove(..., "before_cursor_execute", it)`)."""
    from sqlalchemy import event

    through_engine: list[str] = []
    direct: list[str] = []

    def before(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        through_engine.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", before)
    database.statement_hooks.append(direct.append)
    return through_engine, direct, before


async def test_a_prepared_statement_reads_as_sqlalchemy_does(database: Database) -> None:
    """`fetch` runs a statement on asyncpg directly, on the reads' connection: the same
    values as SQLAlchemy's execution (the role as its enum, a constant parameter bound),
    seen by `statement_hooks` and not by the engine. Where something observes the engine
    (`direct_statements` off: tracing) the statement goes through SQLAlchemy instead."""
    from sqlalchemy import event

    from giftgraph.db.session import Prepared
    from giftgraph.schema.cache import USER_AND_VERSION

    op = OperationDb(database)
    user = await _family_of_one(op, "p@example.com", m.Role.ADMIN)
    params = {"user_id": user.id, "chain_id": None}
    prepared = Prepared(USER_AND_VERSION)
    through_engine, direct, before = _watching(database)
    try:
        (expected,) = await op.rows(USER_AND_VERSION, params)
        assert len(through_engine) == 1
        (row,) = await op.fetch(prepared, params)
        assert (len(through_engine), direct) == (1, [prepared.sql])
        assert tuple(row) == tuple(expected)
        assert row.role is m.Role.ADMIN
        assert (row.version, row.chain_revoked) == (None, None)
        assert row[:2] == (user.id, user.family_id)
        sum_and_text = Prepared(text("SELECT CAST(:a AS int) + 1, CAST(:b AS text)"))
        (text_row,) = await op.fetch(sum_and_text, {"a": 41, "b": "x"})
        assert text_row == (42, "x")
        database.direct_statements = False
        (again,) = await op.fetch(prepared, params)
        assert tuple(again) == tuple(expected)
        assert (len(through_engine), len(direct)) == (2, 2)
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", before)
        await op.close()


async def test_a_prepared_statements_error_is_sqlalchemys_and_a_broken_connection_goes(
        database: Database, database_url: str) -> None:
    """A driver's error in `fetch` comes out as SQLAlchemy's would (a DBAPIError: what the
    "database unavailable" handling of authentication and sockets catches), and a
    connection that broke is invalidated: the pool never gives it out again."""
    from giftgraph.db.session import Prepared

    op = OperationDb(database)
    try:
        timed_out = Prepared(text("SELECT pg_sleep(2)"))
        # (this test's own engine: the setting goes with its connections)
        await op.scalar(text("SELECT set_config('statement_timeout', '100', false)"))
        with pytest.raises(DBAPIError) as caught:
            await op.fetch(timed_out, {})
        assert not caught.value.connection_invalidated
        assert "canceling statement" in str(caught.value.orig)
    finally:
        await op.close()
    op = OperationDb(database)
    try:
        pid = await op.scalar(PID)
        async with database.engine.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        with pytest.raises(DBAPIError) as caught:
            await op.fetch(Prepared(PID), {})
        assert caught.value.connection_invalidated
        (row,) = await op.fetch(Prepared(PID), {})  # a new session: another connection
        assert row[0] != pid
    finally:
        await op.close()


async def test_a_prepared_statement_binds_none_as_sqlalchemy_does(database: Database) -> None:
    """None for a JSON parameter is JSON `null` on asyncpg directly as through SQLAlchemy
    (a deleted entity's event payload), and SQL NULL for a plain one."""
    from sqlalchemy import Text, bindparam

    from giftgraph.db.session import Prepared

    op = OperationDb(database)
    stmt = text("SELECT CAST(:p AS jsonb) IS NULL AS sql_null, CAST(:p AS jsonb) AS p, "
                "CAST(:t AS text) IS NULL AS t_null").bindparams(
        bindparam("p", type_=m.Event.__table__.c.payload.type), bindparam("t", type_=Text()))
    try:
        (through,) = await op.rows(stmt, {"p": None, "t": None})
        (direct,) = await op.fetch(Prepared(stmt), {"p": None, "t": None})
        assert (through.sql_null, through.t_null) == (direct[0], direct[2]) == (False, True)
    finally:
        await op.close()


async def test_a_unit_of_works_statements_run_directly_inside_its_transaction(
        database: Database) -> None:
    """`execute_in`: a unit of work's first statement goes through the session (it begins
    the transaction), the next ones on its asyncpg connection directly, inside that
    transaction: rolled back with it, and a failure arrives as SQLAlchemy's DBAPIError
    with the server's SQLSTATE (what the retries of a deadlock read). Through the engine
    where something observes it (`direct_statements` off)."""
    from sqlalchemy import event

    from giftgraph.db.session import Prepared, execute_in

    op = OperationDb(database)
    rename = Prepared(text("UPDATE families SET name = CAST(:n AS text) WHERE id = :f "
                           "RETURNING name"))
    refused = Prepared(text("SELECT 1 / CAST(:zero AS int)"))
    async with op.write() as session:
        family = m.Family(name="Before")
        session.add(family)
    through_engine, direct, before = _watching(database)
    try:
        async def renamed_twice_then_undone() -> None:
            async with op.write() as session:
                assert await execute_in(session, rename, {"n": "First", "f": family.id}) \
                    == [("First",)]
                assert (len(through_engine), direct) == (1, [])  # it began the transaction
                assert await execute_in(session, rename, {"n": "Second", "f": family.id}) \
                    == [("Second",)]
                assert (len(through_engine), direct) == (1, [rename.sql])
                raise RuntimeError("undo")

        async def renamed_then_refused() -> None:
            async with op.write() as session:
                await execute_in(session, rename, {"n": "Third", "f": family.id})
                await execute_in(session, refused, {"zero": 0})

        with pytest.raises(RuntimeError, match="undo"):
            await renamed_twice_then_undone()
        assert await op.scalar(select(m.Family.name).where(m.Family.id == family.id)) \
            == "Before"  # both rolled back
        with pytest.raises(DBAPIError) as caught:
            await renamed_then_refused()
        assert caught.value.orig.sqlstate == "22012"  # type: ignore[union-attr]
        assert await op.scalar(select(m.Family.name).where(m.Family.id == family.id)) \
            == "Before"
        database.direct_statements = False
        engine_before = len(through_engine)
        async with op.write() as session:
            await execute_in(session, rename, {"n": "Fourth", "f": family.id})
            await execute_in(session, rename, {"n": "Fifth", "f": family.id})
        assert len(through_engine) == engine_before + 2
        assert await op.scalar(select(m.Family.name).where(m.Family.id == family.id)) \
            == "Fifth"
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", before)
        await op.close()


async def test_a_prepared_statement_outside_an_operation_takes_a_connection_for_itself(
        database: Database) -> None:
    """`session.fetch` (a subscription's replay, outside any operation): the rows of
    `OperationDb.fetch`, on a connection taken from the pool for the statement and given
    back after it, also when it fails (a DBAPIError, as SQLAlchemy's); through the engine
    where something observes it (`direct_statements` off)."""
    from sqlalchemy import event

    from giftgraph.db.session import Prepared, fetch
    from giftgraph.schema.cache import USER_AND_VERSION

    op = OperationDb(database)
    user = await _family_of_one(op, "alone@example.com", m.Role.MEMBER)
    params = {"user_id": user.id, "chain_id": None}
    prepared = Prepared(USER_AND_VERSION)
    (expected,) = await op.fetch(prepared, params)
    await op.close()
    pool = database.engine.sync_engine.pool
    through_engine, direct, before = _watching(database)
    try:
        (row,) = await fetch(database, prepared, params)
        assert row == expected
        assert row.role is m.Role.MEMBER
        assert (through_engine, direct) == ([], [prepared.sql])
        assert pool.checkedout() == 0
        with pytest.raises(DBAPIError) as caught:
            await fetch(database, Prepared(text("SELECT 1/0")), {})
        assert not caught.value.connection_invalidated
        assert pool.checkedout() == 0
        database.direct_statements = False
        (again,) = await fetch(database, prepared, params)
        assert tuple(again) == tuple(expected)
        assert (len(through_engine), len(direct)) == (1, 2)
        assert pool.checkedout() == 0
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", before)


async def test_a_direct_statement_keeps_nothing_of_the_task_that_ran_it(
        database: Database) -> None:
    """A statement run on asyncpg directly is cached by asyncpg (prepared once per
    connection); a cache entry with a lifetime holds a timer, and the timer the context
    of the task that prepared it (a socket's): for 300 s, the socket. Not so here."""
    import contextvars
    import gc
    import weakref

    from giftgraph.db.session import Prepared

    holder: contextvars.ContextVar[object] = contextvars.ContextVar("holder")

    class Socket:
        pass

    async def run() -> weakref.ref[Socket]:
        socket = Socket()
        holder.set(socket)
        op = OperationDb(database)
        try:
            await op.fetch(Prepared(text("SELECT 'a direct statement'")), {})
        finally:
            await op.close()
        return weakref.ref(socket)

    warm = OperationDb(database)  # the pool's connection opened outside the task
    await warm.scalar(text("SELECT 1"))
    await warm.close()
    gone = await asyncio.create_task(run(), context=contextvars.Context())
    for _ in range(3):  # the loop lets go of the finished task
        await asyncio.sleep(0)
    gc.collect()
    assert gone() is None


async def test_direct_statements_open_no_session_and_later_reads_share_their_connection(
        database: Database) -> None:
    """An operation whose reads all run on asyncpg directly (a socket's connection_init:
    its caller) opens no session; a later read that needs one opens it on the same
    connection: the operation still holds one connection at a time, given back at its
    end (or after each read, for a scope that does not hold its reads)."""
    from giftgraph.db.session import Prepared

    made: list[dict[str, Any]] = []
    reads = database.reads

    def counting(**kw: Any) -> Any:
        made.append(kw)
        return reads(**kw)

    database.reads = counting  # type: ignore[assignment]
    pool: Any = database.engine.sync_engine.pool
    op = OperationDb(database)
    try:
        ((pid,),) = await op.fetch(Prepared(PID), {})
        ((again,),) = await op.fetch(Prepared(PID), {})
        assert again == pid
        assert made == []
        assert pool.checkedout() == 1
        assert await op.scalar(PID) == pid  # the session, on the same connection
        assert len(made) == 1
        assert pool.checkedout() == 1
        ((after,),) = await op.fetch(Prepared(PID), {})  # the session's connection
        assert after == pid
    finally:
        await op.close()
    assert pool.checkedout() == 0
    op = OperationDb(database, hold_reads=False)
    try:
        await op.fetch(Prepared(PID), {})
        assert pool.checkedout() == 0
        assert made == [made[0]]
    finally:
        await op.close()


async def test_callers_asked_for_in_one_turn_are_read_in_one_statement(
        database: Database, settings: Settings) -> None:
    """Sockets authenticating together (a reconnect herd) read their callers in one
    statement: each gets what its own read would have (a revoked chain, an unknown user:
    None), and a failed read fails each of them."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import event

    from giftgraph.schema.extensions import (
        CALLER_AND_VERSION,
        USERS_AND_VERSIONS_PREPARED,
        CallerReads,
    )

    op = OperationDb(database)
    users = [await _family_of_one(op, f"r{k}@example.com", m.Role.ADMIN) for k in range(3)]
    revoked = uuid.uuid4()
    async with op.write() as session:
        session.add(m.RefreshToken(id=revoked, user_id=users[1].id, chain_id=revoked,
                                   token_hash="h" * 64, revoked_at=datetime.now(UTC),
                                   expires_at=datetime.now(UTC) + timedelta(days=1)))
    keys = [(users[0].id, None), (users[1].id, revoked), (uuid.uuid4(), None),
            (users[2].id, uuid.uuid4()), (users[0].id, None)]
    expected = []
    for user_id, chain_id in keys:
        rows = await op.fetch(CALLER_AND_VERSION, {"user_id": user_id, "chain_id": chain_id})
        expected.append(tuple(rows[0]) if rows else None)
    await op.close()
    assert expected[1] is not None
    assert expected[1][-2] is True  # the revoked chain
    assert expected[2] is None  # no such user
    through_engine, direct, before = _watching(database)
    try:
        reads = CallerReads(database)
        got = await asyncio.gather(*(reads.read(*key) for key in keys))
        assert direct == [USERS_AND_VERSIONS_PREPARED.sql]
        assert [tuple(row) if row is not None else None for row in got] == expected
        assert got[0].token_epoch == users[0].token_epoch  # shaped as one caller's read
        assert through_engine == []
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", before)
    nowhere = create_database("postgresql+asyncpg://nobody@127.0.0.1:9/none", settings)
    try:
        reads = CallerReads(nowhere)
        failed = await asyncio.gather(*(reads.read(*key) for key in keys[:3]),
                                      return_exceptions=True)
        assert [type(f) for f in failed] == [DBAPIError] * 3, failed
    finally:
        await nowhere.dispose()
