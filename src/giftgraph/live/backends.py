"""broadcaster backends that survive their broker: reconnect, resubscribe, report state.

broadcaster 0.3.1's own backends end (or hang) their listener when the connection drops
(encode/broadcaster #144, #66), its redis backend misses the first subscriber's messages
with redis-py >= 8, and its postgres backend breaks on concurrent publishes (#22). These
backends never raise from `next_published`: on a lost connection they reconnect with
backoff, resubscribe every channel, then emit a RECONNECTED marker so subscribers can
catch up from the Event table (nothing committed while the broker was away is lost).

Publishing tells two failures apart. `Refused`: the broker will never take this message (too
large once encoded, not encodable, refused as invalid); retrying cannot help, and the hub sends
an event by reference instead or drops the message. Any other error: the broker is away for
now, and the hub keeps the message (in order) to publish again. `payload_size` is what the
backend sends, in bytes, after its own encoding and escaping: what its limit applies to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

import orjson
from broadcaster import Event
from broadcaster._backends.base import BroadcastBackend
from broadcaster._backends.memory import MemoryBackend

log = logging.getLogger("giftgraph.live")

RECONNECTED = "giftgraph:reconnected"
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more (BLCKSZ - NAMEDATALEN - 128 with
# the default 8 KB pages), counted in the server encoding's bytes.
PG_NOTIFY_LIMIT = 7999
# Redis refuses a PUBLISH over `proto-max-bulk-len` (512 MB by default, at least 1 MB) and
# drops the connection that sent it; subscribers whose unread messages pass
# `client-output-buffer-limit pubsub` (8 MB for a minute, 32 MB at once) are disconnected.
# Far below both whatever the server's configuration.
REDIS_MESSAGE_LIMIT = 512 * 1024


class Refused(Exception):
    """The broker will never take this message, however often it is sent again."""


def utf8(message: str) -> bytes:
    """`message` as a broker sends it; Refused when it can't be (a lone surrogate)."""
    try:
        return message.encode()
    except UnicodeEncodeError as exc:
        raise Refused(f"not encodable: {exc}") from exc


