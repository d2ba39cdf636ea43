"""What the backends share: the reconnecting backend's state, the refusal, the backoff,
and the in-process backend."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from broadcaster import Event

from giftgraph.accel.internals import BroadcastBackend, MemoryBackend

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


class LocalBackend(MemoryBackend):
    """broadcaster's in-process backend, with the `connected` flag the hub reports."""

    connected = True
    reconnects = 0

    def payload_size(self, channel: str, message: str) -> int:
        return len(utf8(message))
