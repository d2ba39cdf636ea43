"""The hub's direct delivery to a caught-up subscriber never skips or reorders an event."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from giftgraph.db import models as m
from giftgraph.live.subscriber import RESYNC, Direct, Subscriber

# Tests of a fast path itself (giftgraph.accel): skipped with GIFTGRAPH_ACCEL=false.
pytestmark = pytest.mark.accel


def event(seq: int, prev: int) -> m.Event:
    row = m.Event(seq=seq, family_id=uuid.uuid4(), topic="family", kind=m.EventKind.UPDATED,
                  entity_type="Person", entity_id=uuid.uuid4(), actor_id=None,
                  at=datetime.now(UTC), payload={})
    row.prev_seq = prev
    return row


def direct(gate: asyncio.Event, socket_takes_it: bool, written: list[int]) -> Direct:
    async def prepare(row: m.Event) -> bytes:
        await gate.wait()  # as the shared render does for the first subscriber
        return b"message"

    def write(row: m.Event, message: Any) -> bool:
        if socket_takes_it:
            written.append(row.seq)
        return socket_takes_it

    return Direct(prepare, write)


async def test_caught_up_subscriber_is_written_directly() -> None:
    sub, gate, written = Subscriber(10), asyncio.Event(), []
    sub.last = 5
    sub.direct = direct(gate, True, written)
    gate.set()
    assert await sub.accept(event(6, 5)) is True
    assert (written, sub.last, list(sub.items)) == ([6], 6, [])
    assert await sub.accept(event(6, 5)) is False  # a duplicate: dropped
    assert written == [6]


async def test_resync_during_prepare_then_busy_socket_queues_the_event_in_order() -> None:
    """A broker reconnect while the message is being prepared, and then a socket that can't
    take the frame: the subscriber must replay from seq 5 (not 6) and then see 6 queued, so
    event 6 reaches it exactly once and in order."""
    sub, gate, written = Subscriber(10), asyncio.Event(), []
    sub.last = 5
    sub.direct = direct(gate, False, written)
    accepting = asyncio.create_task(sub.accept(event(6, 5)))
    await asyncio.sleep(0)  # preparing
    sub.offer(RESYNC)
    gate.set()
    assert await accepting is False
    assert sub.last == 5  # not claimed: the replay after 5 includes 6
    assert [i if i is RESYNC else i.seq for i in sub.items] == [RESYNC, 6]
    assert written == []


async def test_resync_during_prepare_queues_even_when_the_socket_could_take_it() -> None:
    sub, gate, written = Subscriber(10), asyncio.Event(), []
    sub.last = 5
    sub.direct = direct(gate, True, written)
    accepting = asyncio.create_task(sub.accept(event(6, 5)))
    await asyncio.sleep(0)
    sub.offer(RESYNC)  # the stream will replay: writing 6 now would put it before 5's kin
    gate.set()
    assert await accepting is False
    assert written == []
    assert sub.last == 5
    assert [i if i is RESYNC else i.seq for i in sub.items] == [RESYNC, 6]


async def test_a_gap_is_never_delivered_directly() -> None:
    sub, gate, written = Subscriber(10), asyncio.Event(), []
    sub.last = 5
    sub.direct = direct(gate, True, written)
    gate.set()
    assert await sub.accept(event(8, 7)) is False  # 7 has not reached us yet
    assert written == []
    assert [i.seq for i in sub.items] == [8]


# -- the fan-out's synchronous path (Subscription.deliver_now) ---------------------------------


def made(written: list[int], *, takes: bool = True, message: bytes | None = b"message",
         prepared: list[int] | None = None) -> Direct:
    """A Direct whose message is made already (`ready`), recording each `prepare` call."""
    async def prepare(row: m.Event) -> bytes:
        if prepared is not None:
            prepared.append(row.seq)
        return b"message"

    def write(row: m.Event, msg: Any) -> bool:
        if takes:
            written.append(row.seq)
        return takes

    return Direct(prepare, write, None, lambda seq: message)


def test_a_made_message_is_written_at_once_in_order() -> None:
    sub, written = Subscriber(10), []
    sub.last = 5
    sub.direct = made(written)
    assert sub.deliver_now(event(6, 5), 6, 5) is True
    assert (written, sub.last, list(sub.items)) == ([6], 6, [])
    assert sub.deliver_now(event(6, 5), 6, 5) is False  # a duplicate
    assert sub.deliver_now(event(8, 7), 8, 7) is False  # 7 has not reached us yet
    assert (written, sub.last, list(sub.items)) == ([6], 6, [])


def test_deliver_now_changes_nothing_when_it_cannot_write() -> None:
    """Each case the synchronous path declines leaves the subscription as it was, for
    `accept` to handle: no stream to write to, a queue that must be emptied first, a
    message not made yet, a socket that can't take it."""
    cases = {
        "no direct path": None,
        "not made": made([], message=None),
        "busy socket": made([], takes=False),
    }
    for name, path in cases.items():
        sub = Subscriber(10)
        sub.last, sub.direct = 5, path
        assert sub.deliver_now(event(6, 5), 6, 5) is False, name
        assert (sub.last, list(sub.items)) == (5, []), name
    sub, written = Subscriber(10), []
    sub.last, sub.direct = 5, made(written)
    sub.offer(RESYNC)  # the stream has a replay to do first
    assert sub.deliver_now(event(6, 5), 6, 5) is False
    assert (written, sub.last, list(sub.items)) == ([], 5, [RESYNC])


