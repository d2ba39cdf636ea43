"""One database session per GraphQL operation, safe for concurrent resolvers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import namedtuple
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import Row, Select, TextClause, TextualSelect, Update
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql import sqltypes

from giftgraph.db.engine import Database
from giftgraph.db.models import Event
from giftgraph.errors import AppliedThenFailed, AppliedUnanswered, OutcomeUnknown

T = TypeVar("T")
log = logging.getLogger("giftgraph.db")
Publisher = Callable[[list[Event]], Awaitable[None]]


_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


class Prepared:
    """A statement compiled once to asyncpg's form, for `OperationDb.fetch`: run on the
    read connection's asyncpg connection, without SQLAlchemy's execution layer (its
    Connection and result objects, ~200 µs of CPU a statement: bench/NOTES.md). The
    values are converted as SQLAlchemy's execution converts them (the types' bind and
    result processors for this dialect); rows are tuples with the columns' names as
    attributes. For the hottest statements only (authentication, a compiled read, a unit of
    work's UPDATE and event rows: `execute_in`): no expanding `IN` parameters."""

    def __init__(self, stmt: Select[Any] | TextClause | TextualSelect | Update) -> None:
        self.statement = stmt
        compiled = stmt.compile(dialect=_DIALECT)
        if compiled.positiontup is None or any(
                b.expanding for b in compiled.binds.values()):
            raise ValueError("a statement with positional, non-expanding parameters only")
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup)
        self.constants = {n: b.effective_value for n, b in compiled.binds.items()}
        self.binds = tuple(compiled.binds[n].type.dialect_impl(_DIALECT)
                           .bind_processor(_DIALECT) for n in self.names)
        # The types that write None as a value of their own, as SQLAlchemy's execution
        # does (JSON: `null`, not SQL NULL, unless `none_as_null`)
        self.none_processed = tuple(bool(compiled.binds[n].type.should_evaluate_none)
                                    for n in self.names)
        columns = list(stmt.selected_columns) if isinstance(stmt, Select | TextualSelect) \
            else []
        self.results = tuple(_result_processor(c.type) for c in columns)
        self.row: Any = namedtuple("Row", [str(c.key) for c in columns], rename=True) \
            if columns else None

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        values = []
        for name, process, none_processed in zip(self.names, self.binds, self.none_processed,
                                                 strict=True):
            value = params[name] if name in params else self.constants[name]
            values.append(value if process is None or (value is None and not none_processed)
                          else process(value))
        return values

    def rows(self, records: Sequence[Any]) -> list[Any]:
        if self.row is None:
            return [tuple(r) for r in records]
        processors = self.results
        return [self.row._make([v if p is None or v is None else p(v)
                                for v, p in zip(r, processors, strict=True)])
                for r in records]


def _result_processor(type_: Any) -> Any:
    """A column type's result processor for this dialect. asyncpg's numeric ones ask for
    the column's PostgreSQL type: a `Numeric` column's own (NUMERIC, or FLOAT8 for a
    `Float`), the OIDs asyncpg's adapter would be given."""
    impl = type_.dialect_impl(_DIALECT)
    coltype = None
    if isinstance(impl, sqltypes.Numeric):
        coltype = FLOAT8_OID if isinstance(impl, sqltypes.Float) else NUMERIC_OID
    return impl.result_processor(_DIALECT, coltype)


NUMERIC_OID, FLOAT8_OID = 1700, 701


