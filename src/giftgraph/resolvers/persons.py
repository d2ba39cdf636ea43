"""Persons (gift recipients) and occasions."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any

import strawberry
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from giftgraph.context import Info
from giftgraph.db import models as m
from giftgraph.db import orders
from giftgraph.events import Cascaded, list_topics, occasion_topic, person_topic
from giftgraph.resolvers import crud
from giftgraph.resolvers.common import list_connection
from giftgraph.resolvers.queries import search_condition
from giftgraph.schema.arguments import After, Before, First, Last, Search
from giftgraph.schema.connection import Connection
from giftgraph.schema.enums import OccasionKind
from giftgraph.schema.inputs import OccasionInput, OccasionPatch, PersonInput, PersonPatch
from giftgraph.schema.types import Occasion, Person
from giftgraph.validation import OccasionData, PersonData


def _person_topics(row: m.Person) -> list[str]:
    return [person_topic(row.id)]


def _occasion_topics(row: m.Occasion) -> list[str]:
    return [occasion_topic(row.id)]


def _unlink_lists(column: Any, topic: Callable[[uuid.UUID], str]) -> crud.Cascade:
    """Deleting a person or occasion keeps its lists, unlinked (the foreign key's ON DELETE
    SET NULL, done here first): each gets an UPDATED event with its new state, on its
    topics and the old person's/occasion's, as a list moved by `updateList`."""
    async def cascade(session: AsyncSession, row: m.Owned) -> list[Cascaded]:
        unlinked = await session.scalars(
            update(m.GiftList)
            .where(column == row.id, m.GiftList.family_id == row.family_id)
            .values({column: None, m.GiftList.updated_at: m.utcnow()})
            .returning(m.GiftList)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        return [Cascaded(m.EventKind.UPDATED, gl, [*list_topics(gl), topic(row.id)])
                for gl in unlinked]

    return cascade


async def persons(info: Info, first: First = None, after: After = None,
                  last: Last = None, before: Before = None,
                  search: Search = None) -> Connection[Person]:
    stmt = select(m.Person).where(m.Person.family_id == info.context.family_id)
    condition = search_condition(info, m.Person.name, search)
    if condition is not None:
        stmt = stmt.where(condition)
    return await list_connection(info, stmt, orders.PERSONS, Person.from_model,
                                 first, after, last, before)


async def create_person(info: Info, input: Annotated[PersonInput, strawberry.argument(
        description="The new person.")]) -> Person:
    return await crud.create(info, m.Person, PersonData, input, _person_topics,
                             Person.from_model)


async def update_person(
    info: Info,
    id: Annotated[strawberry.ID, strawberry.argument(description="The person to change.")],
    input: Annotated[PersonPatch, strawberry.argument(description="The changes.")],
) -> Person:
    return await crud.update(info, m.Person, "Person", PersonData, id, input, _person_topics,
                             Person.from_model)


async def delete_person(info: Info, id: Annotated[strawberry.ID, strawberry.argument(
        description="The person to delete.")]) -> strawberry.ID:
    return await crud.remove(info, m.Person, "Person", id, _person_topics,
                             m.CommentTarget.PERSON,
                             cascade=_unlink_lists(m.GiftList.person_id, person_topic))


async def occasions(info: Info, first: First = None, after: After = None,
                    last: Last = None, before: Before = None,
                    kind: Annotated[OccasionKind | None, strawberry.argument(
                        description="Only occasions of this kind; omitted: all.")] = None,
                    from_: Annotated[date | None, strawberry.argument(
                        name="from",
                        description="Only occasions on or after this day.")] = None,
                    to: Annotated[date | None, strawberry.argument(
                        description="Only occasions on or before this day.")] = None,
                    ) -> Connection[Occasion]:
    stmt = select(m.Occasion).where(m.Occasion.family_id == info.context.family_id)
    if kind is not None:
        stmt = stmt.where(m.Occasion.kind == kind)
    if from_ is not None:
        stmt = stmt.where(m.Occasion.date >= from_)
    if to is not None:
        stmt = stmt.where(m.Occasion.date <= to)
    return await list_connection(info, stmt, orders.OCCASIONS, Occasion.from_model,
                                 first, after, last, before)


async def create_occasion(info: Info, input: Annotated[OccasionInput, strawberry.argument(
        description="The new occasion.")]) -> Occasion:
    return await crud.create(info, m.Occasion, OccasionData, input, _occasion_topics,
                             Occasion.from_model)


async def update_occasion(
    info: Info,
    id: Annotated[strawberry.ID, strawberry.argument(description="The occasion to change.")],
    input: Annotated[OccasionPatch, strawberry.argument(description="The changes.")],
) -> Occasion:
    return await crud.update(info, m.Occasion, "Occasion", OccasionData, id, input,
                             _occasion_topics, Occasion.from_model)


async def delete_occasion(info: Info, id: Annotated[strawberry.ID, strawberry.argument(
        description="The occasion to delete.")]) -> strawberry.ID:
    return await crud.remove(info, m.Occasion, "Occasion", id, _occasion_topics,
                             m.CommentTarget.OCCASION,
                             cascade=_unlink_lists(m.GiftList.occasion_id, occasion_topic))
