"""The process's live hub: one broadcaster subscription per channel, fanned out to
bounded per-subscriber queues; catch-up after broker reconnects; socket revocation."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from broadcaster import Broadcast
from broadcaster import Event as BroadcastEvent
from starlette.websockets import WebSocket

from giftgraph.admission.sockets import ReplayTurns
from giftgraph.db import models as m
from giftgraph.live import credentials
from giftgraph.live.backends import RECONNECTED, Refused, make_backend
from giftgraph.live.wire import Inbox

log = logging.getLogger("giftgraph.live")

CONTROL = "giftgraph:control"
# Bytes of what the backend sends for an event (`payload_size`: after its own encoding and
# escaping); a larger event travels as a reference and is loaded once by each instance.
THIN_OVER = 7000
# Messages kept while the broker can't take them (events and revocations), published again
# in order once it can. Past this bound new events are not kept: other instances'
# subscribers still catch up, at the next event on the topic, through gap detection
# (`behind`); revocations are always kept (one per deactivated or deleted user).
PENDING_MAX = 10_000
REPUBLISH_EVERY = 0.5  # seconds between attempts while anything is pending
# The publisher is stuck (`Hub.stuck`, /health) after this long without progress (kept
# messages not going out, or a publish waiting for the broker's answer), or when it dropped
# a message this recently.
STUCK_AFTER = 10.0


class Resync:
    """Queue marker: the broker reconnected, so catch up from the Event table."""


class Overflow:
    """Queue marker: the subscriber fell too far behind and must resume with `since`."""


RESYNC, OVERFLOW = Resync(), Overflow()


def channel(family_id: uuid.UUID, topic: str) -> str:
    """Broadcaster channels are scoped by family and topic."""
    return f"gg:{family_id}:{topic}"


def encode_event(e: m.Event) -> str:
    return orjson.dumps({
        "seq": e.seq, "family_id": str(e.family_id), "topic": e.topic, "kind": e.kind.value,
        "entity_type": e.entity_type, "entity_id": str(e.entity_id),
        "actor_id": str(e.actor_id) if e.actor_id else None, "at": e.at.isoformat(),
        "payload": e.payload, "prev": e.prev_seq,
    }).decode()


def reference(e: m.Event) -> str:
    """An event sent by reference: each instance loads it from the Event table."""
    return orjson.dumps({"thin": True, "seq": e.seq, "prev": e.prev_seq}).decode()


@dataclass(slots=True)
class Outgoing:
    """A message for the broker: an event, or a control message (a revocation).

    An event's `reference` goes instead when the broker refuses the event itself for its
    content; None when there is nothing smaller to send (a control message, or an event
    that already is its reference)."""

    channel: str
    message: str
    event: bool
    reference: str | None = None


def decode_event(d: dict[str, Any]) -> m.Event:
    return m.Event.published(
        seq=d["seq"], family_id=uuid.UUID(d["family_id"]), topic=d["topic"],
        kind=m.EventKind(d["kind"]), entity_type=d["entity_type"],
        entity_id=uuid.UUID(d["entity_id"]),
        actor_id=uuid.UUID(d["actor_id"]) if d["actor_id"] else None,
        at=datetime.fromisoformat(d["at"]), payload=d["payload"], prev_seq=d.get("prev"),
    )


@dataclass(slots=True)
class Direct:
    """How the hub delivers a live event to a caught-up subscriber by itself: `prepare`
    makes its message (it may wait, e.g. for the shared render), `write` sends it now,
    synchronously, or returns False when it can't (the event is then queued instead)."""

    prepare: Callable[[m.Event], Awaitable[Any]]
    write: Callable[[m.Event, Any], bool]
    # Several consecutive events' messages in one write (one system call), or False.
    write_many: Callable[[list[m.Event], list[Any]], bool] | None = None
    # The message of the event with this seq if it is made already (by an earlier
    # subscriber's `prepare`), else None: the hub then writes it with no wait at all
    # (`Subscription.deliver_now`).
    ready: Callable[[int], Any | None] | None = None


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


def behind(item: Any, last: int) -> bool:
    """Whether a live event says an event after `last` came before it on its topic."""
    prev = item.prev_seq if isinstance(item, m.Event) else item.get("prev")
    return isinstance(prev, int) and prev > last