class OperationDb:
    """Lazily opened sessions shared by an operation's resolvers.

    Reads go through one session in autocommit (`Database.reads`): no BEGIN and ROLLBACK
    around them, and no transaction left open while a shared scope keeps its session. A
    mutation's unit of work (`write`) runs in a session and transaction of its own.
    Reads run on asyncpg directly (`fetch`) need no session: until another read needs
    one, they run on a connection of the reads' engine, which that session then uses.

    Strawberry resolves sibling fields concurrently, and an AsyncSession must not be
    used concurrently, so every use goes through one lock. DataLoaders batch the
    reads, so the lock costs little and the statement count stays deterministic.
    """

    def __init__(self, database: Database, publish: Publisher | None = None, *,
                 hold_reads: bool = True) -> None:
        # False for scopes that outlive their reads (an event's shared scope is held while
        # its subscribers are written to, which a socket that stops reading makes forever):
        # the connection goes back to the pool after each read, the next read takes one.
        self._hold_reads = hold_reads
        self._database = database
        self._reads = database.reads
        self._writes = database.sessions
        self._publish = publish
        self._session: AsyncSession | None = None  # the reads'
        # The reads' connection, when a direct read opened it before any session did.
        self._connection: AsyncConnection | None = None
        self._read_failed = False  # a read raised since the session was opened
        self._closed = False  # the operation is over (`end`): no read may start
        self._release = False  # `close` asked while a read ran: that read lets go after it
        # A read failed while the database does not answer (db/watchdog.py): the
        # operation's later reads fail at once, not each after waiting again, until its
        # connection goes back (`close`; a subscription's next event reads anew).
        self._given_up = False
        self._lock = asyncio.Lock()
        self.commits = 0  # units of work committed (a retry must not repeat one)

    async def _get(self) -> AsyncSession:
        """The reads' session (under the lock). After a failed read (a statement cancelled
        or timed out, a broken connection) a new one: the failed session's connection may
        be invalidated, and every later read of the operation on it would fail too
        (PendingRollbackError), not just the one whose statement failed."""
        self._check_open()
        if self._read_failed:
            await self._close_reads()
        if self._session is None:
            # on the connection the direct reads opened, if they did: one at a time
            self._session = self._reads() if self._connection is None \
                else self._reads(bind=self._connection)
        return self._session

    async def scalars(self, stmt: Select[T],
                      params: Mapping[str, Any] | None = None) -> Sequence[T]:
        async with self._lock:
            try:
                return (await (await self._get()).scalars(stmt, params)).all()
            except BaseException as exc:
                self._failed(exc)  # AppliedUnanswered, after a change was committed
                raise
            finally:
                await self._let_go()

    async def rows(self, stmt: Select[*tuple[Any, ...]],
                   params: Mapping[str, Any] | None = None) -> Sequence[Row[*tuple[Any, ...]]]:
        """Rows of columns (no ORM entities): run on the session's connection, without the
        ORM's execution layer (server CPU per `{ me { id } }`, whose one statement this is:
        3.38 -> 3.10 ms, medians of 6 alternating rounds)."""
        async with self._lock:
            try:
                connection = await (await self._get()).connection()
                return (await connection.execute(stmt, params)).all()
            except BaseException as exc:
                self._failed(exc)  # AppliedUnanswered, after a change was committed
                raise
            finally:
                await self._let_go()

    async def fetch(self, prepared: Prepared,
                    params: Mapping[str, Any]) -> list[Any]:
        """`rows` of a `Prepared` statement, on the same connection as every other read."""
        if not self._database.direct_statements:
            return list(await self.rows(prepared.statement, params))  # type: ignore[arg-type]
        async with self._lock:
            try:
                return await _fetch_direct(self._database, self._direct_connection, prepared,
                                           params)
            except BaseException as exc:
                self._failed(exc)  # AppliedUnanswered, after a change was committed
                raise
            finally:
                await self._let_go()

    async def _direct_connection(self) -> AsyncConnection:
        """A direct read's connection (under the lock): the session's, if there is one;
        otherwise one of the reads' engine, opened without a session (a socket's
        connection_init, say, reads nothing else)."""
        self._check_open()
        if self._read_failed:
            await self._close_reads()
        if self._session is not None:
            return await self._session.connection()
        if self._connection is None:
            connection = self._database.read_engine.connect()
            await connection.start()
            self._connection = connection
        return self._connection

    async def scalar(self, stmt: Select[T],
                     params: Mapping[str, Any] | None = None) -> T | None:
        async with self._lock:
            try:
                return await (await self._get()).scalar(stmt, params)
            except BaseException as exc:
                self._failed(exc)  # AppliedUnanswered, after a change was committed
                raise
            finally:
                await self._let_go()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """The unit of work of one mutation: committed once on success, else rolled back."""
        async with self._lock:
            self._check_open()
            # The reads' connection goes back to the pool first (no round trip: nothing is
            # open on it), and the write takes it again (the pool is LIFO): an operation
            # holds one connection at a time. Objects the reads loaded stay readable.
            await self._close_reads()
            session = self._writes()
            if self._database.direct_statements:
                session.info[DIRECT_KEY] = self._database
            committing = False
            try:
                try:
                    yield session
                    await session.flush()  # the unit's last statements, before the COMMIT
                    committing = True
                    await session.commit()
                    self.commits += 1
                except BaseException as exc:
                    await session.rollback()
                    self._rolled_back(session, exc, committing)
                    raise
                events = take_pending(session)
                hooks = take_after_commit(session)
            finally:
                await _close(session)
        await self._committed(events, hooks)  # after COMMIT, outside the lock

    @asynccontextmanager
    async def write_direct(self) -> AsyncIterator[AsyncSession | DirectUnit]:
        """`write` for a unit of work whose statements are all `Prepared` ones run through
        `execute_in`: its transaction on the asyncpg connection alone, with no ORM session
        (a session's begin, commit and close were ~0.3 ms of CPU a mutation: bench/NOTES.md
        2026-11-29 14:18). The same lock, connection, commit count, events and after-commit
        hooks as `write`, and the same errors (the driver's as SQLAlchemy's `DBAPIError`).
        Where statements must go through SQLAlchemy (`Database.direct_statements` off), a
        session, as `write`."""
        database = self._database
        if not database.direct_statements:
            async with self.write() as session:
                yield session
            return
        async with self._lock:
            self._check_open()
            await self._close_reads()  # one connection at a time, as `write`
            connection = database.engine.connect()
            committing = False
            try:
                await connection.start()
                driver = (await connection.get_raw_connection()).driver_connection
                unit = DirectUnit(connection, database, driver)
                try:
                    await unit.command("BEGIN")  # cancelled in flight, it may still begin
                    yield unit
                    committing = True
                    await unit.command("COMMIT")
                    self.commits += 1
                except BaseException as exc:
                    await unit.rollback()
                    self._rolled_back(unit, exc, committing)
                    raise
                events = take_pending(unit)
                hooks = take_after_commit(unit)
            finally:
                if connection.sync_connection is not None:  # not when none was had
                    await _close(connection)
        await self._committed(events, hooks)

    def _rolled_back(self, unit: Unit, exc: BaseException, committing: bool) -> None:
        """After a unit of work failed with `exc` and rolled back: its events and hooks
        dropped (rolled-back work publishes nothing); `OutcomeUnknown` when the connection
        was lost during its COMMIT (it may have been applied), `AppliedUnanswered` or
        `AppliedThenFailed` when an earlier unit of the operation committed
        (`_unanswered_after_commit`). Otherwise the caller raises `exc`."""
        take_pending(unit)
        take_after_commit(unit)
        if committing and _lost(exc):
            log.warning("the connection was lost during a COMMIT: it may have been applied")
            raise OutcomeUnknown from exc
        self._unanswered_after_commit(exc)

    async def _committed(self, events: list[Event],
                         hooks: list[Callable[[], Awaitable[None]]]) -> None:
        """A committed unit's events published and its after-commit hooks run."""
        if events and self._publish is not None:
            await self._publish(events)
        for hook in hooks:
            await hook()

    async def recover(self) -> None:
        """After a failed read, before the operation's reads run again: the session is
        closed (a connection that broke goes back to the pool, which replaces it) and the
        next read opens a new one. A failed statement in autocommit aborted nothing else."""
        async with self._lock:
            if self._read_failed:
                await self._close_reads()

    async def _let_go(self) -> None:
        """After a read, under the lock: the connection back to the pool, unless held (and
        always when `close` left that to the read that was running)."""
        if not self._hold_reads or self._release or self._closed:
            self._release = False
            self._given_up = False
            await self._close_reads()

    def _check_open(self) -> None:
        if self._closed:
            raise OperationOver("a read after its operation ended")
        if self._given_up:
            if self.commits:  # a later root field's unit of work, say
                raise _applied_unanswered()
            raise TimeoutError("the database does not answer")

    def _failed(self, exc: BaseException) -> None:
        """After a read raised `exc`: the next read opens a new session, gives up while the
        database is silent, and says so when a change of the operation was applied."""
        self._read_failed = True
        if self._database.watchdog.silent_since is not None and unavailable(exc):
            self._given_up = True
        self._unanswered_after_commit(exc)

    def _unanswered_after_commit(self, exc: BaseException) -> None:
        """Raises `AppliedUnanswered` for a lost database, `AppliedThenFailed` for a
        statement that ran out of time, once a unit of work committed: resending the
        operation would apply that change again (not the retryable answers either gets
        otherwise)."""
        if self.commits and unavailable(exc):
            raise _applied_unanswered() from exc
        if self.commits and timed_out(exc):
            log.warning("a statement ran out of time after a change of the operation was "
                        "applied")
            raise AppliedThenFailed("A statement ran out of time") from exc

    async def _close_reads(self) -> None:
        session, self._session = self._session, None
        connection, self._connection = self._connection, None
        self._read_failed = False
        try:
            if session is not None:
                await _close(session)
        finally:
            if connection is not None:
                await _close(connection)

    async def close(self) -> None:
        """Release the reads' session (and with it its connection), now or, if a read is
        running (a sibling field's), once its statement is over: never while it runs (the
        connection went back to the pool busy, and the next request's statement on it
        failed: 'another operation is in progress'). A later read opens another."""
        if self._lock.locked():
            self._release = True
        else:
            self._given_up = False
            await self._close_reads()

    async def end(self) -> None:
        """The operation is over: `close`, and no read starts afterwards. A resolver the
        operation left behind (graphql-core lets a field run on when a sibling fails at
        once) opened a session that was never closed: a pooled connection lost with every
        such request (adversary, 2026-11-26: 20 requests took the whole pool)."""
        self._closed = True
        await self.close()


