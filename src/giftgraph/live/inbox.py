"""A single-reader queue: the hub's per-subscriber queue and uvicorn's receive queue
(giftgraph.accel.wire) both use it."""

from __future__ import annotations

import asyncio
from typing import Any


class Inbox:
    """A queue for one reader as a list and one waiter future: what uvicorn's protocol uses
    of its `asyncio.Queue` of received ASGI events (`put_nowait`, `get`, `empty`), and the
    hub's per-subscriber queue (`hub.Subscriber`). An empty asyncio.Queue is three deques
    and an Event, ~3 KB of every open socket; an empty deque alone is 760 bytes, a list 56,
    and these queues are almost always empty, so `pop(0)` costs nothing that matters."""

    __slots__ = ("_waiter", "items")

    def __init__(self) -> None:
        self.items: list[Any] = []  # oldest first
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self.items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def waiting(self) -> bool:
        """Its reader is waiting for the next item (it has handled every one before)."""
        return self._waiter is not None

    def empty(self) -> bool:
        return not self.items

    def qsize(self) -> int:
        return len(self.items)

    async def get(self) -> Any:
        if self._waiter is not None:
            raise RuntimeError("another reader is already waiting on this queue")
        while not self.items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.items.pop(0)
