"""The live dashboard: one snapshot per family per change per process, coalesced."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable
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

    def watch(self, family_id: uuid.UUID, parts: Iterable[str] | None = None) -> Watching:
        """`async with dashboards.watch(family) as (snapshot, mailbox)`: the current snapshot
        now, and a mailbox for the next ones; `parts`: those the watcher reads (None: every
        one)."""
        from giftgraph.resolvers.queries import PARTS

        return Watching(self, family_id, tuple(PARTS if parts is None else parts))


class Watching:
    """`DashboardFeeds.watch`'s context manager. A class rather than an
    @asynccontextmanager: an idle dashboard holds it for its whole life, and the generator
    version (its frame, the wrapper) costs ~0.5 KB more."""

    __slots__ = ("dashboards", "family_id", "feed", "mailbox", "parts")

    def __init__(self, dashboards: DashboardFeeds, family_id: uuid.UUID,
                 parts: tuple[str, ...]) -> None:
        self.dashboards = dashboards
        self.family_id = family_id
        self.parts = parts
        self.feed: FamilyFeed | None = None
        self.mailbox = Latest()

    async def __aenter__(self) -> tuple[Snapshot, Latest]:
        dashboards, family_id = self.dashboards, self.family_id
        feed = dashboards.feeds.get(family_id)
        if feed is None:
            new = feed = dashboards.feeds[family_id] = FamilyFeed(family_id)
            await start_worker(dashboards.feeds, family_id, feed,
                               lambda ready: dashboards._run(new, ready),
                               lambda: not new.watchers)
        self.feed = feed
        feed.watchers.add(self.mailbox)
        feed.parts.update(self.parts)
        try:
            return await dashboards._compute(feed), self.mailbox
        except BaseException:
            await self._leave()
            raise

    async def __aexit__(self, *_: object) -> None:
        await self._leave()

    async def _leave(self) -> None:
        feed, self.feed = self.feed, None
        if feed is None:
            return
        feed.watchers.discard(self.mailbox)
        feed.parts.subtract(self.parts)
        if not feed.watchers:
            await stop_worker(self.dashboards.feeds, self.family_id, feed)