async def test_fan_out_writes_made_messages_without_preparing_and_falls_back_in_order() -> None:
    """`Hub._fan_out`: subscribers whose message is made get it with no `prepare`; one whose
    socket is busy gets the event queued by `accept`, after its own queued RESYNC."""
    from giftgraph.live.hub import Feed, Hub

    hub = Hub("memory://", "postgresql://unused")
    feed, written, busy_written, prepared = Feed(), [], [], []
    subs = [Subscriber(10) for _ in range(70)]  # more than one FANOUT_SLICE
    for sub in subs:
        sub.last, sub.direct = 5, made(written, prepared=prepared)
    busy = Subscriber(10)
    busy.last, busy.direct = 5, made(busy_written, takes=False, prepared=prepared)
    behind = Subscriber(10)
    behind.last, behind.direct = 5, made(written, prepared=prepared)
    behind.offer(RESYNC)
    feed.subscribers.update([*subs, busy, behind])
    await hub._fan_out(feed, event(6, 5))
    assert written == [6] * 70
    assert all(s.last == 6 for s in subs)
    assert prepared == [6]  # only the busy socket's fall-back went through accept's prepare
    assert (busy.last, [i.seq for i in busy.items]) == (5, [6])
    assert [i if i is RESYNC else i.seq for i in behind.items] == [RESYNC, 6]


# -- a backlog of events, fanned out together (Hub._fan_out_many) -----------------------------


def batching(socket_takes_it: bool, written: list[int],
             writes: list[list[int]]) -> Direct:
    """A Direct whose `write_many` records each call (one call = one system call)."""
    async def prepare(row: m.Event) -> bytes:
        await asyncio.sleep(0)
        return b"message"

    def write(row: m.Event, message: Any) -> bool:
        if socket_takes_it:
            written.append(row.seq)
            writes.append([row.seq])
        return socket_takes_it

    def write_many(rows: list[m.Event], messages: list[Any]) -> bool:
        if socket_takes_it:
            written.extend(r.seq for r in rows)
            writes.append([r.seq for r in rows])
        return socket_takes_it

    return Direct(prepare, write, write_many)


async def test_a_backlog_goes_out_in_one_write_in_order() -> None:
    sub, written, writes = Subscriber(10), [], []
    sub.last = 5
    sub.direct = batching(True, written, writes)
    assert await sub.accept_many([event(6, 5), event(7, 6), event(8, 7)]) == [True] * 3
    assert (writes, sub.last, list(sub.items)) == ([[6, 7, 8]], 8, [])


async def test_a_gap_in_a_backlog_ends_the_direct_run_and_queues_the_rest() -> None:
    sub, written, writes = Subscriber(10), [], []
    sub.last = 5
    sub.direct = batching(True, written, writes)
    # 9 says 8 came before it, and 8 has not reached this process yet
    result = await sub.accept_many([event(6, 5), event(7, 6), event(9, 8), event(10, 9)])
    assert result == [True, True, False, False]
    assert (writes, sub.last) == ([[6, 7]], 7)
    assert [i.seq for i in sub.items] == [9, 10]  # for the stream, which fetches 8 first


