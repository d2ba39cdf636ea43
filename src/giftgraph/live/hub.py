"""The process's live hub: one broadcaster subscription per channel, fanned out to
bounded per-subscriber queues; catch-up after broker reconnects; socket revocation."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from broadcaster import Broadcast
from broadcaster import Event as BroadcastEvent
from starlette.websockets import WebSocket

from giftgraph.accel import internals
from giftgraph.db import models as m
from giftgraph.live import credentials
from giftgraph.live.backends import RECONNECTED, make_backend
from giftgraph.live.publishing import Outgoing, Publisher, decode_event
from giftgraph.live.subscriber import RESYNC, Subscriber, prev_of
from giftgraph.live.workers import Ready, stop_worker

log = logging.getLogger("giftgraph.live")

CaughtUpWriter = Callable[[list[Subscriber], list[int], list[int]], list[Subscriber]]
CONTROL = "giftgraph:control"
FANOUT_SLICE = 32  # subscribers written between two yields to the event loop (~1 ms)
BATCH_MAX = 64  # events already waiting on a channel that are fanned out together


def waiting(source: Any, limit: int = BATCH_MAX - 1) -> list[BroadcastEvent]:
    """The broadcaster events already queued for `source`, without waiting (none if this
    broadcaster version keeps its queue elsewhere)."""
    queue = getattr(source, "_queue", None)
    taken: list[BroadcastEvent] = []
    while isinstance(queue, asyncio.Queue) and len(taken) < limit:
        try:
            item = queue.get_nowait()
        except asyncio.QueueEmpty:
            break
        if item is None:  # unsubscribed: the last item; leave it for the next get()
            queue.put_nowait(None)
            break
        taken.append(item)
    return taken


@dataclass
class Feed:
    """The process's single broadcaster subscription to one channel."""

    subscribers: set[Subscriber] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    # Until its pump has subscribed to the broker: what a joining subscriber waits for.
    starting: Ready | None = None


class Listening:
    """`Hub.listen`'s context manager. A class rather than an @asynccontextmanager: an
    idle subscription holds it for its whole life, and the generator version (its frame,
    the wrapper, the event loop's weak reference to it) costs ~1 KB more."""

    __slots__ = ("feed", "hub", "name", "sub")

    def __init__(self, hub: Hub, name: str) -> None:
        self.hub = hub
        self.name = sys.intern(name)  # one string per channel, however many listen
        self.sub = Subscriber(hub.queue_size)
        self.feed: Feed | None = None

    async def __aenter__(self) -> Subscriber:
        self.feed = await self.hub._join(self.name, self.sub)
        return self.sub

    async def __aexit__(self, *_: object) -> None:
        if self.feed is not None:
            feed, self.feed = self.feed, None
            await self.hub._leave(self.name, feed, self.sub)


class Turns(Protocol):
    """Turn-taking per family (`admission.sockets.ReplayTurns`): `turn(family_id)` is held
    while one page of one of its members' replays is read and sent; `reading()` around the
    page's statement alone (a bound over all users)."""

    def turn(self, family_id: uuid.UUID) -> AbstractAsyncContextManager[None]: ...

    def reading(self) -> AbstractAsyncContextManager[Any]: ...


class NoTurns:
    """Every replay at once (a hub made without turns)."""

    def turn(self, family_id: uuid.UUID) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    def reading(self) -> AbstractAsyncContextManager[Any]:
        return contextlib.nullcontext()


