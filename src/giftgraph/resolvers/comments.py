"""Comments on lists, items, gifts, persons and occasions."""

from __future__ import annotations

import uuid
from typing import Annotated

import strawberry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from giftgraph.context import Info
from giftgraph.db import models as m
from giftgraph.db import orders
from giftgraph.errors import Forbidden, NotFound
from giftgraph.events import record
from giftgraph.ids import decode_id
from giftgraph.resolvers import crud
from giftgraph.resolvers.common import list_connection, unit_of_work
from giftgraph.schema.arguments import After, Before, First, Last
from giftgraph.schema.connection import Connection
from giftgraph.schema.enums import CommentTarget
from giftgraph.schema.inputs import CommentInput
from giftgraph.schema.types import TARGET_TYPES, Comment
from giftgraph.validation import CommentData, validate

TARGET_MODELS: dict[m.CommentTarget, type[m.Owned]] = {
    m.CommentTarget.LIST: m.GiftList,
    m.CommentTarget.LIST_ITEM: m.ListItem,
    m.CommentTarget.GIFT: m.Gift,
    m.CommentTarget.PERSON: m.Person,
    m.CommentTarget.OCCASION: m.Occasion,
}
# Each target's loader, by its name in `Loaders` (made when first read).
TARGET_LOADERS: dict[type[m.Owned], str] = {
    m.GiftList: "gift_list", m.ListItem: "list_item", m.Gift: "gift", m.Person: "person",
    m.Occasion: "occasion",
}


async def _target_exists(info: Info, target: m.CommentTarget, target_id: str) -> uuid.UUID:
    """The target's UUID if it is the caller's family's; otherwise NOT_FOUND."""
    pk = decode_id(target_id, TARGET_TYPES[target])
    model = TARGET_MODELS[target]
    loader = getattr(info.context.loaders, TARGET_LOADERS[model])  # only that one is made
    if await loader.load(pk) is None:
        raise NotFound(TARGET_TYPES[target])
    return pk


async def comments(info: Info,
                   target: Annotated[CommentTarget, strawberry.argument(
                       description="What kind of object the comments are about.")],
                   target_id: Annotated[strawberry.ID, strawberry.argument(
                       description="That object's global ID, of the type `target` names "
                                   "(any other ID: NOT_FOUND).")],
                   first: First = None, after: After = None,
                   last: Last = None, before: Before = None) -> Connection[Comment]:
    target = m.CommentTarget(target)
    pk = await _target_exists(info, target, target_id)
    stmt = select(m.Comment).where(
        m.Comment.family_id == info.context.family_id, m.Comment.target == target,
        m.Comment.target_id == pk,
    )
    return await list_connection(info, stmt, orders.COMMENTS, Comment.from_model,
                                 first, after, last, before,
                                 {"author": (info.context.loaders.user, "author_id")})


async def add_comment(info: Info, input: Annotated[CommentInput, strawberry.argument(
        description="The comment and what it is about.")]) -> Comment:
    user = info.context.require_user()
    target = m.CommentTarget(input.target)
    data = validate(CommentData, {"target": target, "body": input.body})
    target_pk = decode_id(input.target_id, TARGET_TYPES[target])
    async with unit_of_work(info) as session:
        model = TARGET_MODELS[target]
        # KEY SHARE, as a foreign key's check would: the target's delete (which removes
        # its comments) waits for this comment, or has committed and it is NOT_FOUND.
        found = await session.scalar(
            select(model.id).where(model.id == target_pk, model.family_id == user.family_id)
            .with_for_update(read=True, key_share=True)
        )
        if found is None:
            raise NotFound(TARGET_TYPES[target])
        row = m.Comment(family_id=user.family_id, target=target, target_id=target_pk,
                        author_id=user.id, body=data.body)
        session.add(row)
        await record(session, family_id=user.family_id, actor_id=user.id,
                     kind=m.EventKind.COMMENT_ADDED, entity=row, topics=crud.comment_topics(row))
    return Comment.from_model(row)


async def delete_comment(info: Info, id: Annotated[strawberry.ID, strawberry.argument(
        description="The comment to delete.")]) -> strawberry.ID:
    async def author_or_admin(_: AsyncSession, row: m.Comment) -> None:
        user = info.context.require_user()
        if row.author_id != user.id and user.role != m.Role.ADMIN:
            raise Forbidden("Only the comment's author or an ADMIN can delete it")

    return await crud.remove(info, m.Comment, "Comment", id, crud.comment_topics, None,
                             guard=author_or_admin)