class DirectUnit:
    """`OperationDb.write_direct`'s unit of work: what `execute_in` and the event log ask of
    a session (`info`, `flush`, `connection`), over a transaction begun on the asyncpg
    connection itself. It holds no ORM state: nothing to flush."""

    __slots__ = ("_connection", "database", "driver", "info")

    def __init__(self, connection: AsyncConnection, database: Database, driver: Any) -> None:
        self._connection, self.database, self.driver = connection, database, driver
        self.info: dict[str, Any] = {DIRECT_KEY: database, _DRIVER_KEY: driver}

    async def flush(self) -> None:
        """Nothing to write: every statement of the unit has run already."""

    async def connection(self) -> AsyncConnection:
        return self._connection

    async def command(self, sql: str) -> None:
        """BEGIN, COMMIT: told to the watchdog, and a driver's error raised as a
        `DBAPIError` (a lost connection invalidated), as `execute_in` raises it."""
        watchdog = self.database.watchdog
        watchdog.asking(self.driver)
        try:
            await self.driver.execute(sql)
        except DRIVER_ERRORS as exc:
            if isinstance(exc, asyncpg.PostgresError):
                watchdog.answered(self.driver)  # an error is an answer
            else:
                watchdog.idle(self.driver)
            broken = _broken(exc)
            if broken:
                await self._connection.invalidate()
            raise DBAPIError(sql, None, exc, connection_invalidated=broken) from exc
        except BaseException:
            watchdog.idle(self.driver)
            raise
        watchdog.answered(self.driver)

    async def rollback(self) -> None:
        """After a failure, whatever the transaction's state (not begun, a BEGIN or a
        statement cancelled in flight, failed, open): ROLLBACK, asked unconditionally (asyncpg
        learns the state only from the server's answer, and a command cancelled in flight
        may still begin, or hold, a transaction), or, when that fails, the connection
        invalidated (the pool then closes it). Either way it never goes back to the pool
        inside a transaction (the pool's own rollback does not know of this one). A failed
        ROLLBACK is not the unit's error: the caller raises that one."""
        if self._connection.invalidated:
            return
        try:
            await self.command("ROLLBACK")
        except BaseException as exc:
            if not self._connection.invalidated:
                await self._connection.invalidate()
            if not isinstance(exc, Exception):  # cancelled again meanwhile
                raise