class Hub(Publisher):
    """Publish committed events; let subscriptions listen to family/topic channels."""

    def __init__(self, url: str, database_url: str, *, queue_size: int = 1000,
                 replay_turns: Turns | None = None) -> None:
        backend = make_backend(url, database_url)
        super().__init__(backend, Broadcast(backend=backend))
        self.queue_size = queue_size
        self.feeds: dict[str, Feed] = {}
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        # Each user's open sockets, for revocation and the per-user limit: registered when
        # authenticated, unregistered when closed (`admission.sockets.SocketSlot`). Plain
        # sets, not weak ones: a closed socket must leave now, not at the next collection.
        self.sockets: dict[uuid.UUID, set[WebSocket]] = {}
        # Each family's replays take one turn, a page at a time, across all its sockets
        # (`admission.sockets.ReplayTurns`, given by `Live.create`); none: no turns.
        self.replay_turns: Turns = replay_turns if replay_turns is not None else NoTurns()
        self.backlog_events = 0  # events fanned out in a batch with others already waiting
        self.on_backlog: Callable[[int], None] | None = None  # called with each batch's size
        self.on_resync: list[Callable[[], None]] = []
        # Called after an event went to its caught-up subscribers, with how many.
        self.on_fanout: Callable[[m.Event, int], None] | None = None
        # Writes a run of events to the caught-up subscribers of a slice in one loop and
        # returns the others (the fast paths' `accel.delivery.write_caught_up`); None: each
        # subscriber on its own path.
        self.write_caught_up: CaughtUpWriter | None = None
        self._control_ready = asyncio.Event()

    @property
    def connected(self) -> bool:
        return bool(getattr(self.backend, "connected", True))

    async def connect(self) -> None:
        await self.broadcast.connect()
        self._tasks.append(asyncio.create_task(self._control_loop()))
        self._tasks.append(asyncio.create_task(self._republish_loop()))
        await asyncio.wait_for(self._control_ready.wait(), 5)

    async def disconnect(self) -> None:
        for task in [*self._tasks, *(f.task for f in self.feeds.values() if f.task)]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.pending:  # a last chance for what the broker refused
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._republish(), 2)
        await self.broadcast.disconnect()

    # Sockets -----------------------------------------------------------------------

    async def revoke_user(self, user_id: uuid.UUID, chain: uuid.UUID | None = None) -> None:
        """Close every socket of a deactivated or deleted user, on every instance; with
        `chain`, only those authenticated with that refresh chain's access tokens (it was
        revoked: logout, reuse detection)."""
        message: dict[str, str] = {"revoke": str(user_id)}
        if chain is not None:
            message["chain"] = str(chain)
        msg = orjson.dumps(message).decode()
        if not await self._send([Outgoing(CONTROL, msg, False)]):
            # Kept for the other instances (or dropped); close this instance's sockets now.
            await self._close_sockets(user_id, chain)


    def register_socket(self, user_id: uuid.UUID, ws: WebSocket) -> None:
        self.sockets.setdefault(user_id, set()).add(ws)

    def unregister_socket(self, user_id: uuid.UUID, ws: WebSocket) -> None:
        sockets = self.sockets.get(user_id)
        if sockets is not None:
            sockets.discard(ws)
            if not sockets:
                del self.sockets[user_id]

    def open_sockets(self, user_id: uuid.UUID) -> int:
        return len(self.sockets.get(user_id, ()))

    async def _close_sockets(self, user_id: uuid.UUID, chain: uuid.UUID | None = None) -> None:
        # Each socket leaves the registry when its handler ends, closed here or not.
        targets = [ws for ws in list(self.sockets.get(user_id, ()))
                   if chain is None or credentials.chain_of(ws) == chain]
        for ws in targets:
            await credentials.close(ws, *credentials.FORBIDDEN)

    async def _control_loop(self) -> None:
        async with self.broadcast.subscribe(CONTROL) as control, \
                self.broadcast.subscribe(RECONNECTED) as reconnected:
            self._control_ready.set()
            waits: dict[str, asyncio.Task[Any]] = {}
            sources = {"control": control, "reconnected": reconnected}
            try:
                while True:
                    for name, sub in sources.items():
                        if name not in waits:
                            waits[name] = asyncio.create_task(sub.get())
                    done, _ = await asyncio.wait(waits.values(),
                                                 return_when=asyncio.FIRST_COMPLETED)
                    for name in [n for n, t in waits.items() if t in done]:
                        event: BroadcastEvent = waits.pop(name).result()
                        if name == "reconnected":
                            self._resync_all()
                            if self.pending:
                                self._retry_now.set()
                        else:
                            await self._on_control(event.message)
            finally:
                for task in waits.values():
                    task.cancel()

    async def _on_control(self, message: str) -> None:
        try:
            data = orjson.loads(message)
            user_id = uuid.UUID(data["revoke"])
            chain = uuid.UUID(data["chain"]) if data.get("chain") is not None else None
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError):
            log.warning("ignoring a malformed control message")
            return
        await self._close_sockets(user_id, chain)

    def _resync_all(self) -> None:
        for feed in self.feeds.values():
            for sub in feed.subscribers:
                sub.offer(RESYNC)
        for callback in self.on_resync:
            try:
                callback()
            except Exception:  # never the end of the control loop (revocations, resyncs)
                log.warning("on_resync failed", exc_info=True)

    # Listening ---------------------------------------------------------------------

    def listen(self, name: str) -> Listening:
        """`async with hub.listen(channel) as sub`: a bounded subscription to a channel,
        live once entered."""
        return Listening(self, name)

    async def _join(self, name: str, sub: Subscriber) -> Feed:
        """Join the channel's feed, started here if there is none, once its pump listens.
        Joining a running feed takes no lock and no wait: only a channel's start and stop
        take turns (one broadcaster subscription per channel, broadcaster #142: a start
        waits for that channel's stop to end), so a burst of subscriptions to many
        channels does not queue behind each channel's start."""
        feed = self.feeds.get(name)
        if feed is None:
            async with self._lock:
                feed = self.feeds.get(name)
                if feed is None:
                    feed = self.feeds[name] = Feed()
                    ready = feed.starting = Ready()
                    # In a context of its own (workers.start_worker says why).
                    feed.task = asyncio.get_running_loop().create_task(
                        self._pump(name, feed, ready), context=contextvars.Context())
        feed.subscribers.add(sub)
        starting = feed.starting
        if starting is not None:
            try:
                await starting.wait()
            except BaseException:  # cancelled meanwhile (a client that completes at once)
                await self._leave(name, feed, sub)
                raise
        return feed

    async def _leave(self, name: str, feed: Feed, sub: Subscriber) -> None:
        feed.subscribers.discard(sub)
        if not feed.subscribers and self.feeds.get(name) is feed:
            async with self._lock:
                if not feed.subscribers:  # (unless someone joined while this waited)
                    await stop_worker(self.feeds, name, feed)

    async def _pump(self, name: str, feed: Feed, ready: Ready) -> None:
        async with self.broadcast.subscribe(name) as source:
            ready.set()
            feed.starting = None
            while True:
                # With a backlog (events arriving faster than one fan-out takes), each
                # subscriber gets all of it in one write: one system call per socket
                # instead of one per event, which is most of a fan-out's cost.
                events = [await source.get(), *waiting(source)]
                items = [item for e in events if (item := self._decode(name, e)) is not None]
                try:
                    if len(items) == 1:
                        await self._fan_out(feed, items[0])
                    elif items:
                        await self._fan_out_many(feed, items)
                except Exception:
                    # Never the end of the channel's feed (every subscriber of it, now and
                    # later, would wait forever): whoever may have missed these catches up
                    # from the Event table.
                    log.exception("fanning out on %s failed; its subscribers resync", name)
                    for sub in list(feed.subscribers):
                        sub.offer(RESYNC)

    @staticmethod
    def _decode(name: str, event: BroadcastEvent) -> Any:
        """An event (decoded once here, not once per subscriber) or another message (a
        JSON object: a reference, presence); None, logged, for anything else."""
        try:
            item = orjson.loads(event.message)
            if not isinstance(item, dict):
                raise TypeError("not a JSON object")
            if ("entity_type" in item or item.get("thin")) \
                    and not isinstance(item.get("seq"), int):
                raise TypeError("an event or reference without a seq")
            if "entity_type" in item:
                item = decode_event(item)
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError):
            log.warning("ignoring a malformed message on %s", name)
            return None
        return item

    async def _fan_out(self, feed: Feed, item: Any) -> None:
        delivered = 0
        seq = prev = -1
        if type(item) is m.Event:  # read once here, not once per subscriber (ORM attributes)
            seq = item.seq
            prev = prev_of(item)

        async def each(sub: Subscriber) -> None:
            nonlocal delivered
            try:
                # No coroutine per subscriber when it can simply be written now.
                if seq >= 0 and sub.deliver_now(item, seq, prev):
                    delivered += 1
                else:
                    delivered += await sub.accept(item)
            except Exception:
                self._failed(sub)

        written = await self._slices(list(feed.subscribers), [seq] if seq >= 0 else [], [prev],
                                     each)
        self._fanned_out(item, delivered + written)

    async def _fan_out_many(self, feed: Feed, items: list[Any]) -> None:
        self.backlog_events += len(items)
        if self.on_backlog is not None:
            try:
                self.on_backlog(len(items))
            except Exception:  # metrics must never stop a channel's events
                log.warning("on_backlog failed", exc_info=True)
        delivered = [0] * len(items)
        events = all(type(item) is m.Event for item in items)
        seqs = [item.seq for item in items] if events else []  # read once (ORM attributes)
        prevs = [prev_of(item) for item in items] if events else []

        async def each(sub: Subscriber) -> None:
            try:
                # No coroutine per subscriber when the backlog can simply be written now.
                done = sub.deliver_many_now(items, seqs, prevs) if events else 0
                for i in range(done):
                    delivered[i] += 1
                if done < len(items):
                    for i, direct in enumerate(await sub.accept_many(items[done:]), done):
                        delivered[i] += direct
            except Exception:
                self._failed(sub)

        written = await self._slices(list(feed.subscribers), seqs, prevs, each)
        for item, count in zip(items, delivered, strict=True):
            self._fanned_out(item, count + written)

    async def _slices(self, subs: list[Subscriber], seqs: list[int], prevs: list[int],
                      each: Callable[[Subscriber], Awaitable[None]]) -> int:
        """`subs` a slice of `FANOUT_SLICE` at a time, yielding to the event loop between
        slices: `write_caught_up` writes the run of events (`seqs`, none: not events) to
        the caught-up ones, `each` delivers to the others. A run's messages are made by
        the first subscriber that renders them (`each`'s `accept`), so when the writer
        hands some back, the first of them goes its own way and the writer is asked again
        for the rest (an event's first slice; a family's few sockets). How many the writer
        wrote to."""
        written = 0
        writer = self.write_caught_up if seqs else None
        for start in range(0, len(subs), FANOUT_SLICE):
            if start:
                await asyncio.sleep(0)  # let requests (and other feeds) run between slices
            part = subs[start:start + FANOUT_SLICE]
            if writer is not None:
                rest = self._write_caught_up(writer, part, seqs, prevs)
                written += len(part) - len(rest)
                if rest:
                    await each(rest[0])
                    part = rest[1:]
                    rest = self._write_caught_up(writer, part, seqs, prevs)
                    written += len(part) - len(rest)
                part = rest
            for sub in part:
                await each(sub)
        return written

    @staticmethod
    def _write_caught_up(writer: CaughtUpWriter, subs: list[Subscriber], seqs: list[int],
                         prevs: list[int]) -> list[Subscriber]:
        """`writer(subs, seqs, prevs)`: those of `subs` it did not write the run to (all of
        them when it failed)."""
        try:
            return writer(subs, seqs, prevs)
        except Exception:  # those it wrote to have the run: their own path drops it again
            log.exception("writing to the caught-up subscribers failed")
            return subs

    @staticmethod
    def _failed(sub: Subscriber) -> None:
        """Delivering to `sub` raised (e.g. its socket's write): that subscriber alone
        catches up from the Event table; the others, and the channel, go on."""
        log.warning("delivering to a subscriber failed; it resyncs", exc_info=True)
        sub.offer(RESYNC)

    def _fanned_out(self, item: Any, delivered: int) -> None:
        if delivered and self.on_fanout is not None:
            try:
                self.on_fanout(item, delivered)
            except Exception:  # metrics must never stop a channel's events
                log.warning("on_fanout failed", exc_info=True)

    def stats(self) -> dict[str, int]:
        return {
            "channels": len(self.feeds),
            "subscribers": sum(len(f.subscribers) for f in self.feeds.values()),
            "broadcaster_queues": internals.broadcaster_queues(self.broadcast),
            "sockets": sum(len(s) for s in self.sockets.values()),
        }

