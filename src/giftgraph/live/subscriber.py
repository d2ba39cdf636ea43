"""One subscriber's queue of a channel's events (`Subscriber`), and its direct delivery:
while caught up, the hub writes each next event to its socket itself (`Direct`, set by
giftgraph.accel.delivery) instead of queueing it and waking the subscriber's task."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from giftgraph.db import models as m
from giftgraph.live.inbox import Inbox

log = logging.getLogger("giftgraph.live")


class Resync:
    """Queue marker: the broker reconnected, so catch up from the Event table."""


class Overflow:
    """Queue marker: the subscriber fell too far behind and must resume with `since`."""


RESYNC, OVERFLOW = Resync(), Overflow()


class DirectDelivery(Protocol):
    """How the hub delivers a live event to a caught-up subscriber by itself: `prepare`
    makes its message (it may wait, e.g. for the shared render), `write` sends it now,
    synchronously, or returns False when it can't (the event is then queued instead);
    `write_many` and `ready` as `Direct` says. `Direct` is one made of four callables;
    a parked subscription (giftgraph.accel.delivery) is one itself, with no such objects
    to hold for its whole life."""

    def prepare(self, item: m.Event) -> Awaitable[Any]: ...

    def write(self, item: m.Event, message: Any) -> bool: ...

    @property
    def write_many(self) -> Callable[[list[m.Event], list[Any]], bool] | None: ...

    @property
    def ready(self) -> Callable[[int], Any | None] | None: ...


@dataclass(slots=True)
class Direct:
    """A `DirectDelivery` made of its callables: `prepare` makes an event's message (it may
    wait, e.g. for the shared render), `write` sends it now, synchronously, or returns
    False when it can't (the event is then queued instead)."""

    prepare: Callable[[m.Event], Awaitable[Any]]
    write: Callable[[m.Event, Any], bool]
    # Several consecutive events' messages in one write (one system call), or False.
    write_many: Callable[[list[m.Event], list[Any]], bool] | None = None
    # The message of the event with this seq if it is made already (by an earlier
    # subscriber's `prepare`), else None: the hub then writes it with no wait at all
    # (`Subscriber.deliver_now`).
    ready: Callable[[int], Any | None] | None = None


def in_order(seq: int, prev: int, last: int) -> bool:
    """The ordering rule, the one place it is written: an event is simply the next one for
    a subscriber that has been sent everything up to `last` when it is newer (`seq >
    last`) and names no event after `last` as its predecessor on the topic (`prev <=
    last`; -1 when it names none). Anything else is a duplicate (dropped) or follows a gap
    (the stream replays from the Event table first)."""
    return seq > last and prev <= last


def prev_of(item: Any) -> int:
    """The seq of the event a live event (or a reference to one) names as its predecessor
    on its topic, or -1."""
    prev = item.prev_seq if isinstance(item, m.Event) else item.get("prev")
    return prev if isinstance(prev, int) else -1


def behind(item: Any, last: int) -> bool:
    """Whether a live event says an event after `last` came before it on its topic."""
    return prev_of(item) > last


class Subscriber(Inbox):
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
        self.direct: DirectDelivery | None = None

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
                if type(item) is not m.Event or self.items \
                        or not in_order(item.seq, prev_of(item), last):
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
        if direct is None or self.items or not in_order(seq, prev, last):
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
            if not in_order(seq, prev, last) or (message := ready(seq)) is None:
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
        return not self.items and in_order(item.seq, prev_of(item), self.last)

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
