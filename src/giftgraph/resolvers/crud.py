"""Create/update/delete for entities whose rules are just their validated fields."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

import strawberry
from pydantic import BaseModel
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from giftgraph.context import Info
from giftgraph.db import models as m
from giftgraph.events import Cascaded, comments_topic, record, record_many
from giftgraph.ids import encode_id
from giftgraph.resolvers.common import direct_unit_of_work, get_owned, unit_of_work
from giftgraph.schema.inputs import provided
from giftgraph.schema.types import TARGET_TYPES
from giftgraph.validation import validate

M = TypeVar("M", bound=m.Owned)
T = TypeVar("T")
Topics = Callable[[Any], list[str]]


def current_values(row: m.Base, data_model: type[BaseModel]) -> dict[str, Any]:
    """A row's values for the fields of `data_model` (the base a patch applies to)."""
    return {name: getattr(row, name) for name in data_model.model_fields if hasattr(row, name)}


def changed(row: m.Base, values: dict[str, Any]) -> dict[str, Any]:
    """Of `values`, those that differ from the row's: the `changes` that `record` writes
    in one UPDATE with the family's lock (an ORM flush and the lock were two statements)."""
    return {key: value for key, value in values.items() if getattr(row, key) != value}


async def create(info: Info, model: type[M], data_model: type[BaseModel], inp: object,
                 topics: Topics, convert: Callable[[M], T], **extra: Any) -> T:
    data = validate(data_model, provided(inp))
    user = info.context.require_user()
    async with unit_of_work(info) as session:
        row = model(family_id=user.family_id, **data.model_dump(), **extra)
        session.add(row)
        await session.flush()
        await record(session, family_id=user.family_id, actor_id=user.id,
                     kind=m.EventKind.ADDED, entity=row, topics=topics(row))
    return convert(row)


async def update(info: Info, model: type[M], type_name: str, data_model: type[BaseModel],
                 gid: str, patch: object, topics: Topics, convert: Callable[[M], T]) -> T:
    user = info.context.require_user()
    async with direct_unit_of_work(info) as session:
        row = await get_owned(session, model, gid, type_name)
        data = validate(data_model, {**current_values(row, data_model), **provided(patch)})
        await record(session, family_id=user.family_id, actor_id=user.id,
                     kind=m.EventKind.UPDATED, entity=row, topics=topics(row),
                     changes=changed(row, data.model_dump()))
    return convert(row)


Cascade = Callable[[AsyncSession, Any], Awaitable[list[Cascaded]]]


async def remove(info: Info, model: type[M], type_name: str, gid: str, topics: Topics,
                 comment_target: m.CommentTarget | None,
                 guard: Callable[[Any, M], Awaitable[None]] | None = None,
                 cascade: Cascade | None = None) -> strawberry.ID:
    """Delete a row (locked first); `guard` may refuse, e.g. with CONFLICT or FORBIDDEN.

    What the delete would change or remove in other rows (`cascade`, and the comments on
    it) is changed first, a statement per kind of row, and each such row gets the events
    a direct change of it would (its row locks, taken by those statements, come before
    the family's event lock, as in every mutation)."""
    user = info.context.require_user()
    async with unit_of_work(info) as session:
        row = await get_owned(session, model, gid, type_name)
        if guard is not None:
            await guard(session, row)
        cascaded = await cascade(session, row) if cascade is not None else []
        if comment_target is not None:
            cascaded += await delete_comments(session, comment_target, [row.id])
        await record_many(session, family_id=user.family_id, actor_id=user.id,
                          entries=cascaded)
        await record(session, family_id=user.family_id, actor_id=user.id,
                     kind=m.EventKind.DELETED, entity=row, topics=topics(row))
        await session.delete(row)
    return strawberry.ID(gid)


def comment_topics(row: m.Comment) -> list[str]:
    return [comments_topic(row.target, encode_id(TARGET_TYPES[row.target], row.target_id))]


async def delete_comments(session: AsyncSession, target: m.CommentTarget,
                          target_ids: Collection[Any]) -> list[Cascaded]:
    """Comments have no foreign key to their target: remove them with it (one statement
    for any number of targets); their DELETED events, for `record_many`. The family's
    comments only (the unit of work's): another family's comment on the target (never
    written by the API) is neither removed nor recorded in this family's log."""
    if not target_ids:
        return []
    removed = await session.scalars(
        delete(m.Comment)
        .where(m.Comment.family_id == session.info["family_id"], m.Comment.target == target,
               m.Comment.target_id.in_(target_ids))
        .returning(m.Comment)
        .execution_options(synchronize_session=False)
    )
    return [Cascaded(m.EventKind.DELETED, c, comment_topics(c)) for c in removed]