class Subscription(Inbox):
    """One subscriber's bounded queue (an `Inbox`, not an asyncio.Queue: an idle
    subscription holds it for its whole life). When it is full the subscriber gets OVERFLOW
    (and nothing more): it must resume with `since`, never silently miss events."""

    __slots__ = ("direct", "last", "overflowed", "size")

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.overflowed = False
        self.last = 0  # the seq of the newest event this subscriber has been sent
        # Set while the subscriber is caught up and idle: the hub delivers through it.
        self.direct: Direct | None = None

    async def accept(self, item: Any) -> bool:
        """Deliver directly when the subscriber is caught up and this is simply the next
        live event (True); otherwise queue it (waking the subscriber, which handles it in
        order).

        The message is prepared first; whether the event is still simply the next one is
        checked again after that wait, and `last` is claimed only together with the
        synchronous write. So a resync or another event that arrives meanwhile can never
        make the subscriber skip this one: it is either written in order here or queued.
        """
        direct = self.direct
        if direct is not None and isinstance(item, m.Event) and self._next(item):
            try:
                message = await direct.prepare(item)
            except Exception:  # e.g. rendering failed: the subscriber's own task reports it
                log.debug("preparing a direct delivery failed", exc_info=True)
            else:
                if self.direct is direct and self._next(item) and direct.write(item, message):
                    self.last = item.seq
                    return True
        if isinstance(item, m.Event) and item.seq <= self.last and not self.items:
            return False  # sent already (a replay got there first)
        self.offer(item)
        return False

    async def accept_many(self, items: list[Any]) -> list[bool]:
        """`accept` for several items in order (a backlog of live events): the leading run
        of them that are simply the next events, one after another, goes out directly in
        one write; the rest (or all, if that write is refused) through `accept` one by one.
        Which items went out directly."""
        direct = self.direct
        write_many = direct.write_many if direct is not None else None
        run: list[m.Event] = []
        if direct is not None and write_many is not None:
            last = self.last
            for item in items:
                if type(item) is not m.Event or self.items or item.seq <= last \
                        or behind(item, last):
                    break
                run.append(item)
                last = item.seq
        if direct is not None and write_many is not None and len(run) > 1:
            try:
                messages = [await direct.prepare(item) for item in run]
            except Exception:  # e.g. rendering failed: the subscriber's own task reports it
                log.debug("preparing a direct delivery failed", exc_info=True)
            else:
                # Re-checked after the waits, as in `accept`; the run's own order stands.
                if self.direct is direct and self._next(run[0]) and write_many(run, messages):
                    self.last = run[-1].seq
                    return [True] * len(run) + [await self.accept(i) for i in items[len(run):]]
        return [await self.accept(item) for item in items]

    def deliver_now(self, item: m.Event, seq: int, prev: int) -> bool:
        """`accept`'s direct delivery as one synchronous step, for the fan-out's common case
        (caught up, the message made already, the socket writable): True when written now.
        False changes nothing, and the caller goes through `accept`. `seq` and `prev` are
        the event's, read once for every subscriber (`prev` -1 when it names none)."""
        direct = self.direct
        last = self.last
        if direct is None or self.items or seq <= last or prev > last:
            return False
        ready = direct.ready
        message = ready(seq) if ready is not None else None
        if message is None or not direct.write(item, message):
            return False
        self.last = seq
        return True

    def deliver_many_now(self, items: list[m.Event], seqs: list[int], prevs: list[int]) -> int:
        """`deliver_now` for a backlog (`seqs` and `prevs` are its events'): the leading
        events that are simply the next ones and whose messages are made, written in one
        write. How many were written; 0 changed nothing. The caller hands the rest (or
        all) to `accept_many`."""
        direct = self.direct
        if direct is None or self.items or direct.ready is None or direct.write_many is None:
            return 0
        ready, last = direct.ready, self.last
        messages = []
        for seq, prev in zip(seqs, prevs, strict=True):
            if seq <= last or prev > last or (message := ready(seq)) is None:
                break
            messages.append(message)
            last = seq
        n = len(messages)
        if n == 0 or not (direct.write(items[0], messages[0]) if n == 1 else
                          direct.write_many(items if n == len(items) else items[:n], messages)):
            return 0
        self.last = last
        return n

    def _next(self, item: m.Event) -> bool:
        return not self.items and item.seq > self.last and not behind(item, self.last)

    def offer(self, item: Any) -> None:
        if self.overflowed:
            return
        if item is RESYNC:
            if self.items and self.items[-1] is RESYNC:
                return  # one pending catch-up covers any number of reconnects
        elif len(self.items) >= self.size:
            self.overflowed = True
            item = OVERFLOW
        self.put_nowait(item)

    def drain(self) -> None:
        self.items.clear()