async def test_duplicates_in_a_backlog_are_dropped() -> None:
    sub, written, writes = Subscriber(10), [], []
    sub.last = 7
    sub.direct = batching(True, written, writes)
    assert await sub.accept_many([event(6, 5), event(7, 6), event(8, 7)]) == [False, False, True]
    assert (written, sub.last, list(sub.items)) == ([8], 8, [])


async def test_a_busy_socket_gets_the_backlog_queued_in_order() -> None:
    sub, written, writes = Subscriber(10), [], []
    sub.last = 5
    sub.direct = batching(False, written, writes)
    assert await sub.accept_many([event(6, 5), event(7, 6)]) == [False, False]
    assert (written, sub.last) == ([], 5)
    assert [i.seq for i in sub.items] == [6, 7]


async def test_a_resync_while_preparing_a_backlog_queues_it_behind_the_replay() -> None:
    sub, written, writes = Subscriber(10), [], []
    sub.last = 5
    sub.direct = batching(True, written, writes)
    accepting = asyncio.create_task(sub.accept_many([event(6, 5), event(7, 6)]))
    await asyncio.sleep(0)  # preparing the first message
    sub.offer(RESYNC)
    assert await accepting == [False, False]
    assert (written, sub.last) == ([], 5)
    assert [i if i is RESYNC else i.seq for i in sub.items] == [RESYNC, 6, 7]


def made_batching(written: list[int], writes: list[list[int]], *, takes: bool = True,
                  unmade: frozenset[int] = frozenset()) -> Direct:
    """`batching` whose messages are made already, except those of the `unmade` seqs."""
    path = batching(takes, written, writes)
    path.ready = lambda seq: None if seq in unmade else b"message"
    return path


def backlog(*pairs: tuple[int, int]) -> tuple[list[m.Event], list[int], list[int]]:
    """Events from (seq, prev) pairs, with their seqs and prevs as the fan-out reads them."""
    return [event(seq, prev) for seq, prev in pairs], [p[0] for p in pairs], \
        [p[1] for p in pairs]


def test_a_made_backlog_goes_out_in_one_write_at_once() -> None:
    sub, written, writes = Subscriber(10), [], []
    sub.last, sub.direct = 5, made_batching(written, writes)
    assert sub.deliver_many_now(*backlog((6, 5), (7, 6), (8, 7))) == 3
    assert (writes, sub.last, list(sub.items)) == ([[6, 7, 8]], 8, [])


def test_a_made_backlog_stops_where_an_event_is_not_simply_the_next() -> None:
    """The run ends at a duplicate, at a gap and at a message not made yet; what comes
    after is left to `accept_many`, and a socket that can't take the run changes nothing."""
    for pairs, unmade, done, last in [
        ([(6, 5), (7, 6), (9, 8), (10, 9)], frozenset(), 2, 7),  # 9 says 8 came first
        ([(5, 4), (6, 5), (7, 6)], frozenset(), 0, 5),  # 5 was sent already
        ([(6, 5), (7, 6), (8, 7)], frozenset({7}), 1, 6),  # 7 is still rendering
        ([(6, 5), (7, 6), (8, 7)], frozenset({6}), 0, 5),
    ]:
        sub, written, writes = Subscriber(10), [], []
        sub.last, sub.direct = 5, made_batching(written, writes, unmade=unmade)
        assert sub.deliver_many_now(*backlog(*pairs)) == done, pairs
        assert (written, sub.last, list(sub.items)) == ([p[0] for p in pairs[:done]], last, [])
    sub, written, writes = Subscriber(10), [], []
    sub.last, sub.direct = 5, made_batching(written, writes, takes=False)
    assert sub.deliver_many_now(*backlog((6, 5), (7, 6))) == 0
    assert (written, sub.last, list(sub.items)) == ([], 5, [])


