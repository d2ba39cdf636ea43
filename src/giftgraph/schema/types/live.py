"""The GraphQL types that subscriptions deliver: events (with the node each one carries)
and presence."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import strawberry

from giftgraph.context import Info
from giftgraph.db import models as m
from giftgraph.ids import encode_id, event_id
from giftgraph.schema.enums import EventKind
from giftgraph.schema.loaders import MaybeAwaitable
from giftgraph.schema.types.comments import Comment
from giftgraph.schema.types.entities import (
    Family,
    Gift,
    GiftList,
    ListItem,
    Node,
    Occasion,
    Person,
    User,
    user_of,
)

NODE_TYPES: dict[str, Any] = {
    "Family": Family, "User": User, "Person": Person, "Occasion": Occasion,
    "GiftList": GiftList, "Gift": Gift, "ListItem": ListItem, "Comment": Comment,
}


def to_node(entity_type: str, row: Any) -> Node:
    return NODE_TYPES[entity_type].from_model(row)  # type: ignore[no-any-return]


@strawberry.type(description="One change in the family's activity log, as recorded on one "
                              "topic: a change is recorded once per topic that hears of it.")
class Event(Node):
    seq: str = strawberry.field(
        description="The family's event counter (1, 2, 3, ... in commit order, as a "
                    "string): pass the last one received as `since` to resume a "
                    "subscription.")
    topic: str = strawberry.field(
        description="Where it was published: family, list:{id}, occasion:{id}, person:{id}, "
                    "list-items:all or comments:{target}:{id}.")
    kind: EventKind = strawberry.field(description="What happened.")
    entity_type: str = strawberry.field(
        description="The GraphQL type of the changed object, e.g. ListItem.")
    entity_id: strawberry.ID = strawberry.field(
        description="The changed object's global ID (still set after DELETED).")
    at: datetime = strawberry.field(description="When the change was made (UTC).")
    actor_id: strawberry.Private[uuid.UUID | None]
    payload: strawberry.Private[dict[str, Any] | None]

    @classmethod
    def from_model(cls, r: m.Event) -> Event:
        return cls(id=strawberry.ID(event_id(r.family_id, r.seq)), seq=str(r.seq),
                   topic=r.topic, kind=r.kind, entity_type=r.entity_type,
                   entity_id=strawberry.ID(encode_id(r.entity_type, r.entity_id)), at=r.at,
                   actor_id=r.actor_id, payload=r.payload)

    @strawberry.field(graphql_type=User | None,
                      description="Who made the change; null for signUp's or once the "
                                  "member was deleted.")
    def actor(self, info: Info) -> MaybeAwaitable[User | None]:
        return user_of(info, self.actor_id)

    @strawberry.field(
        description="The entity as it was right after the change; null after DELETED.")
    def node(self) -> Node | None:
        from giftgraph.events import from_snapshot

        if self.payload is None:
            return None
        row = from_snapshot(self.entity_type, self.payload)
        return to_node(self.entity_type, row) if row is not None else None


@strawberry.type(description="Who is watching a topic right now.")
class Presence:
    topic: str = strawberry.field(description="The topic watched, as the server spells it.")
    viewers: list[User] = strawberry.field(
        description="The members subscribed to presence on this topic now, on any instance.")


