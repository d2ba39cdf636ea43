"""Subscriptions: topic event streams (gap-free `since`), the live dashboard, presence."""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import AsyncGenerator
from contextlib import AbstractContextManager, aclosing, nullcontext
from typing import Any

import orjson
import strawberry
from graphql import GraphQLError
from starlette.websockets import WebSocketDisconnect

from giftgraph.context import Context, Info
from giftgraph.db import models as m
from giftgraph.errors import BadInput, NotFound
from giftgraph.events import (
    FAMILY_TOPIC,
    LIST_ITEMS_TOPIC,
    comments_topic,
    list_topic,
    occasion_topic,
    person_topic,
)
from giftgraph.ids import decode_id, encode_id
from giftgraph.live import Live, event_stream
from giftgraph.live.hub import Direct
from giftgraph.live.render import DIRECT_SINK, DirectSink, Plan
from giftgraph.observability import Metrics
from giftgraph.resolvers.queries import Dashboard
from giftgraph.schema.enums import CommentTarget
from giftgraph.schema.extensions import format_error
from giftgraph.schema.types import TARGET_TYPES, Event, Presence, User

TOPIC_TYPES = {"list": "GiftList", "person": "Person", "occasion": "Occasion"}
TOPIC_BUILDERS = {"list": list_topic, "person": person_topic, "occasion": occasion_topic}
TOPIC = re.compile(r"(list|person|occasion):([A-Za-z0-9_-]+)|"
                   r"comments:(LIST|LIST_ITEM|GIFT|PERSON|OCCASION):([A-Za-z0-9_-]+)")


def _live(info: Info) -> Live:
    live = info.context.live
    assert live is not None, "the live layer is started by the app's lifespan"
    return live


async def _events(info: Info, topic: str, since: str | None) -> AsyncGenerator[Event, None]:
    ctx = info.context
    live = _live(info)
    _idle(info)
    await ctx.db.close()  # hold no connection while waiting for events
    sink = DIRECT_SINK.get()
    plan = None
    if sink is not None:
        plan = live.renderer.plan(info, sink.operation.variables, ctx.family_id, format_error,
                                  Event.from_model)
    if sink is not None and plan is not None:
        # The shared path, parked: this generator ends without a result, and the socket
        # handler runs the stream once Strawberry's execution is over. An idle subscription
        # then holds the stream's own state, not the operation's extension hooks,
        # graphql-core context and generators (~10 of its ~20 KB).
        # Interned: thousands of subscriptions to one topic share its string.
        sink.park = _Parked(ctx, live, sys.intern(topic), since, plan, sink).run
        return
    # Closed when this ends, however it ends: a replaying stream holds its socket's replay
    # turn (streams.event_stream), which the socket's other replays wait for.
    with _active(ctx.metrics):
        async with aclosing(event_stream(ctx, live.hub, live.scopes, topic, since)) as rows:
            async for row in rows:
                _delivered(ctx.metrics, row)
                yield Event.from_model(row)


class _Parked:
    """A parked event subscription (`run`): each event rendered once per selection (`plan`)
    and written by the hub itself while the stream is caught up (`write`, `write_many`), or
    from here otherwise. An error ends it with a `next` carrying the error, formatted as
    Strawberry would have (the socket handler then sends `complete`). One slotted object
    rather than a closure per writer and a partial: an idle subscription holds it."""

    __slots__ = ("ctx", "live", "plan", "prefix", "since", "sink", "topic", "wire")

    def __init__(self, ctx: Context, live: Live, topic: str, since: str | None, plan: Plan,
                 sink: DirectSink) -> None:
        self.ctx, self.live, self.topic, self.since = ctx, live, topic, since
        self.plan, self.sink = plan, sink
        self.prefix, self.wire = sink.prefix(), sink.wire

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
        direct = Direct(plan.render, self.write, self.write_many, plan.ready) \
            if self.wire is not None else None
        try:
            with _active(ctx.metrics):
                async with aclosing(event_stream(ctx, live.hub, live.scopes, self.topic,
                                                 self.since, scoped=False,
                                                 direct=direct)) as rows:
                    async for row in rows:
                        payload = await plan.render(row)
                        if sink.closed:
                            continue
                        if not self.write(row, payload):
                            await _send_or_wait(sink, self.prefix + payload + b"}")
                        _delivered(ctx.metrics, row)
        except Exception as exc:  # as Strawberry ends a subscription whose source failed
            error = format_error(exc if isinstance(exc, GraphQLError)
                                 else GraphQLError(str(exc), original_error=exc), ctx.trace_id)
            code = (error.extensions or {}).get("code")
            if ctx.metrics is not None and isinstance(code, str):
                ctx.metrics.errors.labels(code).inc()
            if not sink.closed:
                message = {"id": sink.operation.id, "type": "next",
                           "payload": {"data": None, "errors": [error.formatted]}}
                await _send_or_wait(sink, orjson.dumps(message))


async def _send_or_wait(sink: DirectSink, message: bytes) -> None:
    """Send through the ASGI `send` (waits while the socket drains); if the socket is gone,
    wait for the connection's shutdown to cancel this task."""
    try:
        await sink.send_text(message.decode())
    except (WebSocketDisconnect, RuntimeError, OSError):
        await asyncio.get_running_loop().create_future()


