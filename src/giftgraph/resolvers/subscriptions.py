"""Subscriptions: topic event streams (gap-free `since`), the live dashboard, presence."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated

import strawberry

from giftgraph.accel.delivery import park, park_dashboard
from giftgraph.context import Info
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
from giftgraph.live.layer import Live
from giftgraph.live.streams import count_delivered, counting_active, event_stream, stray
from giftgraph.resolvers.queries import PART_OF, Dashboard
from giftgraph.schema.arguments import Since
from giftgraph.schema.enums import CommentTarget
from giftgraph.schema.lookahead import selected_fields
from giftgraph.schema.types import TARGET_TYPES, Event, Presence, User

TOPIC_TYPES = {"list": "GiftList", "person": "Person", "occasion": "Occasion"}
TOPIC_BUILDERS = {"list": list_topic, "person": person_topic, "occasion": occasion_topic}
TOPIC = re.compile(r"(list|person|occasion):([A-Za-z0-9_-]+)|"
                   r"comments:(LIST|LIST_ITEM|GIFT|PERSON|OCCASION):([A-Za-z0-9_-]+)")


def _live(info: Info) -> Live:
    return Live.of(info.context)


async def _events(info: Info, topic: str, since: str | None) -> AsyncGenerator[Event, None]:
    ctx = info.context
    live = _live(info)
    _idle(info)
    await ctx.db.close()  # hold no connection while waiting for events
    if park(info, live, topic, since, Event.from_model):
        return  # the socket handler runs it (giftgraph.accel.delivery)
    # Closed when this ends, however it ends: a replaying stream holds its socket's replay
    # turn (streams.event_stream), which the socket's other replays wait for.
    with counting_active(ctx.metrics):
        async with aclosing(event_stream(ctx, live.hub, live.scopes, topic, since)) as rows:
            async for row in rows:
                count_delivered(ctx.metrics, row)
                yield Event.from_model(row)


def _idle(info: Info) -> None:
    """Forget the subscribe step's DataLoaders (and their caches): a subscription may wait
    for hours, and events resolve in shared scopes of their own."""
    info.context.operation.release()


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


SUBSCRIPTION_DESCRIPTION = (
    "Live updates over the WebSocket at /graphql (graphql-transport-ws, the access token in "
    "connection_init), of the caller's family only. An event subscription that falls too far "
    "behind ends with RATE_LIMITED and extensions.resumeSince: subscribe again with that "
    "`since`.")


@strawberry.type(description=SUBSCRIPTION_DESCRIPTION)
class Subscription:
    @strawberry.subscription(description="Every change in my family.")
    async def family_events(self, info: Info,
                            since: Since = None) -> AsyncGenerator[Event, None]:
        info.context.require_user()
        async for e in _events(info, FAMILY_TOPIC, since):
            yield e

    @strawberry.subscription(description="Changes to a list and its items (topic list:{id}).")
    async def list_events(
        self, info: Info,
        list_id: Annotated[strawberry.ID, strawberry.argument(
            description="A list of your family (any other ID: NOT_FOUND).")],
        since: Since = None,
    ) -> AsyncGenerator[Event, None]:
        topic = list_topic(await _exists(info, list_id, "GiftList"))
        async for e in _events(info, topic, since):
            yield e

    @strawberry.subscription(description="Lists and items for an occasion (occasion:{id}).")
    async def occasion_events(
        self, info: Info,
        occasion_id: Annotated[strawberry.ID, strawberry.argument(
            description="An occasion of your family (any other ID: NOT_FOUND).")],
        since: Since = None,
    ) -> AsyncGenerator[Event, None]:
        topic = occasion_topic(await _exists(info, occasion_id, "Occasion"))
        async for e in _events(info, topic, since):
            yield e

    @strawberry.subscription(description="A person and the gifts planned for them (person:{id}).")
    async def person_events(
        self, info: Info,
        person_id: Annotated[strawberry.ID, strawberry.argument(
            description="A person of your family (any other ID: NOT_FOUND).")],
        since: Since = None,
    ) -> AsyncGenerator[Event, None]:
        topic = person_topic(await _exists(info, person_id, "Person"))
        async for e in _events(info, topic, since):
            yield e

    @strawberry.subscription(description="Every list item change in my family.")
    async def list_item_events(self, info: Info,
                               since: Since = None) -> AsyncGenerator[Event, None]:
        info.context.require_user()
        async for e in _events(info, LIST_ITEMS_TOPIC, since):
            yield e

    @strawberry.subscription(description="Comments on one target (comments:{target}:{id}).")
    async def comment_events(self, info: Info,
                             target: Annotated[CommentTarget, strawberry.argument(
                                 description="What kind of object the comments are about.")],
                             target_id: Annotated[strawberry.ID, strawberry.argument(
                                 description="That object's global ID, of the type `target` "
                                             "names (any other ID: NOT_FOUND).")],
                             since: Since = None) -> AsyncGenerator[Event, None]:
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
        parts = {PART_OF[name] for name in selected_fields(info) if name in PART_OF}
        if park_dashboard(info, live, family_id, parts):
            return  # the socket handler runs it (giftgraph.accel.delivery)
        with counting_active(info.context.metrics):
            try:
                async with live.dashboards.watch(family_id, parts) as (snapshot, mailbox):
                    while True:
                        async with live.scopes.use(("dashboard", family_id,
                                                    snapshot.version), family_id):
                            yield snapshot.dashboard  # type: ignore[misc]
                        snapshot = await mailbox.get()
            except asyncio.CancelledError as exc:
                if not stray():
                    raise
                raise RuntimeError("a shared render was cancelled") from exc

    @strawberry.subscription(description="Who is watching a topic right now (join, leave, "
                             "disconnect; across instances).")
    async def presence(
        self, info: Info,
        topic: Annotated[str, strawberry.argument(
            description="family, list-items:all, or list:{id}, occasion:{id}, person:{id} or "
                        "comments:{target}:{id} naming an object of your family (else "
                        "NOT_FOUND); any other form is BAD_USER_INPUT.")],
    ) -> AsyncGenerator[Presence, None]:
        user = info.context.require_user()
        topic = await _check_topic(info, topic)
        live = _live(info)
        _idle(info)
        await info.context.db.close()
        with counting_active(info.context.metrics):
            async with live.presence.join(user.family_id, topic, user.id) as viewers:
                while True:
                    ids = await viewers.get()
                    async with live.scopes.use(("presence", user.family_id, topic, ids),
                                               user.family_id):
                        rows = await info.context.loaders.user.load_many(sorted(ids))
                        yield Presence(topic=topic, viewers=[
                            User.from_model(r) for r in rows if r is not None])