async def test_fan_out_many_writes_made_runs_and_queues_the_rest_in_order() -> None:
    from giftgraph.live.hub import Feed, Hub

    hub = Hub("memory://", "postgresql://unused")
    feed, written, writes = Feed(), [], []
    ready = Subscriber(10)
    ready.last, ready.direct = 5, made_batching(written, writes)
    gap = Subscriber(10)  # has not seen 6 yet: 7 and 8 are queued for its stream
    gap.last, gap.direct = 4, made_batching(written, writes)
    feed.subscribers.update([ready, gap])
    rows, _, _ = backlog((6, 5), (7, 6), (8, 7))
    await hub._fan_out_many(feed, rows)
    assert (ready.last, list(ready.items)) == (8, [])
    assert writes == [[6, 7, 8]]  # the other subscriber's went to its queue
    assert gap.last == 4
    assert [i.seq for i in gap.items] == [6, 7, 8]


async def test_fan_out_many_counts_each_events_direct_deliveries() -> None:
    """What the hub reports delivered per event (`on_fanout`, events_delivered_total):
    one per subscriber that took it directly, whether in the leading run or after it."""
    from giftgraph.live.hub import Feed, Hub

    hub = Hub("memory://", "postgresql://unused")
    counted: dict[int, int] = {}
    hub.on_fanout = lambda item, n: counted.__setitem__(item.seq, counted.get(item.seq, 0) + n)
    feed, written, writes = Feed(), [], []
    subscribers = []
    for last, unmade in [(5, frozenset()), (5, frozenset()), (5, frozenset({8})),
                         (6, frozenset()), (4, frozenset())]:
        sub = Subscriber(10)
        sub.last, sub.direct = last, made_batching(written, writes, unmade=unmade)
        subscribers.append(sub)
    feed.subscribers.update(subscribers)
    rows, _, _ = backlog((6, 5), (7, 6), (8, 7))
    await hub._fan_out_many(feed, rows)
    # 6: the three at 5; 7 and 8: those three and the one at 6 (8 of the third one after
    # its run, once made); none to the one at 4 (queued behind its replay)
    assert counted == {6: 3, 7: 4, 8: 4}


async def test_waiting_takes_what_is_queued_and_leaves_the_end_marker() -> None:
    from broadcaster import Event as BroadcastEvent
    from broadcaster._base import Subscriber

    from giftgraph.live.hub import waiting

    queue: asyncio.Queue[Any] = asyncio.Queue()
    source = Subscriber(queue)
    assert waiting(source) == []
    events = [BroadcastEvent("c", str(k)) for k in range(3)]
    for e in events:
        queue.put_nowait(e)
    queue.put_nowait(None)  # broadcaster's "unsubscribed"
    assert waiting(source, limit=2) == events[:2]
    assert waiting(source) == events[2:]
    assert queue.get_nowait() is None  # still there for the next get()


async def test_listen_cancelled_while_joining_leaves_no_feed_behind() -> None:
    """A subscription cancelled while its channel's feed is starting (a client that sends
    `complete` at once; with Redis the start is a network round trip) leaves no feed, no
    pump task and no broker subscription behind."""
    import contextlib

    from giftgraph.live.hub import Hub

    hub = Hub("memory://", "postgresql://unused")
    await hub.connect()
    try:
        entered = asyncio.Event()

        async def listener() -> None:
            async with hub.listen("gg:family:topic"):
                entered.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(listener())
        await asyncio.sleep(0)  # inside the join: the feed exists, its pump not yet ready
        assert "gg:family:topic" in hub.feeds
        pump = hub.feeds["gg:family:topic"].task
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert not entered.is_set()
        await asyncio.sleep(0.05)
        assert hub.feeds == {}
        assert pump is not None
        assert pump.done()
        # The channel still works for the next subscriber.
        task = asyncio.create_task(listener())
        await asyncio.wait_for(entered.wait(), 2)
        assert len(hub.feeds["gg:family:topic"].subscribers) == 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert hub.feeds == {}
    finally:
        await hub.disconnect()


