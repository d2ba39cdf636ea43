"""Live events: publish committed Events to broadcaster, stream them to subscriptions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
from broadcaster import Broadcast
from sqlalchemy import select

from giftgraph.context import Context, OperationState, begin_operation, end_operation
from giftgraph.db import models as m
from giftgraph.db.session import OperationDb
from giftgraph.errors import BadInput


def channel(family_id: uuid.UUID, topic: str) -> str:
    """Broadcaster channels are scoped by family and topic."""
    return f"gg:{family_id}:{topic}"


def encode_event(e: m.Event) -> str:
    return orjson.dumps({
        "seq": e.seq, "family_id": str(e.family_id), "topic": e.topic, "kind": e.kind.value,
        "entity_type": e.entity_type, "entity_id": str(e.entity_id),
        "actor_id": str(e.actor_id) if e.actor_id else None, "at": e.at.isoformat(),
        "payload": e.payload,
    }).decode()


def decode_event(raw: str) -> m.Event:
    d: dict[str, Any] = orjson.loads(raw)
    return m.Event(
        seq=d["seq"], family_id=uuid.UUID(d["family_id"]), topic=d["topic"],
        kind=m.EventKind(d["kind"]), entity_type=d["entity_type"],
        entity_id=uuid.UUID(d["entity_id"]),
        actor_id=uuid.UUID(d["actor_id"]) if d["actor_id"] else None,
        at=datetime.fromisoformat(d["at"]), payload=d["payload"],
    )


class Hub:
    """The process's broadcaster connection."""

    def __init__(self, url: str) -> None:
        self.broadcast = Broadcast(url)
        self.connected = False

    async def connect(self) -> None:
        await self.broadcast.connect()
        self.connected = True

    async def disconnect(self) -> None:
        self.connected = False
        await self.broadcast.disconnect()

    async def publish(self, events: list[m.Event]) -> None:
        """Called after COMMIT with the events the transaction wrote."""
        for e in events:
            await self.broadcast.publish(channel(e.family_id, e.topic), encode_event(e))


def parse_since(since: str | None) -> int | None:
    if since is None:
        return None
    if not since.isdigit():
        raise BadInput({"since": "must be an event seq"})
    return int(since)


async def event_stream(ctx: Context, hub: Hub, topic: str,
                       since: str | None) -> AsyncIterator[m.Event]:
    """Events of the caller's family on `topic`: replay after `since`, then live.

    It listens before it replays, so nothing committed meanwhile is missed, and drops
    anything at or below the last seq it sent, so nothing arrives twice.
    """
    user = ctx.require_user()
    last = parse_since(since)
    async with hub.broadcast.subscribe(channel(user.family_id, topic)) as subscriber:
        if last is not None:
            async with ctx.database.sessions() as session:
                rows = (await session.scalars(
                    select(m.Event)
                    .where(m.Event.family_id == user.family_id, m.Event.topic == topic,
                           m.Event.seq > last)
                    .order_by(m.Event.seq)
                )).all()
            for row in rows:
                last = row.seq
                async with event_scope(ctx):
                    yield row
        async for message in subscriber:  # type: ignore[union-attr]
            event = decode_event(message.message)
            if last is not None and event.seq <= last:
                continue
            last = event.seq
            async with event_scope(ctx):
                yield event


class event_scope:  # noqa: N801 - used like a function: `async with event_scope(ctx)`
    """A fresh short session and loaders for resolving one subscription event."""

    def __init__(self, ctx: Context) -> None:
        self.state = OperationState(OperationDb(ctx.database.sessions))

    async def __aenter__(self) -> None:
        self.token = begin_operation(self.state)

    async def __aexit__(self, *exc: object) -> None:
        await self.state.db.close()
        end_operation(self.token)
