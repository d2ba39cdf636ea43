"""The Redis pub/sub backend."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from giftgraph.live.backends.base import (
    REDIS_MESSAGE_LIMIT,
    Backoff,
    Refused,
    ResilientBackend,
    log,
    utf8,
)


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