async def test_a_channel_that_starts_slowly_holds_up_no_other_channel() -> None:
    """One channel's start waiting for the broker (a Redis SUBSCRIBE under load) delays
    neither subscribers of a running channel nor the start of another; subscribers of
    the slow channel itself enter only once its pump listens, and then hear it."""
    import contextlib

    from giftgraph.live.hub import Hub

    hub = Hub("memory://", "postgresql://unused")
    await hub.connect()
    gate = asyncio.Event()
    subscribe = hub.backend.subscribe

    async def slow_subscribe(channel: str) -> None:
        if channel == "gg:slow":
            await gate.wait()
        await subscribe(channel)

    hub.backend.subscribe = slow_subscribe  # type: ignore[method-assign]
    entered: dict[str, asyncio.Event] = {}
    heard: dict[str, list[str]] = {}
    tasks = []

    def listen(name: str, key: str) -> asyncio.Event:
        entered[key], heard[key] = asyncio.Event(), []

        async def listener() -> None:
            async with hub.listen(name) as sub:
                entered[key].set()
                while True:
                    heard[key].append((await sub.get())["n"])

        tasks.append(asyncio.create_task(listener()))
        return entered[key]

    try:
        await asyncio.wait_for(listen("gg:running", "r1").wait(), 2)
        listen("gg:slow", "s1")
        listen("gg:slow", "s2")
        await asyncio.sleep(0.05)
        # the slow start under way: others go on, its own subscribers wait
        await asyncio.wait_for(listen("gg:running", "r2").wait(), 1)
        await asyncio.wait_for(listen("gg:other", "o1").wait(), 1)
        assert not entered["s1"].is_set()
        assert not entered["s2"].is_set()
        gate.set()
        await asyncio.wait_for(asyncio.gather(entered["s1"].wait(), entered["s2"].wait()), 2)
        await hub.broadcast.publish("gg:slow", orjson.dumps({"n": "after"}).decode())
        deadline = asyncio.get_running_loop().time() + 2
        while heard["s1"] != ["after"] or heard["s2"] != ["after"]:
            assert asyncio.get_running_loop().time() < deadline, heard
            await asyncio.sleep(0.01)
        assert len(hub.feeds["gg:slow"].subscribers) == 2
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert hub.feeds == {}
        await hub.disconnect()


async def test_dashboard_and_presence_cancelled_while_starting_leave_nothing_behind() -> None:
    """The same for a family's dashboard feed and a presence room: cancelled while its
    worker starts, it is gone, worker and all; the next watcher starts it afresh."""
    import contextlib

    from giftgraph.live.dashboard import DashboardFeeds
    from giftgraph.live.hub import Hub
    from giftgraph.live.presence import PresenceTracker

    hub = Hub("memory://", "postgresql://unused")
    await hub.connect()
    dashboards = DashboardFeeds(hub, None)  # type: ignore[arg-type]  # never computes here
    presences = PresenceTracker(hub, heartbeat=60)
    family = uuid.uuid4()
    try:
        for registry, enter in (
                (dashboards.feeds, lambda: dashboards.watch(family)),
                (presences.rooms, lambda: presences.join(family, "family", uuid.uuid4()))):

            async def watcher(enter: Any = enter) -> None:
                async with enter():
                    await asyncio.sleep(60)

            task = asyncio.create_task(watcher())
            await asyncio.sleep(0)  # inside the start: registered, its worker not ready
            [holder] = registry.values()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.05)
            assert registry == {}
            assert holder.task.done()
        assert hub.feeds == {}  # and so no channel is left listened to
    finally:
        await presences.close()
        await hub.disconnect()


async def test_stopping_a_worker_passes_on_the_callers_own_cancellation() -> None:
    """`stop_worker` waits for the worker to stop and swallows the worker's cancellation,
    but not the caller's: a caller cancelled meanwhile ends cancelled, and the worker still
    stops."""
    from giftgraph.live.workers import stop_worker

    release, stopped = asyncio.Event(), asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()  # a cleanup that takes a while
            stopped.set()

    class Holder:
        task: asyncio.Task[None] | None = None

    registry: dict[str, Holder] = {}
    for cancel_the_caller in (False, True):
        holder = registry["k"] = Holder()
        holder.task = asyncio.create_task(slow_to_stop())
        await asyncio.sleep(0)
        release.clear()
        stopped.clear()
        caller = asyncio.create_task(stop_worker(registry, "k", holder))
        await asyncio.sleep(0)
        assert "k" not in registry
        if cancel_the_caller:
            caller.cancel()
        await asyncio.sleep(0)
        release.set()
        await stopped.wait()
        if cancel_the_caller:
            try:
                await caller
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("the caller's cancellation was swallowed")
            assert caller.cancelled()
        else:
            assert await caller is None
        assert holder.task.done()