Unit = AsyncSession | DirectUnit  # what `execute_in` runs a statement in


class OperationOver(asyncio.CancelledError):
    """A read asked for by a resolver its operation left behind, after the operation ended:
    that work is cancelled (it ends quietly, as its operation's other work did)."""


async def fetch(database: Database, prepared: Prepared,
                params: Mapping[str, Any], lane: bool = False) -> list[Any]:
    """`OperationDb.fetch` outside any operation (a subscription's replay): on a read
    connection of its own, taken from the pool for this statement and given back after
    it, with no session around it. `lane`: from the authentication lane's pool
    (`Database.lane_engine`), which nothing else waits on."""
    engine = database.lane_engine if lane and database.lane_engine is not None \
        else database.read_engine
    connection = engine.connect()
    try:
        if not database.direct_statements:
            await connection.start()
            return list((await connection.execute(prepared.statement, params)).all())
        return await _fetch_direct(database, connection.start, prepared, params)
    finally:
        if connection.sync_connection is not None:
            await connection.close()


async def _fetch_direct(database: Database, connect: Callable[[], Awaitable[AsyncConnection]],
                        prepared: Prepared, params: Mapping[str, Any]) -> list[Any]:
    """A `Prepared` statement's rows, run on the asyncpg connection under `connect()`."""
    for hook in database.statement_hooks:
        hook(prepared.sql)
    connection = None
    try:
        connection = await connect()
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None  # a connection checked out of the pool
        return prepared.rows(await _asked(database, driver, prepared, params))
    except DRIVER_ERRORS as exc:
        broken = _broken(exc)
        if broken and connection is not None:
            await connection.invalidate()
        raise DBAPIError(prepared.sql, None, exc, connection_invalidated=broken) from exc


