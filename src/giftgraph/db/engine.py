"""Engine and session factory, owned by the app's lifespan (no module globals)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from giftgraph.config import Settings
from giftgraph.db.watchdog import Watchdog, budget_of


def async_url(url: str) -> str:
    """Normalise a postgres URL to the asyncpg driver."""
    u = make_url(url)
    if u.drivername in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+asyncpg")
    return u.render_as_string(hide_password=False)


@dataclass
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]  # transactions: a mutation's unit of work
    # Autocommit, for reads: each statement its own transaction (under READ COMMITTED each
    # statement of a transaction sees a snapshot of its own anyway), with no BEGIN and
    # ROLLBACK round trips around them: two of the three a cached read made.
    reads: async_sessionmaker[AsyncSession]
    # The engine of `reads` (autocommit), for a statement run without a session
    # (`db.session.fetch`).
    read_engine: AsyncEngine
    # A pool of its own, autocommit, for the sockets' authentication (`CallerReads`, one
    # statement for up to 256 callers): after a restart every socket comes back at once
    # with its subscriptions, whose starts hold the main pool's connections; behind them the
    # sockets' connection_init waited past the pool's timeout and were refused (1013).
    lane_engine: AsyncEngine | None = None
    # `OperationDb.fetch` and a unit of work's `execute_in` run their statements on asyncpg
    # directly, unseen by the engine's events: off (through SQLAlchemy) where something
    # observes every statement (tracing's span per statement); `statement_hooks` see each
    # statement run directly.
    direct_statements: bool = True
    # How long the database has to answer a connection's use and opening (`watch`ed by the
    # server): db/watchdog.py.
    watchdog: Watchdog = field(default_factory=lambda: Watchdog(None))
    statement_hooks: list[Callable[[str], None]] = field(default_factory=list)

    def watch(self) -> Watchdog | None:
        """The watchdog over the server's pools (the lane's too), started; none when
        statements are unbounded (`statement_timeout_ms` 0). The server's only: a
        command-line job's long transaction (`demo-data`) is not cut."""
        if self.watchdog.budget is None:
            return None
        for engine in (self.engine, self.lane_engine):
            if engine is not None:
                self.watchdog.watch(engine.sync_engine)
        self.watchdog.start()
        return self.watchdog

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.lane_engine is not None:
            await self.lane_engine.dispose()


def create_database(url: str, settings: Settings, **engine_kwargs: Any) -> Database:
    connect_args: dict[str, Any] = {
        # No JIT compilation: the app's statements are short, and PostgreSQL compiles one
        # whose estimated cost passes `jit_above_cost`, which estimates without statistics
        # (or through LATERAL lookups) pass easily: 100-140 ms to compile a dashboard
        # statement that runs in 1 ms (bench/NOTES.md, "The dashboard's money").
        "server_settings": {"application_name": "giftgraph", "jit": "off"},
        # asyncpg's own statement cache (the statements `OperationDb.fetch` runs directly;
        # SQLAlchemy prepares through a cache of its own) bounded by size only: a lifetime
        # is a timer per cached statement, holding the context of the task that first ran
        # it (a socket's, and with it the socket) for the lifetime (300 s by default).
        "max_cached_statement_lifetime": 0,
        # ... and by count: the pool keeps its 20 connections open, and PostgreSQL holds
        # each prepared statement in its backend for the connection's life (up to ~1.8 MB
        # for a compiled read at the size cap, `accel.sql.MAX_SQL_CHARS`). 50 a connection
        # is the ~1.8 GB at most that 10 kept connections with asyncpg's default of 100
        # held before; the app's own statements are a few dozen.
        "statement_cache_size": 50,
    }
    if settings.statement_timeout_ms:
        connect_args["server_settings"]["statement_timeout"] = str(settings.statement_timeout_ms)
    watchdog = Watchdog(budget_of(settings.statement_timeout_ms))
    create = creator(url, connect_args, watchdog)
    engine = create_async_engine(
        async_url(url),
        creator=create,
        poolclass=watchdog.pool_class(settings.db_pool_size + settings.db_max_overflow),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=False,  # `ping_when_idle` instead
        # The most recently used connection first: its prepared statements and asyncpg's
        # type codecs (the enums') are warm. FIFO rotated every request over the whole
        # pool, so each connection paid a prepare and a type introspection (~3 ms) per
        # statement, and a lightly used server paid it on nearly every request.
        pool_use_lifo=True,
        # An error's text names the statement, not its values (an e-mail address, a password
        # hash, a family's data): the masked errors are logged in full.
        hide_parameters=True,
        **engine_kwargs,
    )
    ping_when_idle(engine.sync_engine.pool, engine.dialect, settings.db_ping_after_idle_seconds)
    sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
    read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    reads = async_sessionmaker(read_engine, expire_on_commit=False, autoflush=False)
    # Opened on first use (a server without sockets never opens it); a second connection
    # only while a batch of callers is being read on the first.
    lane_engine = create_async_engine(
        async_url(url), pool_size=LANE_CONNECTIONS, max_overflow=0, pool_pre_ping=False,
        pool_use_lifo=True, creator=create, isolation_level="AUTOCOMMIT",
        hide_parameters=True,
        poolclass=watchdog.pool_class(LANE_CONNECTIONS),
        **engine_kwargs)
    ping_when_idle(lane_engine.sync_engine.pool, lane_engine.dialect,
                   settings.db_ping_after_idle_seconds)
    return Database(engine=engine, sessions=sessions, reads=reads, read_engine=read_engine,
                    lane_engine=lane_engine, watchdog=watchdog)