async def start_worker(registry: dict[Any, Any], key: Any, holder: Any,
                       run: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
                       idle: Callable[[], bool]) -> None:
    """Start `holder.task` (`run(ready)`) for the holder registered under `key`, and wait
    until it is ready. Cancelled meanwhile (a client that completes at once), the holder is
    unregistered and its task stopped, unless someone else uses it by then (`idle`)."""
    ready = asyncio.Event()
    # In a context of its own: a copy of the caller's (the first subscriber's operation,
    # its DirectSink) would keep that socket, and all its handler holds, for as long as
    # the worker runs, however long after that socket closed.
    holder.task = asyncio.get_running_loop().create_task(run(ready),
                                                         context=contextvars.Context())
    try:
        await ready.wait()
    except BaseException:
        if idle() and registry.get(key) is holder:
            del registry[key]
            holder.task.cancel()
        raise


async def stop_worker(registry: dict[Any, Any], key: Any, holder: Any) -> None:
    """Its last user is gone: unregister the holder under `key` and stop its task. The
    task's own CancelledError ends here; the caller's (it was cancelled while waiting for
    the task to stop) goes on up."""
    if registry.get(key) is holder:
        del registry[key]
        assert holder.task is not None
        holder.task.cancel()
        try:
            await holder.task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise


@dataclass
class Feed:
    """The process's single broadcaster subscription to one channel."""

    subscribers: set[Subscription] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class Listening:
    """`Hub.listen`'s context manager. A class rather than an @asynccontextmanager: an
    idle subscription holds it for its whole life, and the generator version (its frame,
    the wrapper, the event loop's weak reference to it) costs ~1 KB more."""

    __slots__ = ("feed", "hub", "name", "sub")

    def __init__(self, hub: Hub, name: str) -> None:
        self.hub = hub
        self.name = sys.intern(name)  # one string per channel, however many listen
        self.sub = Subscription(hub.queue_size)
        self.feed: Feed | None = None

    async def __aenter__(self) -> Subscription:
        self.feed = await self.hub._join(self.name, self.sub)
        return self.sub

    async def __aexit__(self, *_: object) -> None:
        if self.feed is not None:
            feed, self.feed = self.feed, None
            await self.hub._leave(self.name, feed, self.sub)


