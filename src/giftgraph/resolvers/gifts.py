"""Gifts: the things that can go on lists."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry
from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from giftgraph.context import Info
from giftgraph.db import models as m
from giftgraph.db import orders
from giftgraph.errors import Conflict
from giftgraph.events import record
from giftgraph.resolvers import crud
from giftgraph.resolvers.common import get_owned, list_connection, unit_of_work
from giftgraph.resolvers.queries import search_condition
from giftgraph.schema.arguments import After, Before, First, Last, Search
from giftgraph.schema.connection import Connection
from giftgraph.schema.inputs import GiftInput, GiftPatch, provided
from giftgraph.schema.types import Gift
from giftgraph.validation import GiftData, store_from_url, validate


def _no_topics(_: Any) -> list[str]:
    return []


def gift_values(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Validated gift columns, with `store` derived from the URL. A currency still missing
    here (a check of the other fields before the transaction) is taken as USD."""
    if data.get("currency") is None:
        data = {**data, "currency": "USD"}
    gift = validate(GiftData, data, prefix=prefix).model_dump()
    gift["store"] = store_from_url(gift["url"])
    return gift


FAMILY_CURRENCY = select(m.Family.currency).where(m.Family.id == bindparam("family_id"))


async def with_family_currency(session: AsyncSession, data: dict[str, Any]) -> dict[str, Any]:
    """A gift's fields, its currency the family's when none is given (or null): read in
    the transaction, as of the change (a round trip only then)."""
    if data.get("currency") is not None:
        return data
    currency = await session.scalar(FAMILY_CURRENCY, {"family_id": session.info["family_id"]})
    return {**data, "currency": currency}


async def new_gift(session: AsyncSession, info: Info, inp: GiftInput, prefix: str = "") -> m.Gift:
    """Insert a gift (and its ADDED event) inside the caller's unit of work."""
    user = info.context.require_user()
    data = await with_family_currency(session, provided(inp))
    row = m.Gift(family_id=user.family_id, **gift_values(data, prefix))
    session.add(row)
    await session.flush()
    await record(session, family_id=user.family_id, actor_id=user.id,
                 kind=m.EventKind.ADDED, entity=row, topics=())
    return row


async def gifts(info: Info, first: First = None, after: After = None,
                last: Last = None, before: Before = None,
                search: Search = None) -> Connection[Gift]:
    stmt = select(m.Gift).where(m.Gift.family_id == info.context.family_id)
    condition = search_condition(info, m.Gift.name, search)
    if condition is not None:
        stmt = stmt.where(condition)
    return await list_connection(info, stmt, orders.GIFTS, Gift.from_model,
                                 first, after, last, before)


async def create_gift(info: Info, input: Annotated[GiftInput, strawberry.argument(
        description="The new gift.")]) -> Gift:
    gift_values(provided(input))  # validate before opening a transaction
    async with unit_of_work(info) as session:
        row = await new_gift(session, info, input)
    return Gift.from_model(row)


async def update_gift(
    info: Info,
    id: Annotated[strawberry.ID, strawberry.argument(description="The gift to change.")],
    input: Annotated[GiftPatch, strawberry.argument(description="The changes.")],
) -> Gift:
    user = info.context.require_user()
    async with unit_of_work(info) as session:
        row = await get_owned(session, m.Gift, id, "Gift")
        values = gift_values(await with_family_currency(
            session, {**crud.current_values(row, GiftData), **provided(input)}))
        for key, value in values.items():
            setattr(row, key, value)
        await record(session, family_id=user.family_id, actor_id=user.id,
                     kind=m.EventKind.UPDATED, entity=row, topics=())
    return Gift.from_model(row)


async def _not_on_lists(session: AsyncSession, row: m.Gift) -> None:
    on_lists = await session.scalar(select(func.count()).where(m.ListItem.gift_id == row.id)) or 0
    if on_lists:
        raise Conflict(f"This gift is on {on_lists} list item(s); remove them first",
                       listItems=on_lists)


async def delete_gift(info: Info, id: Annotated[strawberry.ID, strawberry.argument(
        description="The gift to delete; it must be on no list.")]) -> strawberry.ID:
    return await crud.remove(info, m.Gift, "Gift", id, _no_topics, m.CommentTarget.GIFT,
                             guard=_not_on_lists)
