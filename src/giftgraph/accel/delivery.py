"""Parked event and dashboard subscriptions and their direct delivery: each event rendered once per
selection (giftgraph.accel.render) and written to the socket by the hub itself while the
subscriber is caught up (`live.subscriber.DirectDelivery`), pre-framed (giftgraph.accel.wire).

`park` is called by an event subscription's resolver: it parks the subscription when the
socket handler runs it with a `DirectSink` (giftgraph.accel.sockets) and its selection can
be shared; otherwise the resolver yields its events (the plain path).
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import orjson
from graphql import GraphQLError
from starlette.websockets import WebSocketDisconnect

from giftgraph.accel.render import SharedSelection
from giftgraph.accel.sockets import DIRECT_SINK, DirectSink
from giftgraph.context import Context
from giftgraph.db import models as m
from giftgraph.live.layer import Live
from giftgraph.live.streams import count_delivered, counting_active, event_stream, stray
from giftgraph.live.subscriber import Subscriber, in_order
from giftgraph.schema.extensions import format_error


def park(info: Any, live: Live, topic: str, since: str | None,
         to_root: Callable[[m.Event], Any]) -> bool:
    """Park this event subscription if it runs on the direct socket handler and its
    selection can be shared: its resolver then ends without a result, and the socket
    handler runs the stream once Strawberry's execution is over. An idle subscription then
    holds the stream's own state, not the operation's extension hooks, graphql-core
    context and generators. False: the resolver yields the events itself."""
    sink = DIRECT_SINK.get()
    if sink is None:
        return False
    ctx = info.context
    plan = live.renderer.plan(info, sink.operation.variables, ctx.family_id, format_error,
                              to_root)
    if plan is None:
        return False
    # Interned: thousands of subscriptions to one topic share its string.
    sink.park = Parked(ctx, live, sys.intern(topic), since, plan, sink).run
    return True


def write_caught_up(subs: list[Subscriber], seqs: list[int],
                    prevs: list[int]) -> list[Subscriber]:
    """The hub's fan-out of a run of consecutive events of one channel (`seqs`, `prevs`:
    theirs) to a slice of its subscribers (`Hub.write_caught_up`), in one loop: each parked
    subscriber that is caught up (nothing queued, every event of the run simply the next
    one), whose messages are made already and whose socket takes them now (`Wire.put`) gets
    the run in one write. The others are returned, untouched, for the hub's path per
    subscriber (`Subscriber.deliver_now`, `accept`): the checks are theirs, read off the
    subscriber, its `Parked` and its wire only (no calls through the subscriber's direct
    delivery, no operation task asked), for a few cache lines per socket."""
    rest: list[Subscriber] = []
    if len(seqs) == 1:  # a single event: the common case
        seq, prev = seqs[0], prevs[0]
        for sub in subs:
            direct = sub.direct
            if (type(direct) is Parked and not sub.items and in_order(seq, prev, sub.last)
                    and (message := direct.ready(seq)) is not None
                    and (wire := direct.wire) is not None and wire.put(direct.prefix, message)):
                sub.last = seq
            else:
                rest.append(sub)
        return rest
    # A run's messages depend on the subscriber's selection only (its plan), and whether
    # each event after the first is simply the next one depends on the run only: both are
    # worked out once per plan (`_run_of`), not once per subscriber; a subscriber asks only
    # whether the run's first event is its next one.
    seq, prev = seqs[0], prevs[0]
    plan: SharedSelection | None = None
    messages: list[bytes] = []
    whole = False
    for sub in subs:
        direct = sub.direct
        if (type(direct) is Parked and not sub.items and (wire := direct.wire) is not None
                and in_order(seq, prev, sub.last)):
            if direct.plan is not plan:
                plan = direct.plan
                messages = _run_of(direct.ready, seqs, prevs)
                whole = len(messages) == len(seqs)
            if whole and wire.put_many(direct.prefix, messages):
                sub.last = seqs[-1]
                continue
        rest.append(sub)
    return rest


def _run_of(ready: Callable[[int], bytes | None], seqs: list[int],
            prevs: list[int]) -> list[bytes]:
    """The messages (`ready`: one plan's) of the leading part of a run of events in which
    each is made already and each after the first is simply the next one after the one
    before it."""
    messages: list[bytes] = []
    for i, seq in enumerate(seqs):
        if (i and not in_order(seq, prevs[i], seqs[i - 1])) \
                or (message := ready(seq)) is None:
            break
        messages.append(message)
    return messages


class Parked:
    """A parked event subscription (`run`): each event rendered once per selection (`plan`)
    and written by the hub itself while the stream is caught up (it is the hub's
    `DirectDelivery`), or from here otherwise. An error ends it with a `next` carrying the
    error, formatted as Strawberry would have (the socket handler then sends `complete`).
    One slotted object rather than closures and bound methods: an idle subscription holds
    it (and one bound method, `ready`, the plan's dict's `get`: the fan-out calls it for
    every subscriber of every event)."""

    __slots__ = ("ctx", "live", "plan", "prefix", "ready", "since", "sink", "topic", "wire")

    def __init__(self, ctx: Context, live: Live, topic: str, since: str | None,
                 plan: SharedSelection, sink: DirectSink) -> None:
        self.ctx, self.live, self.topic, self.since = ctx, live, topic, since
        self.plan, self.sink = plan, sink
        self.prefix, self.wire = sink.prefix(), sink.wire
        # The hub's `ready(seq)`: the message of an event the plan has made already, or
        # None; the plan's own dict's `get`, called once per subscriber of every event.
        self.ready = plan.made.get

    # The hub's direct delivery (`live.subscriber.DirectDelivery`) while caught up.

    def prepare(self, row: m.Event) -> Awaitable[bytes]:
        return self.plan.render(row)

    def write(self, row: m.Event, payload: bytes) -> bool:
        """Now or never (the hub's path, which counts its deliveries): False when the
        socket can't take it."""
        wire = self.wire
        return wire is not None and not self.sink.closed \
            and wire.write_text(self.prefix, payload, b"}")

    def write_many(self, rows: list[m.Event], payloads: list[bytes]) -> bool:
        wire = self.wire
        return wire is not None and not self.sink.closed \
            and wire.write_texts(self.prefix, payloads, b"}")

    async def run(self) -> None:
        ctx, live, plan, sink = self.ctx, self.live, self.plan, self.sink
        # Direct delivery by the hub needs the pre-framed wire (uvicorn, no deflate):
        # anywhere else every event comes through this task, in order.
        direct = self if self.wire is not None else None
        try:
            with counting_active(ctx.metrics):
                async with aclosing(event_stream(ctx, live.hub, live.scopes, self.topic,
                                                 self.since, scoped=False,
                                                 direct=direct)) as rows:
                    async for row in rows:
                        payload = await plan.render(row)
                        if sink.closed:
                            continue
                        if not self.write(row, payload):
                            await send_or_wait(sink, self.prefix + payload + b"}")
                        count_delivered(ctx.metrics, row)
        except Exception as exc:  # as Strawberry ends a subscription whose source failed
            await send_error(ctx, sink, exc)
        except asyncio.CancelledError:
            if not stray():
                raise
            await send_error(ctx, sink, RuntimeError("a shared render was cancelled"))


def park_dashboard(info: Any, live: Live, family_id: uuid.UUID, parts: set[str]) -> bool:
    """`park` for the dashboard subscription: each snapshot rendered once per selection
    and family, written to every watcher with that selection. False: the resolver yields
    its snapshots itself."""
    sink = DIRECT_SINK.get()
    if sink is None:
        return False
    plan = live.renderer.plan(info, sink.operation.variables, family_id, format_error,
                              _itself)
    if plan is None:
        return False
    sink.park = ParkedDashboard(info.context, live, family_id, parts, plan, sink).run
    return True


def _itself(value: Any) -> Any:
    return value


class ParkedDashboard:
    """A parked dashboard subscription (`run`): the family's snapshot now, then each next
    one (`DashboardFeeds.watch`), as the plain resolver yields them."""

    __slots__ = ("ctx", "family_id", "live", "parts", "plan", "sink")

    def __init__(self, ctx: Context, live: Live, family_id: uuid.UUID, parts: set[str],
                 plan: SharedSelection, sink: DirectSink) -> None:
        self.ctx, self.live, self.family_id, self.parts = ctx, live, family_id, parts
        self.plan, self.sink = plan, sink

    async def run(self) -> None:
        ctx, plan, sink = self.ctx, self.plan, self.sink
        prefix = sink.prefix()
        try:
            with counting_active(ctx.metrics):
                async with self.live.dashboards.watch(self.family_id, self.parts) \
                        as (snapshot, mailbox):
                    while True:
                        payload = await plan.render_snapshot(snapshot.version,
                                                             snapshot.dashboard)
                        wire = sink.wire
                        if not sink.closed and (wire is None or not wire.write_text(
                                prefix, payload, b"}")):
                            await send_or_wait(sink, prefix + payload + b"}")
                        snapshot = await mailbox.get()
        except Exception as exc:  # as Strawberry ends a subscription whose source failed
            await send_error(ctx, sink, exc)
        except asyncio.CancelledError:
            if not stray():
                raise
            await send_error(ctx, sink, RuntimeError("a shared render was cancelled"))


async def send_error(ctx: Context, sink: DirectSink, exc: Exception) -> None:
    """End a parked subscription with a `next` carrying the error, formatted as Strawberry
    would have (the socket handler then sends `complete`)."""
    error = format_error(exc if isinstance(exc, GraphQLError)
                         else GraphQLError(str(exc), original_error=exc), ctx.trace_id)
    code = (error.extensions or {}).get("code")
    if ctx.metrics is not None and isinstance(code, str):
        ctx.metrics.errors.labels(code).inc()
    if not sink.closed:
        message = {"id": sink.operation.id, "type": "next",
                   "payload": {"data": None, "errors": [error.formatted]}}
        await send_or_wait(sink, orjson.dumps(message))


async def send_or_wait(sink: DirectSink, message: bytes) -> None:
    """Send through the ASGI `send` (waits while the socket drains); if the socket is gone,
    wait for the connection's shutdown to cancel this task."""
    text = message.decode()
    del message  # while it waits, the text alone is held
    try:
        await sink.send_text(text)
    except (WebSocketDisconnect, RuntimeError, OSError):
        await asyncio.get_running_loop().create_future()