async def test_a_plan_offers_finished_renders_only_while_it_keeps_them() -> None:
    """`Plan.ready`: nothing before the render, its bytes after, nothing for a render
    that failed, and nothing once the event has been dropped from the plan's results."""
    import contextlib
    from types import SimpleNamespace

    from giftgraph.accel.render import RESULTS_KEPT
    from giftgraph.accel.render import SharedSelection as Plan

    class Executor:
        def build_per_event_executor(self, row: m.Event) -> Executor:
            self.row = row
            return self

        def execute_operation(self, _: bool) -> Any:
            if self.row.seq == 0:
                raise RuntimeError("render failed")
            return SimpleNamespace(data={"seq": self.row.seq}, errors=None)

    class Scopes:
        @contextlib.asynccontextmanager
        async def use(self, *_: Any) -> Any:
            yield

    plan = Plan(SimpleNamespace(scopes=Scopes(), renders=0, charge=None), Executor(),  # type: ignore[arg-type]
                uuid.uuid4(), lambda e, _: e, lambda row: row)
    assert plan.ready(1) is None
    assert await plan.render(event(1, 0)) == b'{"data":{"seq":1}}'
    assert plan.ready(1) == b'{"data":{"seq":1}}'
    with contextlib.suppress(RuntimeError):
        await plan.render(event(0, 0))
    assert plan.ready(0) is None
    for seq in range(2, RESULTS_KEPT + 2):
        await plan.render(event(seq, seq - 1))
    assert plan.ready(1) is None  # dropped together with its result
    assert plan.ready(RESULTS_KEPT + 1) is not None
    assert set(plan.made) <= set(plan.results)


# -- the fan-out's loop over parked, caught-up subscribers (accel.delivery.write_caught_up) ---

HEAD = b'{"id":"1","type":"next","payload":'


class Transport:
    """What the wire reads and writes of uvloop's transport, recording each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered


def parked(last: int, made_messages: dict[int, bytes]) -> tuple[Subscriber, Transport, Any]:
    """A subscriber at `last` delivered through a real `Parked` and `Wire` (over a fake
    protocol and transport), whose messages of `made_messages` are made; its sink."""
    from types import SimpleNamespace

    from websockets.protocol import State

    from giftgraph.accel.delivery import Parked
    from giftgraph.accel.sockets import DirectSink
    from giftgraph.accel.wire import Flag, Wire

    transport = Transport()
    protocol = SimpleNamespace(transport=transport, close_sent=False, writable=Flag(),
                               conn=SimpleNamespace(state=State.OPEN, extensions=[]))

    async def render(row: m.Event) -> bytes:
        made_messages[row.seq] = b'{"seq":%d}' % row.seq
        return made_messages[row.seq]

    async def send_text(text: str) -> None:
        raise AssertionError("not through the ASGI send here")

    operation = SimpleNamespace(id="1", completed=False, task=asyncio.current_task())
    sink = DirectSink(operation, send_text, Wire(protocol))
    path = Parked.__new__(Parked)
    path.plan, path.sink, path.wire, path.prefix = SimpleNamespace(render=render), sink, \
        sink.wire, HEAD
    path.ready = made_messages.get
    sub = Subscriber(10)
    sub.last, sub.direct = last, path
    return sub, transport, sink


def sent(transport: Transport) -> list[list[bytes]]:
    """Each write's messages (the payloads of its text frames)."""
    from tests.unit.test_wire_lean import _messages

    return [_messages(data) for data in transport.writes]