class Backoff:
    """Exponential backoff with a cap: 0.1 s, 0.2 s, ... 5 s."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first, self.cap, self.delay = first, cap, first

    async def wait(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.cap)

    def reset(self) -> None:
        self.delay = self.first


class ResilientBackend(BroadcastBackend):
    """Shared state of the reconnecting backends."""

    max_payload = 0  # bytes of `payload_size`: larger messages are Refused

    def __init__(self, url: str) -> None:
        self.url = url
        self.channels: set[str] = set()
        self.connected = False
        self.reconnects = 0
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def next_published(self) -> Event:
        return await self._queue.get()

    def payload_size(self, channel: str, message: str) -> int:
        """The bytes this backend sends to publish `message` on `channel`."""
        raise NotImplementedError

    def _refuse_over_limit(self, size: int) -> None:
        if size > self.max_payload:
            raise Refused(f"a message of {size} bytes; the broker takes {self.max_payload}")

    async def disconnect(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()
        self.connected = False

    async def _close(self) -> None:
        raise NotImplementedError

    def _deliver(self, channel: str, message: str) -> None:
        if channel in self.channels:
            self._queue.put_nowait(Event(channel, message))

    def _reconnected(self) -> None:
        self.reconnects += 1
        self._queue.put_nowait(Event(RECONNECTED, ""))


class RedisBackend(ResilientBackend):
    """Redis pub/sub (redis-py asyncio) with reconnect.

    redis-py raises its own `redis.exceptions.ConnectionError`, which is not the builtin
    one, and by default retries a lost connection itself (reconnecting and resubscribing
    without telling anyone). The subscriber connection therefore runs without retries, and
    any loss of it surfaces here: reopen, resubscribe, then RECONNECTED, so what was
    published while it was away is caught up from the Event table.

    A message goes out as its UTF-8 bytes, unchanged; over REDIS_MESSAGE_LIMIT it is Refused
    before it is sent, as is one the server answers with an error (a protocol error, no
    permission on the channel), which no retry would change; the transient ones (loading,
    out of memory, read-only, try again) are not refusals.
    """

    max_payload = REDIS_MESSAGE_LIMIT

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._client: Any = None  # publishes; keeps a small retry of its own
        self._sub_client: Any = None
        self._pubsub: Any = None
        self._errors: tuple[type[BaseException], ...] = (OSError, ConnectionError,
                                                         RuntimeError, TimeoutError)
        self._refusals: tuple[type[BaseException], ...] = ()
        self._transient: tuple[type[BaseException], ...] = ()

    async def connect(self) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff
        from redis.exceptions import (
            BusyLoadingError,
            ClusterDownError,
            DataError,
            OutOfMemoryError,
            ReadOnlyError,
            RedisError,
            ResponseError,
            TryAgainError,
        )

        self._errors = (*self._errors, RedisError)
        self._refusals = (DataError, ResponseError)
        self._transient = (BusyLoadingError, ClusterDownError, OutOfMemoryError, ReadOnlyError,
                           TryAgainError)
        self._client = redis.Redis.from_url(
            self.url, socket_connect_timeout=2, socket_timeout=5,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1))
        try:
            await self._open()
        except self._errors as exc:
            log.warning("redis broadcast unavailable at start (%s); retrying", exc)
            await self._close_subscriber()
        self._task = asyncio.create_task(self._read_forever())

    async def _open(self) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = redis.Redis.from_url(self.url, socket_connect_timeout=2,
                                      health_check_interval=5, retry=Retry(NoBackoff(), 0))
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._sub_client, self._pubsub = client, pubsub
        # A pubsub needs one subscription before it can be read; this one is ours.
        channels = set(self.channels)
        await pubsub.subscribe("giftgraph:keepalive", *channels)
        while late := self.channels - channels:  # subscribed to while this was awaiting
            channels |= late
            await pubsub.subscribe(*late)
        self.connected = True

    def _subscriber_alive(self) -> bool:
        conn = getattr(self._pubsub, "connection", None)
        return conn is not None and bool(conn.is_connected)

    async def _close_subscriber(self) -> None:
        self.connected = False
        pubsub, client = self._pubsub, self._sub_client
        self._pubsub = self._sub_client = None
        for closer in (getattr(pubsub, "aclose", None), getattr(client, "aclose", None)):
            if closer is not None:
                with contextlib.suppress(Exception):  # already broken: nothing to release
                    await closer()

    async def _close(self) -> None:
        await self._close_subscriber()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _read_forever(self) -> None:
        backoff = Backoff()
        while not self._closing:
            if not self.connected:
                try:
                    await self._open()
                except self._errors as exc:
                    log.info("redis broadcast reconnect failed: %s", exc)
                    await self._close_subscriber()
                    await backoff.wait()
                    continue
                backoff.reset()
                log.warning("redis broadcast reconnected; subscribers will catch up")
                self._reconnected()
            try:
                if not self._subscriber_alive():
                    # e.g. a failed (un)subscribe dropped it: redis-py would silently
                    # reconnect on the next read, and nobody would catch up.
                    raise ConnectionError("redis pub/sub connection dropped")
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except self._errors as exc:
                log.warning("redis broadcast connection lost: %s", exc)
                await self._close_subscriber()
                continue
            if msg and msg.get("type") == "message":
                channel = msg["channel"].decode() if isinstance(msg["channel"], bytes) \
                    else msg["channel"]
                data = msg["data"].decode() if isinstance(msg["data"], bytes) else msg["data"]
                self._deliver(channel, data)

    async def subscribe(self, channel: str) -> None:
        self.channels.add(channel)
        if self.connected:
            with contextlib.suppress(*self._errors):  # resubscribed on reconnect
                await self._pubsub.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        if self.connected:
            with contextlib.suppress(*self._errors):
                await self._pubsub.unsubscribe(channel)

    def payload_size(self, channel: str, message: str) -> int:
        return len(utf8(message))

    async def publish(self, channel: str, message: Any) -> None:
        payload = utf8(message)
        self._refuse_over_limit(len(payload))
        if self._client is None:
            raise ConnectionError("redis broadcast is not connected")
        try:
            await self._client.publish(channel, payload)
        except self._transient:
            raise
        except self._refusals as exc:
            raise Refused(f"redis refused the message: {exc}") from exc


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


class LocalBackend(MemoryBackend):
    """broadcaster's in-process backend, with the `connected` flag the hub reports."""

    connected = True
    reconnects = 0

    def payload_size(self, channel: str, message: str) -> int:
        return len(utf8(message))


def make_backend(url: str, database_url: str) -> BroadcastBackend:
    """`memory://`, `redis://…`, or `postgres://` (bare: the application database)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return LocalBackend(url)
    if scheme in ("redis", "rediss"):
        return RedisBackend(url)
    if scheme in ("postgres", "postgresql"):
        parts = urlsplit(url)
        target = url if parts.netloc or parts.path.strip("/") else database_url
        return PostgresBackend(plain_dsn(target))
    raise ValueError(f"unsupported broadcast URL scheme: {scheme!r}")


def plain_dsn(url: str) -> str:
    """A libpq/asyncpg DSN for a SQLAlchemy-style URL."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