LANE_CONNECTIONS = 2  # the sockets' authentication lane (`Database.lane_engine`)


def creator(url: str, connect_args: dict[str, Any], watchdog: Watchdog) -> Callable[[], Any]:
    """SQLAlchemy's `creator`: asyncpg's connection to `url` with `connect_args`, opened
    as `watchdog` bounds it (asyncpg waited 60 s on a database that accepts the connection
    and never answers), wrapped by SQLAlchemy's asyncpg adapter with the URL's own options
    for it (`prepared_statement_cache_size`: 0 behind PgBouncer's transaction pooling), as
    SQLAlchemy's `async_creator` does without them."""
    import asyncpg
    from sqlalchemy.dialects.postgresql.asyncpg import dialect

    _, params = dialect().create_connect_args(make_url(async_url(url)))  # type: ignore[no-untyped-call]
    adapter = {key: params.pop(key) for key in
               ("prepared_statement_cache_size", "prepared_statement_name_func")
               if key in params}
    params.update(connect_args)
    connect = watchdog.connect(lambda timeout: asyncpg.connect(**params, timeout=timeout))
    dbapi = dialect.import_dbapi()  # type: ignore[no-untyped-call]

    def create() -> Any:
        return dbapi.connect(async_creator_fn=connect, **adapter)

    return create


IDLE_SINCE = "giftgraph.idle_since"


def ping_when_idle(pool: Any, dialect: Dialect, after: float) -> None:
    """Check a pooled connection before use only when it has been idle `after` seconds, as
    PgBouncer's `server_check_delay` does, instead of SQLAlchemy's `pool_pre_ping` on every
    checkout: asyncpg's ping is three round trips (BEGIN, an empty statement, ROLLBACK),
    ~10% of a small request. A connection that fails its ping is replaced, and the
    checkout goes on with a new one. One used within `after` seconds is taken as it is,
    unless the driver has seen it close (checked without a round trip): if the server
    dropped it just then and the client has not seen that yet, its statement fails (a
    coded, masked error), and that disconnect makes the pool replace every connection
    opened before it."""

    @event.listens_for(pool, "connect")
    def connected(_: Any, record: Any) -> None:
        record.info[IDLE_SINCE] = None  # just opened: no ping needed

    @event.listens_for(pool, "checkin")
    def checked_in(_: Any, record: Any) -> None:
        record.info[IDLE_SINCE] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, _: Any) -> None:
        # Closed on our side (asyncpg closes a connection it can no longer trust, e.g. after
        # a cancelled statement): known without a round trip. Reads in autocommit end with
        # no ROLLBACK at checkin, which would have failed on it and dropped it there.
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and driver.is_closed():
            raise DisconnectionError("the pooled connection was closed")
        idle_since = record.info.get(IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < after:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool replaces this connection and checks out anew
            raise DisconnectionError("the pooled connection failed its ping") from exc