async def _asked(database: Database, driver: Any, prepared: Prepared,
                 params: Mapping[str, Any]) -> list[Any]:
    """A `Prepared` statement's records from asyncpg, the round trip told to the watchdog."""
    watchdog = database.watchdog
    watchdog.asking(driver)
    try:
        records: list[Any] = await driver.fetch(prepared.sql, *prepared.args(params))
    except asyncpg.PostgresError:
        watchdog.answered(driver)  # an error is an answer
        raise
    except BaseException:
        watchdog.idle(driver)
        raise
    watchdog.answered(driver)
    return records


# What a statement run on asyncpg directly may raise; reported as SQLAlchemy's execution
# reports a driver's error (a DBAPIError: what the callers' "database unavailable" and
# retry handling catch), with the pool told when the connection itself broke, so that it
# is not given out again.
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                 OSError)


def unavailable(exc: BaseException | None) -> bool:
    """A lost or refused database connection, or none free in the pool in time (a
    subscription's read reported it unexpected: INTERNAL_SERVER_ERROR, not retryable):
    the client may simply retry, unless a change of its operation was applied already
    (`OperationDb` answers `AppliedUnanswered` then)."""
    for _ in range(8):  # the error, what it wraps (a DBAPIError's `orig`), what caused that
        if exc is None:
            return False
        # InternalClientError: a statement on a connection whose server is going away
        # ("cannot switch to state 12; another operation (2) is in progress": asyncpg
        # still consuming the server's termination notice).
        if isinstance(exc, OSError | TimeoutError | PoolTimeout | asyncpg.PostgresConnectionError
                      | asyncpg.InterfaceError | asyncpg.CannotConnectNowError
                      | asyncpg.InternalClientError):
            return True
        if isinstance(exc, DBAPIError) and (
                exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)):
            return True
        # SQLAlchemy's asyncpg adapter wraps the driver's error in its own (`orig`), which
        # names the driver's as its cause ("the database system is shutting down").
        exc = exc.orig if isinstance(exc, DBAPIError) else exc.__cause__
    return False


def cause(exc: BaseException | None) -> str:
    """What failed, by name only: `DBAPIError(ConnectionDoesNotExistError)`. SQLAlchemy's own
    text of an error carries the statement, which has no place in a log line a client's
    request can cause once a request."""
    if exc is None:
        return "?"
    orig = getattr(exc, "orig", None)
    return f"{type(exc).__name__}({type(orig).__name__})" \
        if isinstance(orig, BaseException) else type(exc).__name__


OUTAGE_LINE_SECONDS = 1.0  # one line of each kind at most this often while unavailable
_outage_lines: dict[str, tuple[float, int]] = {}  # kind: (when the next may be, left out)


def log_outage(logger: logging.Logger, what: str, exc: BaseException | None,
               trace_id: str | None = None) -> None:
    """Log that the database is unavailable to `what` (a sentence's subject: "a request",
    "authentication"), at most once a second for each `what`, naming the cause's type and
    how many more like it were left out since the last line. During an outage every
    request, socket and probe fails the same way: one line each made ~11,900 lines in a
    15 s outage polled tightly, a flood that hides whatever else the log says."""
    now = time.monotonic()
    due, left_out = _outage_lines.get(what, (0.0, 0))
    if now < due:
        _outage_lines[what] = (due, left_out + 1)
        return
    _outage_lines[what] = (now + OUTAGE_LINE_SECONDS, 0)
    logger.warning("%s: database unavailable (%s%s%s)", what, cause(exc),
                   f", traceId={trace_id}" if trace_id else "",
                   f"; {left_out} more like it in the last {OUTAGE_LINE_SECONDS:g} s or more "
                   "not logged" if left_out else "")


