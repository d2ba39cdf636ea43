"""How long the database may take to answer, kept by one task for the whole process.

A database that stops answering (a frozen host, a network path that drops every packet:
connections open, nothing comes back) held requests, sockets' `connection_init` and the
pool's connections for as long as it lasted: asyncpg waits for ever on a statement, and
60 s to open a connection. The server's own `statement_timeout` cannot end a statement on
a server that does not run.

asyncpg's own bound on a statement (`command_timeout`) arms a timer in the calling task's
context, and asyncio's loop keeps a cancelled timer, context and all, until it would have
fired: a closed socket's handler was held that long (bench/NOTES.md, F2). Here one task,
started in no request's context, holds each checked-out connection's deadline and nothing
else, and closes the connections that pass it (`terminate`: no round trip to a database
that does not answer). Whatever waits on one then fails at once as a lost connection,
which the pool replaces and the client is told to retry. A connection is opened in a
context of its own, under its own timeout (`Watchdog.connect`).

Once a connection has been closed so (or could not be opened in time) the database is
*silent*: every checkout and connect is then bounded by `SILENT_SECONDS`, not the whole
budget, one connect tries at a time and none for 2 s after one failed (the others fail
at once), and a checkout that finds every connection of the pool taken fails at once instead
of queueing for one (`Watchdog.pool_class`: the pool's own wait is 30 s), so that the
requests behind the first do not each wait as long again. A connection opened, or one
checked out since and given back in time, ends the silence.
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
    """Closes every connection that stays checked out of a watched pool longer than
    `budget` seconds: one operation's use of it (its reads, or a unit of work), during
    which each statement is itself bounded by `statement_timeout`. Checked every
    `tick` seconds. Bounds opening a connection too (`connect`), running or not: a
    command-line job's connections are opened so, and none of them is watched."""

    def __init__(self, budget: float | None) -> None:
        self.budget = budget
        self.tick = min(1.0, budget / 8) if budget else 1.0
        # a checked-out DBAPI connection -> (its deadline, when it was checked out)
        self._held: dict[Any, tuple[float, float]] = {}
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

    def watch(self, pool: Any) -> None:
        # First among the checkout's listeners: its ping (`engine.ping_when_idle`) is a
        # round trip too.
        event.listen(pool, "checkout", self._checked_out, insert=True)
        event.listen(pool, "checkin", self._checked_in)
        event.listen(pool, "close", self._closed)

    def _checked_out(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        now = time.monotonic()
        self._held[dbapi_connection] = (now + self._bound(), now)

    def _checked_in(self, dbapi_connection: Any, _record: Any) -> None:
        held = self._held.pop(dbapi_connection, None)
        if held is not None and self.silent_since is not None and held[1] > self.silent_since:
            self._answered()  # taken while silent, and given back in time

    def _closed(self, dbapi_connection: Any, _record: Any) -> None:
        self._held.pop(dbapi_connection, None)

    def _answered(self, *_: Any) -> None:
        if self.silent_since is not None:
            log.warning("the database answers again")
            self.silent_since = None

    def _silent(self) -> None:
        if self.silent_since is None:
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
            except Exception:  # the watch goes on: a connection that would not close
                log.exception("the database watchdog's check failed")

    def check(self, now: float) -> int:
        """Close the connections past their deadline at `now`; how many."""
        late = [c for c, (deadline, _) in self._held.items() if deadline <= now]
        for connection in late:
            del self._held[connection]
            driver = getattr(connection, "driver_connection", None)
            if driver is None or driver.is_closed():
                continue
            log.warning("the database did not answer in time: connection closed")
            driver.terminate()
            self.cut += 1
            self._silent()
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
                    open_connection(self._bound()), context=contextvars.Context())
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