def _idle(info: Info) -> None:
    """Forget the subscribe step's DataLoaders (and their caches): a subscription may wait
    for hours, and events resolve in shared scopes of their own."""
    info.context.operation.release()


def _delivered(metrics: Metrics | None, row: m.Event) -> None:
    if metrics is not None:
        metrics.delivered(row.at)


def _active(metrics: Metrics | None) -> AbstractContextManager[Any]:
    """Counts the subscription in the active-subscriptions gauge while it runs."""
    return metrics.subscriptions_active.track_inprogress() if metrics else nullcontext()


async def _exists(info: Info, gid: str, type_name: str) -> uuid.UUID:
    """The entity's UUID if it is the caller's family's; otherwise NOT_FOUND."""
    from giftgraph.resolvers.queries import node

    pk = decode_id(gid, type_name)
    if await node(info, strawberry.ID(gid)) is None:
        raise NotFound(type_name)
    return pk


async def _comments_topic(info: Info, target: m.CommentTarget, target_id: str) -> str:
    """The topic of comments on an entity of the caller's family (otherwise NOT_FOUND),
    built from its decoded ID: the very string the events are published on."""
    from giftgraph.resolvers.comments import _target_exists

    pk = await _target_exists(info, target, target_id)
    return comments_topic(target, encode_id(TARGET_TYPES[target], pk))


async def _check_topic(info: Info, topic: str) -> str:
    """A topic the caller may watch (its family's, naming an entity of its family), in the
    form its events are published on."""
    if topic in (FAMILY_TOPIC, LIST_ITEMS_TOPIC):
        return topic
    match = TOPIC.fullmatch(topic)
    if match is None:
        raise BadInput({"topic": "not a known topic"})
    kind, gid, target, target_id = match.groups()
    if kind:
        pk = await _exists(info, gid, TOPIC_TYPES[kind])
        return TOPIC_BUILDERS[kind](pk)
    return await _comments_topic(info, m.CommentTarget(target), target_id)


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Every change in my family.")
    async def family_events(self, info: Info,
                            since: str | None = None) -> AsyncGenerator[Event, None]:
        info.context.require_user()
        async for e in _events(info, FAMILY_TOPIC, since):
            yield e

    @strawberry.subscription(description="Changes to a list and its items (topic list:{id}).")
    async def list_events(self, info: Info, list_id: strawberry.ID,
                          since: str | None = None) -> AsyncGenerator[Event, None]:
        topic = list_topic(await _exists(info, list_id, "GiftList"))
        async for e in _events(info, topic, since):
            yield e

    @strawberry.subscription(description="Lists and items for an occasion (occasion:{id}).")
    async def occasion_events(self, info: Info, occasion_id: strawberry.ID,
                              since: str | None = None) -> AsyncGenerator[Event, None]:
        topic = occasion_topic(await _exists(info, occasion_id, "Occasion"))
        async for e in _events(info, topic, since):
            yield e

    @strawberry.subscription(description="A person and the gifts planned for them (person:{id}).")
    async def person_events(self, info: Info, person_id: strawberry.ID,
                            since: str | None = None) -> AsyncGenerator[Event, None]:
        topic = person_topic(await _exists(info, person_id, "Person"))
        async for e in _events(info, topic, since):
            yield e

    @strawberry.subscription(description="Every list item change in my family.")
    async def list_item_events(self, info: Info,
                               since: str | None = None) -> AsyncGenerator[Event, None]:
        info.context.require_user()
        async for e in _events(info, LIST_ITEMS_TOPIC, since):
            yield e

    @strawberry.subscription(description="Comments on one target (comments:{target}:{id}).")
    async def comment_events(self, info: Info, target: CommentTarget, target_id: strawberry.ID,
                             since: str | None = None) -> AsyncGenerator[Event, None]:
        topic = await _comments_topic(info, m.CommentTarget(target), target_id)
        async for e in _events(info, topic, since):
            yield e

    @strawberry.subscription(description="A snapshot now, then after changes (at most one per "
                             "250 ms per family), shared by the family's dashboards.")
    async def dashboard(self, info: Info) -> AsyncGenerator[Dashboard, None]:
        family_id = info.context.family_id
        live = _live(info)
        _idle(info)
        await info.context.db.close()
        with _active(info.context.metrics):
            async with live.dashboards.watch(family_id) as (snapshot, mailbox):
                while True:
                    async with live.scopes.use(("dashboard", family_id, snapshot.version),
                                               family_id):
                        yield snapshot.dashboard  # type: ignore[misc]
                    snapshot = await mailbox.get()

    @strawberry.subscription(description="Who is watching a topic right now (join, leave, "
                             "disconnect; across instances).")
    async def presence(self, info: Info, topic: str) -> AsyncGenerator[Presence, None]:
        user = info.context.require_user()
        topic = await _check_topic(info, topic)
        live = _live(info)
        _idle(info)
        await info.context.db.close()
        with _active(info.context.metrics):
            async with live.presence.join(user.family_id, topic, user.id) as viewers:
                while True:
                    ids = await viewers.get()
                    async with live.scopes.use(("presence", user.family_id, topic, ids),
                                               user.family_id):
                        rows = await info.context.loaders.user.load_many(sorted(ids))
                        yield Presence(topic=topic, viewers=[
                            User.from_model(r) for r in rows if r is not None])
