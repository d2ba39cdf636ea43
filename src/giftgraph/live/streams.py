"""Event streams for subscriptions: listen, replay `since`, then live — no gap, no duplicate."""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Hashable
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, bindparam, func, literal_column, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from giftgraph.context import Context, OperationState, begin_operation, end_operation
from giftgraph.db import models as m
from giftgraph.db.engine import Database
from giftgraph.db.session import OperationDb, Prepared, fetch
from giftgraph.errors import AppError, BadInput
from giftgraph.ids import BIGINT_MAX
from giftgraph.live.hub import Hub
from giftgraph.live.publishing import channel
from giftgraph.live.subscriber import OVERFLOW, RESYNC, DirectDelivery, behind
from giftgraph.schema.loaders import Loaders

if TYPE_CHECKING:
    from giftgraph.observability import Metrics

KEEP_SCOPE_SECONDS = 2.0


def stray() -> bool:
    """Whether a CancelledError caught now was not asked of this task: a shared future's,
    cancelled by another of its readers (a render shared by many subscriptions). A
    subscription ends on it as on an error, with its `next` and `complete`, rather than
    silently; a cancellation of the task itself (the socket closed, the client's
    `complete`) goes on."""
    task = asyncio.current_task()
    return task is not None and not task.cancelling()


def count_delivered(metrics: Metrics | None, row: m.Event) -> None:
    """One event delivered to one subscriber (its delivery latency)."""
    if metrics is not None:
        metrics.delivered(row.at)


def counting_active(metrics: Metrics | None) -> AbstractContextManager[Any]:
    """Counts the subscription in the active-subscriptions gauge while it runs."""
    return metrics.subscriptions_active.track_inprogress() if metrics else nullcontext()


class ResumeRequired(AppError):
    """The subscriber fell behind its bounded queue; it must resubscribe with `since`."""

    code = "RATE_LIMITED"

    def __init__(self, last_seq: int) -> None:
        super().__init__(
            f"Too many events for this subscriber; resubscribe with since={last_seq}",
            resumeSince=str(last_seq), retryAfter=0,
        )


def parse_since(since: str | None) -> int | None:
    if since is None:
        return None
    # ASCII digits only (str.isdigit() also takes "²" and "١٢٣"), and a seq fits a bigint.
    if not (0 < len(since) <= 19 and since.isascii() and since.isdigit()) \
            or int(since) > BIGINT_MAX:
        raise BadInput({"since": "must be the seq of an event"})
    return int(since)


@dataclass(slots=True)
class SharedScope:
    """One event's (or snapshot's) scope, shared by its subscribers: the operation state
    they resolve in, how many are in it now, and the timer that drops it once none are."""

    state: OperationState
    users: int = 0
    drop: asyncio.TimerHandle | None = None


