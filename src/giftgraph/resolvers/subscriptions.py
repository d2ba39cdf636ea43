"""Subscriptions: topic streams of Events with gap-free `since` resume."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any

import strawberry

from giftgraph.context import Info
from giftgraph.db import models as m
from giftgraph.errors import NotFound
from giftgraph.events import (
    FAMILY_TOPIC,
    LIST_ITEMS_TOPIC,
    comments_topic,
    list_topic,
    occasion_topic,
    person_topic,
)
from giftgraph.ids import decode_id
from giftgraph.live import Hub, event_stream
from giftgraph.schema.enums import CommentTarget
from giftgraph.schema.types import TARGET_TYPES, Event


async def _stream(info: Info, topic: str, since: str | None) -> AsyncGenerator[Event, None]:
    ctx = info.context
    hub: Hub | None = ctx.hub
    assert hub is not None, "the live hub is started by the app's lifespan"
    await ctx.db.close()  # hold no connection while waiting for events
    async for row in event_stream(ctx, hub, topic, since):
        yield Event.from_model(row)


async def _require(info: Info, loader: Any, gid: str, type_name: str) -> uuid.UUID:
    info.context.require_user()
    pk = decode_id(gid, type_name)
    if await loader.load(pk) is None:
        raise NotFound(type_name)
    return pk


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Every change in my family.")
    async def family_events(self, info: Info,
                            since: str | None = None) -> AsyncGenerator[Event, None]:
        info.context.require_user()
        async for e in _stream(info, FAMILY_TOPIC, since):
            yield e

    @strawberry.subscription(description="Changes to a list and its items (topic list:{id}).")
    async def list_events(self, info: Info, list_id: strawberry.ID,
                          since: str | None = None) -> AsyncGenerator[Event, None]:
        pk = await _require(info, info.context.loaders.gift_list, list_id, "GiftList")
        async for e in _stream(info, list_topic(pk), since):
            yield e

    @strawberry.subscription(description="Lists and items for an occasion (occasion:{id}).")
    async def occasion_events(self, info: Info, occasion_id: strawberry.ID,
                              since: str | None = None) -> AsyncGenerator[Event, None]:
        pk = await _require(info, info.context.loaders.occasion, occasion_id, "Occasion")
        async for e in _stream(info, occasion_topic(pk), since):
            yield e

    @strawberry.subscription(description="A person and the gifts planned for them (person:{id}).")
    async def person_events(self, info: Info, person_id: strawberry.ID,
                            since: str | None = None) -> AsyncGenerator[Event, None]:
        pk = await _require(info, info.context.loaders.person, person_id, "Person")
        async for e in _stream(info, person_topic(pk), since):
            yield e

    @strawberry.subscription(description="Every list item change in my family.")
    async def list_item_events(self, info: Info,
                               since: str | None = None) -> AsyncGenerator[Event, None]:
        info.context.require_user()
        async for e in _stream(info, LIST_ITEMS_TOPIC, since):
            yield e

    @strawberry.subscription(description="Comments on one target (comments:{target}:{id}).")
    async def comment_events(self, info: Info, target: CommentTarget, target_id: strawberry.ID,
                             since: str | None = None) -> AsyncGenerator[Event, None]:
        from giftgraph.resolvers.comments import _target_exists

        info.context.require_user()
        await _target_exists(info, m.CommentTarget(target), target_id)
        topic = comments_topic(m.CommentTarget(target), target_id)
        async for e in _stream(info, topic, since):
            yield e


__all__ = ["TARGET_TYPES", "Subscription"]