async def test_the_fan_out_loop_writes_each_caught_up_socket_once_and_hands_back_the_rest(
) -> None:
    """With `write_caught_up` installed, every parked subscriber that is caught up, whose
    message is made and whose socket takes it gets it in one write; each of the others
    (its socket closing, busy, its close sent, its operation stopped, a gap, a queued
    resync, not parked) goes its own way as without it: queued in order, or not at all
    for a stopped operation; and the hub counts only what was written."""
    from giftgraph.accel.delivery import write_caught_up
    from giftgraph.live.hub import Feed, Hub

    hub = Hub("memory://", "postgresql://unused")
    hub.write_caught_up = write_caught_up
    counted: list[int] = []
    hub.on_fanout = lambda item, n: counted.append(n)
    messages = {6: b'{"seq":6}'}
    feed = Feed()
    ready = [parked(5, messages) for _ in range(70)]  # more than two FANOUT_SLICEs
    closing, busy, close_sent, stopped, gap, behind = (parked(last, messages)
                                                      for last in (5, 5, 5, 5, 4, 5))
    closing[1].closing = True
    busy[1].buffered = 300 * 1024
    close_sent[0].direct.wire._protocol.close_sent = True
    stopped[2].stop()
    behind[0].offer(RESYNC)
    plain, plain_written = Subscriber(10), []
    plain.last, plain.direct = 5, made(plain_written)
    others = [closing, busy, close_sent, stopped, gap, behind]
    feed.subscribers.update([s for s, _, _ in [*ready, *others]] + [plain])
    await hub._fan_out(feed, event(6, 5))
    for sub, transport, _ in ready:
        assert (sent(transport), sub.last, list(sub.items)) == (
            [[HEAD + b'{"seq":6}}']], 6, [])
    assert plain_written == [6]  # its own Direct's write (deliver_now)
    for _, transport, _ in others:
        assert transport.writes == []
    for sub, _, _ in (closing, busy, close_sent, stopped, gap):
        assert (sub.last, [i.seq for i in sub.items]) == (sub.last, [6])  # its stream's turn
    assert [i if i is RESYNC else i.seq for i in behind[0].items] == [RESYNC, 6]
    assert counted == [71]


async def test_the_fan_out_loop_writes_a_backlog_in_one_write_or_not_at_all() -> None:
    from giftgraph.accel.delivery import write_caught_up
    from giftgraph.live.hub import Feed, Hub

    hub = Hub("memory://", "postgresql://unused")
    hub.write_caught_up = write_caught_up
    counted: dict[int, int] = {}
    hub.on_fanout = lambda item, n: counted.__setitem__(item.seq, counted.get(item.seq, 0) + n)
    messages = {6: b'{"seq":6}', 7: b'{"seq":7}', 8: b'{"seq":8}'}
    feed = Feed()
    first, second = parked(5, messages), parked(5, messages)
    midway = parked(6, messages)  # has 6: gets 7 and 8 (the hub's path per subscriber)
    gap = parked(4, messages)
    feed.subscribers.update([first[0], second[0], midway[0], gap[0]])
    rows, _, _ = backlog((6, 5), (7, 6), (8, 7))
    await hub._fan_out_many(feed, rows)
    run = [HEAD + b'{"seq":%d}}' % n for n in (6, 7, 8)]
    assert sent(first[1]) == sent(second[1]) == [run]
    assert first[1].writes[0] is second[1].writes[0]  # framed once
    assert (first[0].last, midway[0].last) == (8, 8)
    assert [msg for write in sent(midway[1]) for msg in write] == run[1:]  # in order
    assert (gap[0].last, [i.seq for i in gap[0].items], gap[1].writes) == (4, [6, 7, 8], [])
    assert counted == {6: 2, 7: 3, 8: 3}