class Hub:
    """Publish committed events; let subscriptions listen to family/topic channels."""

    def __init__(self, url: str, database_url: str, *, queue_size: int = 1000) -> None:
        self.backend = make_backend(url, database_url)
        self.broadcast = Broadcast(backend=self.backend)
        self.queue_size = queue_size
        self.feeds: dict[str, Feed] = {}
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        # Each user's open sockets, for revocation and the per-user limit: registered when
        # authenticated, unregistered when closed (`admission.sockets.SocketSlot`). Plain
        # sets, not weak ones: a closed socket must leave now, not at the next collection.
        self.sockets: dict[uuid.UUID, set[WebSocket]] = {}
        # Each user's replays take one turn, a page at a time, across all their sockets.
        self.replay_turns = ReplayTurns()
        self.published = 0
        self.backlog_events = 0  # events fanned out in a batch with others already waiting
        self.on_backlog: Callable[[int], None] | None = None  # called with each batch's size
        self.publish_failures = 0  # messages the broker could not take at first (kept)
        self.publish_refused = 0  # refused for their content: sent by reference, or dropped
        self.publish_dropped = 0  # never sent: refused even by reference, or past PENDING_MAX
        # Called with how many events went out, each time some did: at once from `publish`
        # or later from `_republish` (never for events the broker refused).
        self.on_published: Callable[[int], None] | None = None
        # Called with a reason ("refused", "backlog_full") and how many messages were dropped.
        self.on_dropped: Callable[[str, int], None] | None = None
        # Oldest first: published again from `_republish_loop`.
        self.pending: deque[Outgoing] = deque()
        self.stuck_after = STUCK_AFTER
        self._waiting_since: float | None = None  # when pending last made no progress
        self._publishing: dict[object, float] = {}  # each publish awaiting the broker: since
        self._dropped_at = -float("inf")
        self._retry_now = asyncio.Event()
        self.on_resync: list[Callable[[], None]] = []
        # Called after an event went to its caught-up subscribers, with how many.
        self.on_fanout: Callable[[m.Event, int], None] | None = None
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

    # Publishing -------------------------------------------------------------------

    async def publish(self, events: list[m.Event]) -> int:
        """Called after COMMIT; how many of `events` went out now. A broker failure is
        logged, not raised: the change is committed, and what the broker could not take is
        kept and published again (in order, before anything newer) when it takes messages
        again. An event the broker refuses for its content goes by reference at once."""
        messages = []
        for e in events:
            name, message, ref = channel(e.family_id, e.topic), encode_event(e), reference(e)
            if self._payload_size(name, message) > THIN_OVER:
                messages.append(Outgoing(name, ref, True))
            else:
                messages.append(Outgoing(name, message, True, ref))
        sent = await self._send(messages)
        self._count_published(sent)
        return sent

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

    def _payload_size(self, name: str, message: str) -> int:
        """The bytes the backend sends for `message` (a broadcaster backend of its own:
        the UTF-8 bytes); unencodable counts as too large."""
        size = getattr(self.backend, "payload_size", None)
        try:
            return int(size(name, message)) if size is not None else len(message.encode())
        except (Refused, UnicodeEncodeError):
            return sys.maxsize

    @property
    def backlog_seconds(self) -> float:
        """How long the publisher has gone without progress: the kept messages since one
        last went out, or the oldest publish still waiting for the broker's answer (a
        broker that stopped answering keeps nothing, but holds every publish); 0 when
        neither."""
        now, since = time.monotonic(), self._waiting_since
        kept = now - since if self.pending and since is not None else 0.0
        waiting = now - min(self._publishing.values()) if self._publishing else 0.0
        return max(kept, waiting)

    @property
    def stuck(self) -> bool:
        """The publisher has gone `stuck_after` seconds without progress
        (`backlog_seconds`), or a message was dropped within the last `stuck_after`
        seconds."""
        return (self.backlog_seconds >= self.stuck_after
                or time.monotonic() - self._dropped_at < self.stuck_after)

    async def _send(self, messages: list[Outgoing]) -> int:
        """Publish `messages` in order, or keep them (and any after a failure) pending; how
        many went out. Behind anything pending, they wait their turn: order per channel."""
        sent = 0
        for i, out in enumerate(messages):
            if self.pending:
                self._keep(messages[i:])
                break
            try:
                sent += await self._publish_one(out)
            except Exception:  # any broker error; the event is safe in the database
                log.warning("publish on %s failed; kept to publish again", out.channel,
                            exc_info=True)
                self._keep(messages[i:])
                break
        return sent

    async def _publish_one(self, out: Outgoing) -> bool:
        """Publish `out`: True when it went out, or, refused for its content, its reference
        did; False when it was refused with nothing smaller to send (dropped: logged and
        counted). Raises when the broker could not take it for now (the caller keeps it)."""
        while True:
            token = object()
            self._publishing[token] = time.monotonic()
            try:
                await self.broadcast.publish(out.channel, out.message)
            except Refused as exc:
                self.publish_refused += 1
                if out.reference is None:
                    log.error("the broker refused a message on %s for its content (%s); "
                              "dropped", out.channel, exc)
                    self._dropped("refused", 1)
                    return False
                log.warning("the broker refused an event on %s for its content (%s); sent "
                            "by reference instead", out.channel, exc)
                out.message, out.reference = out.reference, None
                continue
            finally:
                del self._publishing[token]
            return True

    def _keep(self, messages: list[Outgoing]) -> None:
        if not self.pending:
            self._retry_now.set()
            self._waiting_since = time.monotonic()
        self.publish_failures += len(messages)
        dropped = 0
        for item in messages:
            if item.event and len(self.pending) >= PENDING_MAX:
                dropped += 1
                continue
            self.pending.append(item)
        if dropped:
            self._dropped("backlog_full", dropped)
            log.warning("%d unpublished events dropped (%d pending already); subscribers "
                        "catch up at their topic's next event", dropped, PENDING_MAX)

    def _dropped(self, reason: str, count: int) -> None:
        self.publish_dropped += count
        self._dropped_at = time.monotonic()
        if self.on_dropped is not None:
            try:
                self.on_dropped(reason, count)
            except Exception:  # metrics must never stop publishing
                log.warning("on_dropped failed", exc_info=True)

    async def _republish(self) -> bool:
        """Publish what is pending, oldest first, until done (True) or the first failure
        (False: the rest stays pending). A message refused for its content goes by
        reference or is dropped, never retried. Only one caller at a time
        (`_republish_loop`)."""
        events = 0
        try:
            while self.pending:
                out = self.pending[0]
                try:
                    went = await self._publish_one(out)
                except Exception:  # the broker still can't take it: keep it, try again later
                    log.info("publishing %d pending messages again failed", len(self.pending),
                             exc_info=True)
                    return False
                self.pending.popleft()
                self._waiting_since = time.monotonic()
                events += went and out.event
            return True
        finally:
            if events:
                log.warning("published %d pending events again", events)
                self._count_published(events)

    def _count_published(self, count: int) -> None:
        self.published += count
        if count and self.on_published is not None:
            try:
                self.on_published(count)
            except Exception:  # metrics must never stop publishing
                log.warning("on_published failed", exc_info=True)

    async def _republish_loop(self) -> None:
        """Publish pending messages again: when the first is kept, when the backend
        reconnects, and every REPUBLISH_EVERY seconds while anything is pending."""
        while True:
            await self._retry_now.wait()
            self._retry_now.clear()
            while self.pending and not await self._republish():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._retry_now.wait(), REPUBLISH_EVERY)
                self._retry_now.clear()

    # Sockets -----------------------------------------------------------------------

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

    async def _join(self, name: str, sub: Subscription) -> Feed:
        async with self._lock:  # one broadcaster subscription per channel (broadcaster #142)
            feed = self.feeds.get(name)
            if feed is None:
                feed = self.feeds[name] = Feed()
                await start_worker(self.feeds, name, feed,
                                   lambda ready: self._pump(name, feed, ready),
                                   lambda: not feed.subscribers)
            feed.subscribers.add(sub)
        return feed

    async def _leave(self, name: str, feed: Feed, sub: Subscription) -> None:
        async with self._lock:
            feed.subscribers.discard(sub)
            if not feed.subscribers:
                await stop_worker(self.feeds, name, feed)

    async def _pump(self, name: str, feed: Feed, ready: asyncio.Event) -> None:
        async with self.broadcast.subscribe(name) as source:
            ready.set()
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
            prev = item.prev_seq if isinstance(item.prev_seq, int) else -1
        for k, sub in enumerate(list(feed.subscribers), 1):
            try:
                # No coroutine per subscriber when it can simply be written now.
                if seq >= 0 and sub.deliver_now(item, seq, prev):
                    delivered += 1
                else:
                    delivered += await sub.accept(item)
            except Exception:
                self._failed(sub)
            if k % FANOUT_SLICE == 0:
                await asyncio.sleep(0)  # let requests (and other feeds) run between slices
        self._fanned_out(item, delivered)

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
        prevs = [p if isinstance(p := item.prev_seq, int) else -1 for item in items] \
            if events else []
        for k, sub in enumerate(list(feed.subscribers), 1):
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
            if k % FANOUT_SLICE == 0:
                await asyncio.sleep(0)
        for item, count in zip(items, delivered, strict=True):
            self._fanned_out(item, count)

    @staticmethod
    def _failed(sub: Subscription) -> None:
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
            "broadcaster_queues": sum(len(q) for q in self.broadcast._subscribers.values()),
            "sockets": sum(len(s) for s in self.sockets.values()),
        }