class SharedScopes:
    """One session and one set of DataLoaders per event per process, shared by every
    subscriber resolving that event: nested fields load once, not once per subscriber."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._scopes: dict[Hashable, SharedScope] = {}
        # Keyed by (family, seq): seqs count per family.
        self._events: OrderedDict[tuple[uuid.UUID, int], asyncio.Future[m.Event | None]] = \
            OrderedDict()
        # Each family's read of its newest seq (`latest`): the one not started yet, which
        # every subscription starting meanwhile joins, and the one under way.
        self._latest_next: dict[uuid.UUID, asyncio.Future[int]] = {}
        self._latest_running: dict[uuid.UUID, asyncio.Future[int]] = {}

    @asynccontextmanager
    async def use(self, key: Hashable, family_id: uuid.UUID) -> AsyncIterator[None]:
        scope = self._scopes.get(key)
        if scope is None:
            # Its subscribers are written to while it is in use, a stalled one for ever: it
            # holds no connection between its reads.
            db = OperationDb(self._database, hold_reads=False)
            scope = self._scopes[key] = SharedScope(OperationState(db, Loaders(db, family_id)))
        scope.users += 1
        if scope.drop is not None:
            scope.drop.cancel()
            scope.drop = None
        token = begin_operation(scope.state)
        try:
            yield
        finally:
            end_operation(token)
            scope.users -= 1
            if scope.users == 0:
                scope.drop = asyncio.get_running_loop().call_later(
                    KEEP_SCOPE_SECONDS, lambda: asyncio.ensure_future(self._drop(key, scope)))

    async def _drop(self, key: Hashable, scope: SharedScope) -> None:
        if scope.users == 0 and self._scopes.get(key) is scope:
            del self._scopes[key]
            await scope.state.db.close()
            scope.state.release()

    async def event(self, seq: int, family_id: uuid.UUID) -> m.Event | None:
        """A family's event row by seq, loaded once per process (for events sent by
        reference). If the load fails (or its caller is cancelled), it is forgotten: its
        error goes to its caller, and each other caller waiting for it loads it again."""
        key = (family_id, seq)
        while True:
            future = self._events.get(key)
            if future is None:
                future = asyncio.get_running_loop().create_future()
                self._events[key] = future
                while len(self._events) > 256:
                    self._events.popitem(last=False)
                try:
                    async with self._database.reads() as session:
                        row = await session.scalar(select(m.Event).where(
                            m.Event.seq == seq, m.Event.family_id == family_id))
                except BaseException:
                    if self._events.get(key) is future:
                        del self._events[key]
                    future.cancel()  # wakes the waiters: they try again
                    raise
                future.set_result(row)
                return row
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                if not future.cancelled():
                    raise  # this caller was cancelled, not the load

    async def latest(self, family_id: uuid.UUID) -> int:
        """The family's newest seq, where a subscription without `since` starts, read by a
        statement that starts after this call (so a stream never replays an event that
        committed before it was asked for). Every start that arrives while a read waits to
        begin shares that read, and a family has one read under way at a time: a burst of
        subscriptions (a dashboard's reconnect, a family opening hundreds at once) is one
        or two statements, not a pool connection each, which other families' requests
        would queue behind while the pool opens connections for them. If the read fails
        (or its caller is cancelled), its error goes to its caller and each start that
        joined it reads again."""
        while True:
            future = self._latest_next.get(family_id)
            if future is None:
                return await self._read_latest(family_id)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not future.cancelled() or (task is not None and task.cancelling()):
                    raise  # this caller was cancelled (too), not only the read

    async def _read_latest(self, family_id: uuid.UUID) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._latest_next[family_id] = future
        try:
            running = self._latest_running.get(family_id)
            if running is not None:  # it may have started before some joined this one
                await asyncio.wait([running])
            del self._latest_next[family_id]  # from here on, a start waits for the next
            self._latest_running[family_id] = future
            value = await _latest(self._database.reads, family_id)
        except BaseException:
            if self._latest_next.get(family_id) is future:
                del self._latest_next[family_id]
            future.cancel()  # wakes the starts that joined it: they read again
            raise
        finally:
            if self._latest_running.get(family_id) is future:
                del self._latest_running[family_id]
        future.set_result(value)
        return value

    async def close(self) -> None:
        """At shutdown: return every shared scope's connection to the pool."""
        scopes, self._scopes = list(self._scopes.values()), {}
        for scope in scopes:
            if scope.drop is not None:
                scope.drop.cancel()
            await scope.state.db.close()

    def stats(self) -> int:
        return len(self._scopes)

    def starting(self) -> int:
        """Families whose newest seq is being read (or waits to be) for starts."""
        return len(self._latest_next.keys() | self._latest_running.keys())


# Events per replay statement. A replay (`since`, or a catch-up after a gap or a broker
# reconnect) reads the log in keyset pages and sends each page before it reads the next:
# a replaying subscriber holds one page, however far back it starts. The replays of one
# family, on all its members' sockets, take turns, a page each (`Hub.replay_turns`): a page
# is at most the rendered events accel.render keeps per selection (RESULTS_KEPT, 64), so
# that the family's other subscriptions of the same selection, replaying the same page
# after it, reuse them.
REPLAY_PAGE = 50


_E = m.Event.__table__.c
# An event's columns as a replay sends it (not its key `id`, never shown).
EVENT_COLUMNS = (_E.seq, _E.family_id, _E.topic, _E.kind, _E.entity_type, _E.entity_id,
                 _E.actor_id, _E.at, _E.payload)
AFTER = (_E.family_id == bindparam("family_id"), _E.topic == bindparam("topic"),
         _E.seq > bindparam("after"))
# The log's statements run on asyncpg directly (`Prepared`): a herd of reconnecting
# sockets runs one of them each.
PAGE_AFTER = Prepared(select(*EVENT_COLUMNS).where(*AFTER).order_by(_E.seq)
                      .limit(bindparam("page", type_=Integer())))


def _event(row: Any) -> m.Event:
    return m.Event.published(
        seq=row.seq, family_id=row.family_id, topic=row.topic, kind=row.kind,
        entity_type=row.entity_type, entity_id=row.entity_id, actor_id=row.actor_id,
        at=row.at, payload=row.payload, prev_seq=None)


async def _page(database: Database, family_id: uuid.UUID, topic: str,
                after: int) -> list[m.Event]:
    """The next REPLAY_PAGE events on `topic` after seq `after`."""
    return [_event(row) for row in await fetch(database, PAGE_AFTER, {
        "family_id": family_id, "topic": topic, "after": after, "page": REPLAY_PAGE})]


# Whether a `since` can be replayed, and its first page, in one statement: `beyond`, the
# seq of the event `max` events after it on the topic, if there is one (then the replay
# would be longer than `max`: an index-only probe of at most `max` + 1 entries of
# ix_events_family_topic_seq), and `latest`, the family's newest seq (a since past it is
# no event of this log: one given out before seqs counted per family, say); then, joined
# laterally (one row with no event if the page is empty), the page, read only if the
# since is admitted.
BEYOND = (select(_E.seq).where(*AFTER).order_by(_E.seq)
          .offset(bindparam("max", type_=Integer())).limit(1))
LATEST = select(func.max(m.Event.seq)).where(m.Event.family_id == bindparam("family_id"))
# OFFSET 0 keeps the probe a subquery of its own: pulled up into the join, each of its
# subqueries would run twice (in the select list and again in the page's condition).
_PROBE = select(BEYOND.scalar_subquery().label("beyond"),
                LATEST.scalar_subquery().label("latest")) \
    .offset(literal_column("0")).subquery("probe")
_FIRST = (select(*EVENT_COLUMNS)
          .where(*AFTER, _PROBE.c.beyond.is_(None), _PROBE.c.latest >= bindparam("after"))
          .order_by(_E.seq).limit(bindparam("page", type_=Integer())).lateral("page"))
FIRST_PAGE = Prepared(select(_PROBE.c.beyond, _PROBE.c.latest, *_FIRST.c)
                      .select_from(_PROBE.outerjoin(_FIRST, true()))
                      .order_by(_FIRST.c.seq))


async def _first_page(ctx: Context, family_id: uuid.UUID, topic: str,
                      after: int) -> list[m.Event]:
    """The first page of a `since` replay, after its admission: refused (and counted) if
    further back than `max_replay_events` on its topic, or past the family's newest
    event."""
    limit = ctx.settings.max_replay_events
    rows = await fetch(ctx.database, FIRST_PAGE, {
        "family_id": family_id, "topic": topic, "after": after, "max": limit,
        "page": REPLAY_PAGE})
    beyond, latest = rows[0].beyond, rows[0].latest
    if after > (latest or 0):
        raise BadInput({"since": "no such event: refetch, then subscribe without since"})
    if beyond is not None:
        ctx.count_refusal("replay_events")
        raise BadInput({"since": "too far back: refetch, then subscribe without since"},
                       f"More than {limit} events to replay")
    return [_event(row) for row in rows if row.seq is not None]


async def _latest(sessions: async_sessionmaker[AsyncSession], family_id: uuid.UUID) -> int:
    async with sessions() as session:
        value = await session.scalar(LATEST, {"family_id": family_id})
    return int(value or 0)


async def event_stream(ctx: Context, hub: Hub, scopes: SharedScopes, topic: str,
                       since: str | None, *, scoped: bool = True,
                       direct: DirectDelivery | None = None,
                       ) -> AsyncGenerator[m.Event, None]:
    """The caller's family's events on `topic`, each resolved inside a shared scope
    (unless `scoped` is false: the caller renders through a shared plan instead).

    Without `since` the stream starts at the latest event now. A `since` further back than
    `max_replay_events` events of the topic is refused (BAD_USER_INPUT: refetch, then
    subscribe without since) before anything is replayed, by the statement that reads the
    replay's first page. It listens before it replays (in pages: one held at a time),
    drops anything at or below the last seq it sent, replays again from the Event table
    after a gap or a broker reconnect, and ends with ResumeRequired on overflow.

    With `direct`, whenever the stream is caught up the hub delivers live events itself
    (`Subscriber.accept`: no task woken, nothing yielded); anything else (a replay, a gap,
    a resync, an event sent by reference, a socket that can't take a frame now) wakes the
    stream and comes through here, in order.
    """
    user = ctx.require_user()
    family_id = user.family_id
    database = ctx.database
    start = parse_since(since)
    async with hub.listen(channel(family_id, topic)) as sub:
        # Listening first, then the database: whatever commits meanwhile is in one or the
        # other (or both: anything at or below `sub.last` is a duplicate, and dropped).
        # Without `since` that is the family's newest seq, read after listening began:
        # every later event is heard, so there is no log to read (one shared statement per
        # family's burst of starts, not a page each); with `since`, the log after it, its
        # first page read with the since's admission (a refusal leaves the channel as it
        # ends the stream).
        after: int | None = start  # replay the log after this seq, page by page
        first = start is not None  # the next page is the first: admit the since with it
        sub.last = start if start is not None else await scopes.latest(family_id)
        pending: list[m.Event] = []
        while True:
            while True:
                # A page is read and sent in the family's replay turn (one at a time, on
                # all its members' sockets): a socket that does not read holds one replayed
                # page, not one per subscription; a family's many replays take one page's
                # share, however many members it has (an ADMIN registers them at will).
                replaying = after is not None
                async with hub.replay_turns.turn(family_id) if replaying else nullcontext():
                    if after is not None:
                        async with hub.replay_turns.reading():  # the statement, not the send
                            pending = await (_first_page(ctx, family_id, topic, after)
                                             if first else
                                             _page(database, family_id, topic, after))
                        first = False
                        after = pending[-1].seq if len(pending) == REPLAY_PAGE else None
                    for event in pending:
                        if event.seq <= sub.last:
                            continue
                        sub.last = event.seq
                        if not scoped:
                            yield event
                            continue
                        async with scopes.use(("event", family_id, event.seq), family_id):
                            yield event
                    pending = []  # a page is let go before the next one is read
                if after is None:
                    break
                await asyncio.sleep(0)  # between pages, whatever else is ready runs first
            if direct is not None and not sub.items:
                sub.direct = direct  # caught up: the hub may deliver by itself from here
            try:
                item = await sub.get()
            finally:
                sub.direct = None
            if item is OVERFLOW:
                raise ResumeRequired(sub.last)
            if item is RESYNC:
                after = sub.last
            elif behind(item, sub.last):
                # An earlier event on this topic has not reached us (events published by two
                # instances can cross in the broker): take everything after `last` from the
                # log, in order; the late one is dropped as a duplicate when it arrives.
                after = sub.last
            elif isinstance(item, m.Event):  # decoded once by the hub for all subscribers
                pending = [item]
            elif item.get("thin"):
                row = await scopes.event(int(item["seq"]), family_id)
                pending = [row] if row is not None else []

