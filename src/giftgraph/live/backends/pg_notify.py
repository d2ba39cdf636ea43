"""The PostgreSQL LISTEN/NOTIFY backend."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson

from giftgraph.live.backends.base import PG_NOTIFY_LIMIT, Backoff, Refused, ResilientBackend, log


class PostgresBackend(ResilientBackend):
    """LISTEN/NOTIFY on the application database: one PG channel, logical channels inside.

    A message goes out inside a JSON envelope (`{"c": channel, "m": message}`: the message's
    quotes and backslashes are escaped once more); over PG_NOTIFY_LIMIT bytes it is Refused
    before it is sent, as is one the server refuses as invalid data (SQLSTATE class 22: too
    long for another page size, not representable in the server encoding).
    """

    PG_CHANNEL = "giftgraph"
    max_payload = PG_NOTIFY_LIMIT

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._listen: Any = None
        self._pool: Any = None
        self._lost = asyncio.Event()
        self._refusals: tuple[type[BaseException], ...] = ()

    async def connect(self) -> None:
        import asyncpg

        self._refusals = (asyncpg.exceptions.DataError,)

        # A pool: one asyncpg connection can't run concurrent NOTIFYs (broadcaster #22).
        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4,
                                               server_settings={"application_name":
                                                                "giftgraph-notify"})
        try:
            await self._open()
        except OSError as exc:
            log.warning("postgres broadcast unavailable at start (%s); retrying", exc)
        self._task = asyncio.create_task(self._watch())

    async def _open(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url, server_settings={"application_name":
                                                                "giftgraph-listen"})
        conn.add_termination_listener(lambda _c: self._lost.set())
        await conn.add_listener(self.PG_CHANNEL, self._on_notify)
        self._listen = conn
        self._lost.clear()
        self.connected = True

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            envelope = orjson.loads(payload)
            self._deliver(envelope["c"], envelope["m"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring a malformed NOTIFY payload")

    async def _watch(self) -> None:
        backoff = Backoff()
        while not self._closing:
            if self.connected:
                # The termination listener fires on a clean close; polling catches the rest.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lost.wait(), 1.0)
                if self._listen is not None and not self._listen.is_closed() \
                        and not self._lost.is_set():
                    continue
                log.warning("postgres broadcast LISTEN connection lost")
                self.connected = False
                await self._close_listen()
            try:
                await self._open()
            except Exception as exc:  # asyncpg raises many types here; all mean retry later
                log.info("postgres broadcast reconnect failed: %s", exc)
                await backoff.wait()
                continue
            backoff.reset()
            log.warning("postgres broadcast reconnected; subscribers will catch up")
            self._reconnected()

    async def _close_listen(self) -> None:
        conn, self._listen = self._listen, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):  # already broken: nothing to release
                await conn.close(timeout=1)

    async def _close(self) -> None:
        await self._close_listen()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.close()
            self._pool = None

    async def subscribe(self, channel: str) -> None:
        self.channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)

    @staticmethod
    def _payload(channel: str, message: str) -> bytes:
        try:
            return orjson.dumps({"c": channel, "m": message})
        except orjson.JSONEncodeError as exc:  # e.g. a lone surrogate
            raise Refused(f"not encodable: {exc}") from exc

    def payload_size(self, channel: str, message: str) -> int:
        return len(self._payload(channel, message))

    async def publish(self, channel: str, message: Any) -> None:
        payload = self._payload(channel, message)
        self._refuse_over_limit(len(payload))
        if self._pool is None:
            raise ConnectionError("postgres broadcast is not connected")
        try:
            await self._pool.execute("SELECT pg_notify($1, $2)", self.PG_CHANNEL,
                                     payload.decode())
        except self._refusals as exc:
            raise Refused(f"postgres refused the NOTIFY: {exc}") from exc