async def test_a_runs_messages_are_looked_up_once_per_plan_and_each_subscriber_asks_its_own_first(
) -> None:
    """Subscribers sharing a selection (a plan) share its run of messages; one whose
    plan lacks a message of the run, whose run's first event is not its next one, or
    whose run is not consecutive within itself is handed back whole and written nothing,
    whatever the subscribers before it got."""
    from types import SimpleNamespace

    from giftgraph.accel.delivery import write_caught_up

    whole = {6: b'{"seq":6}', 7: b'{"seq":7}', 8: b'{"seq":8}'}
    partial = {6: b'{"seq":6}', 8: b'{"seq":8}'}  # 7 not made (yet) for this selection
    made_plan, partial_plan = SimpleNamespace(), SimpleNamespace()

    def on(plan: Any, messages: dict[int, bytes], last: int) -> tuple[Subscriber, Transport]:
        sub, transport, _ = parked(last, messages)
        sub.direct.plan = plan
        return sub, transport

    a, b = on(made_plan, whole, 5), on(made_plan, whole, 5)
    c = on(partial_plan, partial, 5)
    d = on(made_plan, whole, 5)
    e = on(made_plan, whole, 6)  # has 6 already: the run's first is not its next
    f = on(made_plan, whole, 5)
    lookups: list[int] = []
    for sub, _ in (a, b, d, e, f):  # every subscriber of the made plan counts its lookups
        sub.direct.ready = lambda seq: lookups.append(seq) or whole.get(seq)
    rest = write_caught_up([s for s, _ in (a, b, c, d, e, f)], [6, 7, 8], [5, 6, 7])
    run = [HEAD + b'{"seq":%d}}' % n for n in (6, 7, 8)]
    for sub, transport in (a, b, d, f):
        assert (sent(transport), sub.last) == ([run], 8)
    assert rest == [c[0], e[0]]
    assert (c[1].writes, c[0].last, e[1].writes, e[0].last) == ([], 5, [], 6)
    # the made plan's run worked out again only after the other plan's subscriber
    assert lookups == [6, 7, 8, 6, 7, 8]
    # a run with a gap inside it (7 names 6, 9 names 8, which is not in it)
    g = on(made_plan, {6: b"x", 7: b"y", 9: b"z"}, 5)
    assert write_caught_up([g[0]], [6, 7, 9], [5, 6, 8]) == [g[0]]
    assert (g[1].writes, g[0].last) == ([], 5)


async def test_a_dropped_operation_stops_its_sink_and_wire_before_its_task_is_cancelled() -> None:
    """`DirectOperations.cleanup_operation` (the client's `complete`, the socket's end):
    the fan-out's loop asks the wire, not the operation's task, so the sink is stopped
    first, and Strawberry's own cleanup (cancelling the task) still runs."""
    from giftgraph.accel.sockets import direct_operations

    class Base:
        def __init__(self) -> None:
            self.cleaned: list[str] = []

        async def cleanup_operation(self, operation_id: str) -> None:
            self.cleaned.append(operation_id)

    handler = direct_operations(Base)()
    _, transport, sink = parked(5, {6: b"{}"})
    handler.sinks["1"] = sink
    assert sink.wire.put(HEAD, b"{}")
    await handler.cleanup_operation("1")
    await handler.cleanup_operation("2")  # none running: nothing to stop
    assert handler.cleaned == ["1", "2"]
    assert sink.stopped
    assert sink.closed
    assert sink.wire.stopped
    assert not sink.wire.put(HEAD, b"{}")
    assert not sink.wire.put_many(HEAD, [b"{}"])
    assert len(transport.writes) == 1


async def test_a_few_sockets_get_a_new_message_from_the_loop_once_the_first_has_made_it(
) -> None:
    """An event's message is made by the first subscriber that renders it (its own path);
    the loop then writes it to the others of the slice (a family's few sockets), once
    each, in one pass more."""
    from giftgraph.accel.delivery import write_caught_up
    from giftgraph.live.hub import Feed, Hub

    hub = Hub("memory://", "postgresql://unused")
    by_loop: list[Subscriber] = []

    def counting(subs: list[Subscriber], seqs: list[int],
                 prevs: list[int]) -> list[Subscriber]:
        rest = write_caught_up(subs, seqs, prevs)
        by_loop.extend(s for s in subs if s not in rest)
        return rest

    hub.write_caught_up = counting
    counted: list[int] = []
    hub.on_fanout = lambda item, n: counted.append(n)
    messages: dict[int, bytes] = {}  # nothing made yet
    feed = Feed()
    family = [parked(5, messages) for _ in range(5)]
    feed.subscribers.update(s for s, _, _ in family)
    await hub._fan_out(feed, event(6, 5))
    for sub, transport, _ in family:
        assert ([m for w in sent(transport) for m in w], sub.last) == (
            [HEAD + b'{"seq":6}}'], 6)
    assert len(by_loop) == 4
    assert counted == [5]
