"""How long the database may take to answer, kept by one task for the whole process.

A database that stops answering (a frozen host, a network path that drops every packet:
connections open, nothing comes back) held requests, sockets' `connection_init` and the
pool's connections for as long as it lasted: asyncpg waits for ever on a statement, and
60 s to open a connection. The server's own `statement_timeout` cannot end a statement on
a server that does not run.

asyncpg's own bound on a statement (`command_timeout`) arms a timer in the calling task's
context, and asyncio's loop keeps a cancelled timer, context and all, until it would have
fired: a closed socket's handler was held that long (bench/NOTES.md, F2). Here one task,
started in no request's context, holds the deadline of each round trip in flight (a
statement, a COMMIT, a checkout's ping, a new connection's setup) and nothing else, and
closes the connections that pass it (`terminate`: no round trip to a database that does
not answer). A connection checked out but idle is not timed: an operation may hold one
as long as it likes. Whatever waits on a closed one fails at once as a lost connection,
which the pool replaces and the client is told to retry. A connection is opened in a
context of its own, under its own timeout (`Watchdog.connect`).

Once a connection has been closed so (or could not be opened in time) the database is
*silent*: every round trip and connect is then bounded by `SILENT_SECONDS`, not the whole
budget, one connect tries at a time and none for 2 s after one failed (the others fail
at once), and a checkout that finds every connection of the pool taken fails at once
instead of queueing for one (`Watchdog.pool_class`: the pool's own wait is 30 s), so that
the requests behind the first do not each wait as long again. Only an answer ends the
silence: a statement asked since it began and answered, or a new connection's `SELECT 1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolProxiedConnection

log = logging.getLogger("giftgraph.db")

# Past `statement_timeout`: a statement that runs too long gets PostgreSQL's own error first.
MARGIN_SECONDS = 2.0
# A checkout's and a connect's bound while the database is silent: a connect takes
# milliseconds to an answering database (hundreds with TLS across a region).
SILENT_SECONDS = 2.0
# asyncpg's own bound on opening a connection, when statements are unbounded.
CONNECT_SECONDS = 60.0


def budget_of(statement_timeout_ms: int) -> float | None:
    """Seconds a connection may stay checked out; None when statements are unbounded."""
    return statement_timeout_ms / 1000 + MARGIN_SECONDS if statement_timeout_ms else None


class Watchdog:
    """Closes every connection whose round trip to the database (a statement, a commit, a
    checkout's ping, a new connection's setup) has waited `budget` seconds for its answer;
    each statement is itself bounded by `statement_timeout`, so only a database that does
    not answer gets there. Time a connection spends checked out but idle is not counted.
    Checked every `tick` seconds. Bounds opening a connection too (`connect`), running or
    not: a command-line job's connections are opened so, and none of them is watched."""

    def __init__(self, budget: float | None) -> None:
        self.budget = budget
        self.tick = min(1.0, budget / 8) if budget else 1.0
        # asyncpg's connection -> (its deadline, when its round trip began), while one is on
        self._waiting: dict[Any, tuple[float, float]] = {}
        self._task: asyncio.Task[None] | None = None
        self.silent_since: float | None = None
        # While silent, one connect tries at a time, and none for `SILENT_SECONDS` after one
        # failed: the others fail at once.
        self._probing = False
        self._next_probe = 0.0
        self.cut = 0  # connections closed for passing their deadline

    def _bound(self) -> float:
        if self.silent_since is not None:
            return SILENT_SECONDS
        return self.budget if self.budget is not None else CONNECT_SECONDS

    # A round trip's beginning and end, by asyncpg's connection (`db.session` calls these
    # around the statements it runs on asyncpg directly; the engine's events, below, for
    # the rest).

    def asking(self, driver: Any) -> None:
        if self._task is not None:
            now = time.monotonic()
            self._waiting[driver] = (now + self._bound(), now)

    def answered(self, driver: Any) -> None:
        waited = self._waiting.pop(driver, None)
        if waited is not None and self.silent_since is not None and waited[1] > self.silent_since:
            self._answered()  # asked while silent, and answered

    def idle(self, driver: Any) -> None:
        self._waiting.pop(driver, None)

    def watch(self, engine: Any) -> None:
        """Watch a (sync) engine's round trips and its pool's."""
        pool = engine.pool
        # Around the pool's own listeners: a new connection's setup (the dialect's type
        # introspection) and a checkout's ping (`engine.ping_when_idle`) are round trips.
        for name in ("connect", "checkout"):
            event.listen(pool, name, self._pool_asking, insert=True)
            event.listen(pool, name, self._pool_done)
        event.listen(pool, "checkin", self._pool_idle)
        event.listen(pool, "close", self._pool_idle)
        event.listen(engine, "before_cursor_execute", self._executing)
        event.listen(engine, "after_cursor_execute", self._executed)
        event.listen(engine, "handle_error", self._failed)
        event.listen(engine, "commit", self._ending)
        event.listen(engine, "rollback", self._ending)

    def _pool_asking(self, dbapi_connection: Any, *_: Any) -> None:
        self.asking(dbapi_connection.driver_connection)

    def _pool_done(self, dbapi_connection: Any, *_: Any) -> None:
        self.idle(dbapi_connection.driver_connection)

    def _pool_idle(self, dbapi_connection: Any, *_: Any) -> None:
        if dbapi_connection is not None:
            self.idle(getattr(dbapi_connection, "driver_connection", None))

    def _executing(self, conn: Any, *_: Any) -> None:
        self.asking(conn.connection.driver_connection)

    def _executed(self, conn: Any, *_: Any) -> None:
        self.answered(conn.connection.driver_connection)

    def _ending(self, conn: Any) -> None:  # COMMIT or ROLLBACK: over at the next statement
        if not conn.invalidated:  # (`connection` would reconnect one) or at checkin
            self.asking(conn.connection.driver_connection)

    def _failed(self, context: Any) -> None:
        with contextlib.suppress(Exception):  # a connection invalidated has none
            self.idle(context.connection.connection.driver_connection)

    def _answered(self) -> None:
        if self.silent_since is not None:
            log.warning("the database answers again")
            self.silent_since = None

    def _silent(self) -> None:
        if self.silent_since is None and self._task is not None:
            self.silent_since = time.monotonic()

    def start(self) -> None:
        if self.budget is None:
            return  # statements unbounded: nothing to watch
        # In a context of its own: the task holds nothing of whoever started it.
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="database watchdog", context=contextvars.Context())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                self.check(time.monotonic())
            except Exception:  # the watch goes on
                log.exception("the database watchdog's check failed")

    def check(self, now: float) -> int:
        """Close the connections whose round trip is past its deadline at `now`; how many."""
        late = [c for c, (deadline, _) in self._waiting.items() if deadline <= now]
        for driver in late:
            del self._waiting[driver]
            if driver is None or driver.is_closed():
                continue
            log.warning("the database did not answer in time: connection closed")
            self.cut += 1
            self._silent()
            with contextlib.suppress(Exception):
                driver.terminate()
        return len(late)

    def connect(self, open_connection: Callable[[float], Coroutine[Any, Any, Any]]
                ) -> Callable[[], Coroutine[Any, Any, Any]]:
        """SQLAlchemy's `async_creator` of `open_connection(timeout)`: run as a task in a
        context of its own (its timeout's timer, which the loop keeps until it would have
        fired, holds that empty context, not the caller's: a socket's)."""

        async def connect_apart() -> Any:
            probe = self.silent_since is not None
            if probe:
                if self._probing or time.monotonic() < self._next_probe:
                    raise TimeoutError("the database does not answer")
                self._probing = True
            try:
                connection = await asyncio.get_running_loop().create_task(
                    self._open(open_connection, probe), context=contextvars.Context())
            except TimeoutError:
                log.warning("the database did not answer in time: no connection opened")
                self._silent()
                self._next_probe = time.monotonic() + SILENT_SECONDS
                raise
            finally:
                if probe:
                    self._probing = False
            self._answered()
            return connection

        return connect_apart

    async def _open(self, open_connection: Callable[[float], Coroutine[Any, Any, Any]],
                    probe: bool) -> Any:
        """A connection, and while the database is silent its answer to a statement too: a
        database that still lets clients in but runs nothing is not answering."""
        bound = self._bound()
        connection = await open_connection(bound)
        if probe:
            try:
                await connection.fetchval("SELECT 1", timeout=bound)
            except BaseException:
                connection.terminate()
                raise
        return connection


    def pool_class(self, most: int) -> type[AsyncAdaptedQueuePool]:
        """The pools' class (`poolclass`) for `most` connections at once: while the
        database is silent, a checkout with all of them taken raises the pool's timeout
        at once (retryable) rather than waiting for one to come back."""
        watchdog = self

        class WatchedPool(AsyncAdaptedQueuePool):
            def connect(self) -> PoolProxiedConnection:
                if watchdog.silent_since is not None and self.checkedout() >= most:
                    raise PoolTimeout("the database does not answer; no connection free")
                return super().connect()

        return WatchedPool
