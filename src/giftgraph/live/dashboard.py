"""The live dashboard: one snapshot per family per change per process, coalesced."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from giftgraph.db.engine import Database
from giftgraph.db.session import OperationDb
from giftgraph.events import FAMILY_TOPIC
from giftgraph.live.backends import Backoff
from giftgraph.live.hub import Hub
from giftgraph.live.publishing import channel
from giftgraph.live.subscriber import RESYNC
from giftgraph.live.workers import Ready, start_worker, stop_worker

log = logging.getLogger("giftgraph.live")


@dataclass
class Snapshot:
    version: int
    dashboard: object  # resolvers.queries.Dashboard, every part prefetched


class Latest:
    """A one-slot mailbox: a slow dashboard skips to the newest snapshot. A flag and one
    waiter future, not an asyncio.Event: an idle dashboard holds it for its whole life,
    and an Event's deque of waiters is ~0.8 KB."""

    __slots__ = ("_item", "_new", "_waiter")

    def __init__(self) -> None:
        self._item: Snapshot | None = None
        self._new = False
        self._waiter: asyncio.Future[None] | None = None

    def put(self, snap: Snapshot) -> None:
        self._item = snap
        self._new = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Snapshot:
        while not self._new:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._new = False
        assert self._item is not None
        return self._item


@dataclass
class FamilyFeed:
    family_id: uuid.UUID
    watchers: set[Latest] = field(default_factory=set)
    # The parts the watchers select (how many select each): a snapshot computes these
    # (`dashboard { spent }` is one statement, not seven); another is computed by its
    # first reader.
    parts: Counter[str] = field(default_factory=Counter)
    latest: Snapshot | None = None
    dirty: bool = True
    task: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class DashboardFeeds:
    """Per family: listens to the `family` topic and recomputes at most every `interval`."""

    def __init__(self, hub: Hub, database: Database, interval: float = 0.25) -> None:
        self.hub = hub
        self.database = database
        self.interval = interval
        self.feeds: dict[uuid.UUID, FamilyFeed] = {}
        self.computations = 0
        self._versions = itertools.count(1)

    async def _compute(self, feed: FamilyFeed) -> Snapshot:
        from giftgraph.resolvers.queries import Dashboard

        async with feed.lock:
            if feed.latest is not None and not feed.dirty:
                return feed.latest
            feed.dirty = False
            db = OperationDb(self.database)
            try:
                dash = await Dashboard.for_family(feed.family_id).prefetch(db, +feed.parts)
            except BaseException:
                feed.dirty = True  # the snapshot kept is not current: the next call computes
                raise
            finally:
                await db.close()
            self.computations += 1
            # Unique in the process, not per feed: a snapshot's version keys the shared scope
            # its nested fields resolve in, and a feed recreated within that scope's keep-
            # alive must not meet the previous feed's scope (and its rows) again.
            feed.latest = Snapshot(next(self._versions), dash)
            return feed.latest

    async def _run(self, feed: FamilyFeed, ready: Ready) -> None:
        async with self.hub.listen(channel(feed.family_id, FAMILY_TOPIC)) as sub:
            ready.set()
            # The feed starts as its first watcher gets its snapshot: the family's 250 ms
            # window starts with it, not with the first change after it.
            last_emit = time.monotonic()
            backoff = Backoff(first=self.interval)
            while True:
                await sub.get()  # an event, or a resync after a broker reconnect
                feed.dirty = True
                wait = last_emit + self.interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)  # changes meanwhile fold into this snapshot
                sub.drain()
                sub.overflowed = False
                try:
                    snap = await self._compute(feed)
                except Exception:
                    # Never the end of the family's feed (its watchers, now and later,
                    # would get no snapshot again): computed again after a backoff.
                    log.warning("dashboard snapshot failed; computing it again",
                                exc_info=True)
                    await backoff.wait()
                    sub.offer(RESYNC)
                    continue
                backoff.reset()
                last_emit = time.monotonic()
                for watcher in list(feed.watchers):
                    watcher.put(snap)

    @asynccontextmanager
    async def watch(self, family_id: uuid.UUID, parts: Iterable[str] | None = None,
                    ) -> AsyncIterator[tuple[Snapshot, Latest]]:
        """The current snapshot now, and a mailbox for the next ones; `parts`: those the
        watcher reads (None: every one)."""
        from giftgraph.resolvers.queries import PARTS

        parts = Counter(list(PARTS if parts is None else parts))
        feed = self.feeds.get(family_id)
        if feed is None:
            feed = self.feeds[family_id] = FamilyFeed(family_id)
            await start_worker(self.feeds, family_id, feed,
                               lambda ready: self._run(feed, ready), lambda: not feed.watchers)
        mailbox = Latest()
        feed.watchers.add(mailbox)
        feed.parts.update(parts)
        try:
            yield await self._compute(feed), mailbox
        finally:
            feed.watchers.discard(mailbox)
            feed.parts.subtract(parts)
            if not feed.watchers:
                await stop_worker(self.feeds, family_id, feed)