def timed_out(exc: BaseException | None) -> bool:
    """Whether `exc` is, or wraps, a statement that ran out its time: PostgreSQL's
    `statement_timeout` (57014) or the watchdog's (db/watchdog.py: TimeoutError)."""
    for _ in range(8):  # the error, what it wraps (a DBAPIError's `orig`), its cause
        if exc is None:
            return False
        if isinstance(exc, TimeoutError) or getattr(exc, "sqlstate", None) == "57014":
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__
    return False


def _lost(exc: BaseException) -> bool:
    """The connection itself was lost under a statement (not the statement's error, nor a
    connection that could not be had)."""
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _applied_unanswered() -> AppliedUnanswered:
    log.warning("the database stopped answering after a change of the operation was applied")
    return AppliedUnanswered()


def _broken(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.PostgresConnectionError) \
        or not isinstance(exc, asyncpg.PostgresError)


DIRECT_KEY = "giftgraph.direct"  # session.info: the Database whose statements may run direct
_DRIVER_KEY = "giftgraph.driver"  # session.info: its transaction's asyncpg connection


async def execute_in(session: Unit, prepared: Prepared,
                     params: Mapping[str, Any]) -> list[Any]:
    """The rows of a `Prepared` statement run in a unit of work's transaction: on its
    asyncpg connection directly, without SQLAlchemy's execution layer (~100 µs of CPU a
    statement: bench/NOTES.md), once the transaction has begun there; else (the unit of
    work's first statement, or statements observed: `Database.direct_statements`) through
    the session, as any other."""
    database: Database | None = session.info.get(DIRECT_KEY)
    driver = session.info.get(_DRIVER_KEY)
    if database is not None and driver is None:
        connection = await session.connection()
        driver = (await connection.get_raw_connection()).driver_connection
        session.info[_DRIVER_KEY] = driver
    # asyncpg's view of the server's state: BEGIN has been sent by SQLAlchemy's adapter
    # (it begins at the first statement, not at `session.connection()`)
    if database is None or driver is None or not driver.is_in_transaction():
        if isinstance(session, DirectUnit):  # its transaction ended (an error ended it)
            raise DBAPIError(prepared.sql, None,
                             asyncpg.InterfaceError("no transaction in progress"))
        return list((await session.execute(prepared.statement, params)).all())
    for hook in database.statement_hooks:
        hook(prepared.sql)
    try:
        return prepared.rows(await _asked(database, driver, prepared, params))
    except DRIVER_ERRORS as exc:
        broken = _broken(exc)
        if broken:
            await (await session.connection()).invalidate()
        raise DBAPIError(prepared.sql, None, exc, connection_invalidated=broken) from exc


# A unit of work's bookkeeping, in its session's `info`: the events it wrote (published
# after COMMIT) and what runs after COMMIT (giftgraph.events writes and reads these).
PENDING_KEY = "giftgraph.pending_events"
EVENT_LOCK_KEY = "giftgraph.event_lock"  # the family's event lock is held
AFTER_COMMIT_KEY = "giftgraph.after_commit"


def take_pending(session: Unit) -> list[Event]:
    """Events written by the transaction just committed (cleared for the next one)."""
    session.info.pop(EVENT_LOCK_KEY, None)
    session.info.pop(_DRIVER_KEY, None)  # that transaction's connection (`execute_in`)
    pending: list[Event] = session.info.pop(PENDING_KEY, [])
    return pending


def after_commit(session: Unit, hook: Callable[[], Awaitable[None]]) -> None:
    """Run `hook` once the current transaction has committed (never after a rollback)."""
    session.info.setdefault(AFTER_COMMIT_KEY, []).append(hook)


def take_after_commit(session: Unit) -> list[Callable[[], Awaitable[None]]]:
    hooks: list[Callable[[], Awaitable[None]]] = session.info.pop(AFTER_COMMIT_KEY, [])
    return hooks


async def _close(session: AsyncSession | AsyncConnection) -> None:
    """Close a session (or a connection); a connection broken meanwhile is only logged."""
    try:
        await session.close()
    except Exception:  # the connection died (database restart): the pool replaces it
        log.warning("closing a session on a broken connection failed", exc_info=True)
