"""Gift lists and the items on them (with the status pipeline)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import strawberry
from sqlalchemy import and_, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from giftgraph.context import Info
from giftgraph.db import models as m
from giftgraph.db import orders
from giftgraph.db.session import Prepared, Unit, execute_in
from giftgraph.errors import BadInput, Forbidden, InvalidTransition, NotFound
from giftgraph.events import (
    LIST_ITEMS_TOPIC,
    Cascaded,
    list_topics,
    record,
    record_many,
    topics_of_list,
)
from giftgraph.ids import decode_id
from giftgraph.resolvers import crud
from giftgraph.resolvers.common import (
    columns_of,
    direct_unit_of_work,
    entity_of,
    get_owned,
    get_referenced,
    list_connection,
    unit_of_work,
)
from giftgraph.resolvers.gifts import gift_values, new_gift
from giftgraph.schema.arguments import After, Before, First, Last
from giftgraph.schema.connection import Connection
from giftgraph.schema.enums import ItemStatus, ListKind
from giftgraph.schema.inputs import (
    GiftListInput,
    GiftListPatch,
    ListItemInput,
    ListItemPatch,
    provided,
)
from giftgraph.schema.types import GiftList, ListItem, list_relations
from giftgraph.validation import GiftListData, ListItemData, validate

S = m.ItemStatus
# One step forward or one step back along IDEA → SELECTED → PURCHASED → RECEIVED.
TRANSITIONS: dict[m.ItemStatus, frozenset[m.ItemStatus]] = {
    S.IDEA: frozenset({S.SELECTED}),
    S.SELECTED: frozenset({S.IDEA, S.PURCHASED}),
    S.PURCHASED: frozenset({S.SELECTED, S.RECEIVED}),
    S.RECEIVED: frozenset({S.PURCHASED}),
}


async def _exists(info: Info, loader: Any, gid: str, type_name: str) -> uuid.UUID:
    pk = decode_id(gid, type_name)
    if await loader.load(pk) is None:
        raise NotFound(type_name)
    return pk


async def lists(info: Info, first: First = None, after: After = None,
                last: Last = None, before: Before = None,
                kind: Annotated[ListKind | None, strawberry.argument(
                    description="Only lists of this kind; omitted: all.")] = None,
                person_id: Annotated[strawberry.ID | None, strawberry.argument(
                    description="Only the lists for this person of your family (any "
                                "other ID: NOT_FOUND).")] = None,
                occasion_id: Annotated[strawberry.ID | None, strawberry.argument(
                    description="Only the lists for this occasion of your family (any "
                                "other ID: NOT_FOUND).")] = None,
                ) -> Connection[GiftList]:
    loaders = info.context.loaders
    stmt = select(m.GiftList).where(m.GiftList.family_id == info.context.family_id)
    if kind is not None:
        stmt = stmt.where(m.GiftList.kind == kind)
    if person_id is not None:
        pk = await _exists(info, loaders.person, person_id, "Person")
        stmt = stmt.where(m.GiftList.person_id == pk)
    if occasion_id is not None:
        pk = await _exists(info, loaders.occasion, occasion_id, "Occasion")
        stmt = stmt.where(m.GiftList.occasion_id == pk)
    return await list_connection(info, stmt, orders.LISTS, GiftList.from_model,
                                 first, after, last, before, list_relations(loaders))


async def _list_values(session: Unit, data: dict[str, Any]) -> dict[str, Any]:
    values = validate(GiftListData, data).model_dump()
    for key, model, type_name in (("person_id", m.Person, "Person"),
                                  ("occasion_id", m.Occasion, "Occasion")):
        ref = values[key]
        if isinstance(ref, str):
            values[key] = (await get_referenced(session, model, ref, type_name)).id
    return values


async def create_list(info: Info, input: Annotated[GiftListInput, strawberry.argument(
        description="The new list.")]) -> GiftList:
    user = info.context.require_user()
    validate(GiftListData, provided(input))
    async with unit_of_work(info) as session:
        row = m.GiftList(family_id=user.family_id, owner_id=user.id,
                         **await _list_values(session, provided(input)))
        session.add(row)
        await session.flush()  # its id, which its topic names
        await record(session, family_id=user.family_id, actor_id=user.id,
                     kind=m.EventKind.ADDED, entity=row, topics=list_topics(row))
    return GiftList.from_model(row)


async def update_list(
    info: Info,
    id: Annotated[strawberry.ID, strawberry.argument(description="The list to change.")],
    input: Annotated[GiftListPatch, strawberry.argument(description="The changes.")],
) -> GiftList:
    user = info.context.require_user()
    async with direct_unit_of_work(info) as session:
        row = await get_owned(session, m.GiftList, id, "GiftList")
        before = list_topics(row)
        patch = provided(input)
        current = crud.current_values(row, GiftListData)
        values = await _list_values(session, {**current, **patch})
        # Old and new person/occasion topics both hear about a moved list.
        after = topics_of_list(row.id, values["person_id"], values["occasion_id"])
        await record(session, family_id=user.family_id, actor_id=user.id,
                     kind=m.EventKind.UPDATED, entity=row, topics=before + after,
                     changes=crud.changed(row, values))
    return GiftList.from_model(row)


async def _owner_or_admin(info: Info, row: m.GiftList) -> None:
    user = info.context.require_user()
    if row.owner_id != user.id and user.role != m.Role.ADMIN:
        raise Forbidden("Only the list's owner or an ADMIN can delete it")


async def _delete_items(session: AsyncSession, row: m.GiftList) -> list[Cascaded]:
    """A list's items go with it (the foreign key's ON DELETE CASCADE, done here first),
    and the comments on them: each with its DELETED event, as `removeListItem` writes.
    The family's items: another family's item on the list (never written by the API) is
    left to the foreign key, and not recorded in this family's log."""
    items = list(await session.scalars(
        delete(m.ListItem).where(m.ListItem.list_id == row.id,
                                 m.ListItem.family_id == row.family_id)
        .returning(m.ListItem).execution_options(synchronize_session=False)))
    comments = await crud.delete_comments(session, m.CommentTarget.LIST_ITEM,
                                          [item.id for item in items])
    return [*comments, *(Cascaded(m.EventKind.DELETED, item, _item_topics(row)) for item in items)]


async def delete_list(info: Info, id: Annotated[strawberry.ID, strawberry.argument(
        description="The list to delete, with its items.")]) -> strawberry.ID:
    async def guard(_: AsyncSession, row: m.GiftList) -> None:
        await _owner_or_admin(info, row)

    return await crud.remove(info, m.GiftList, "GiftList", id, list_topics,
                             m.CommentTarget.LIST, guard=guard, cascade=_delete_items)


def _item_topics(gift_list: m.GiftList) -> list[str]:
    return [*list_topics(gift_list), LIST_ITEMS_TOPIC]


# The caller's family's item, locked, and its list (whose topics its events go to): one
# statement, where an item and then its list were two round trips. Built once: building and
# keying it per call was ~5% of a mutation's CPU.
ITEM_AND_LIST = (
    select(m.ListItem, m.GiftList)
    .join(m.GiftList, and_(m.GiftList.id == m.ListItem.list_id,  # not `&`: that makes a
                           m.GiftList.family_id == bindparam("family_id")))  # ref cycle
    .where(m.ListItem.id == bindparam("id"), m.ListItem.family_id == bindparam("family_id"))
    .with_for_update(of=m.ListItem)
)


_ITEM, _LIST = columns_of(m.ListItem), columns_of(m.GiftList)
# ITEM_AND_LIST as columns, for a unit of work with no ORM session (`write_direct`), which
# builds the two entities from the row itself (`_get_item_row`).
ITEM_AND_LIST_ROW = Prepared(
    select(*_ITEM, *_LIST)
    .join_from(m.ListItem, m.GiftList, and_(m.GiftList.id == m.ListItem.list_id,
                                            m.GiftList.family_id == bindparam("family_id")))
    .where(m.ListItem.id == bindparam("id"), m.ListItem.family_id == bindparam("family_id"))
    .with_for_update(of=m.ListItem)
)


async def _get_item_row(unit: Unit, gid: str) -> tuple[m.ListItem, m.GiftList]:
    """`_get_item` in a unit of work with no ORM session: the entities are built from the
    row, not attached to any session (the unit writes with `execute_in` only)."""
    rows = await execute_in(unit, ITEM_AND_LIST_ROW, {
        "id": decode_id(gid, "ListItem"), "family_id": unit.info["family_id"]})
    if not rows:
        raise NotFound("ListItem")
    row, n = rows[0], len(_ITEM)
    return entity_of(m.ListItem, row[:n]), entity_of(m.GiftList, row[n:])


async def _get_item(session: AsyncSession, gid: str) -> tuple[m.ListItem, m.GiftList]:
    row = (await session.execute(ITEM_AND_LIST, {
        "id": decode_id(gid, "ListItem"), "family_id": session.info["family_id"]})).first()
    if row is None:
        raise NotFound("ListItem")
    return row[0], row[1]


async def _record_item(info: Info, session: Unit, item: m.ListItem,
                       gift_list: m.GiftList, kind: m.EventKind,
                       changes: dict[str, Any] | None = None) -> None:
    user = info.context.require_user()
    await record(session, family_id=user.family_id, actor_id=user.id, kind=kind,
                 entity=item, topics=_item_topics(gift_list), changes=changes)


async def _resolve_gift(info: Info, session: AsyncSession, patch: dict[str, Any]) -> uuid.UUID:
    gift_id, gift = patch.get("gift_id"), patch.get("gift")
    if gift_id is not None and gift is None:
        return (await get_referenced(session, m.Gift, gift_id, "Gift")).id
    if gift is not None and gift_id is None:
        return (await new_gift(session, info, gift, prefix="gift.")).id
    raise BadInput({"giftId": "give exactly one of giftId or gift"})


def _check_item_input(patch: dict[str, Any]) -> None:
    """Validate everything that needs no database before a transaction starts."""
    if patch.get("gift") is not None:
        gift_values(provided(patch["gift"]), prefix="gift.")


async def add_list_item(
    info: Info,
    list_id: Annotated[strawberry.ID, strawberry.argument(
        description="The list to add it to.")],
    input: Annotated[ListItemInput, strawberry.argument(
        description="The gift (an existing one or a new one), quantity and notes.")],
) -> ListItem:
    user = info.context.require_user()
    patch = provided(input)
    data = validate(ListItemData, {k: patch[k] for k in ("quantity", "notes") if k in patch})
    _check_item_input(patch)
    async with unit_of_work(info) as session:
        gift_list = await get_referenced(session, m.GiftList, list_id, "GiftList")
        gift_id = await _resolve_gift(info, session, patch)
        item = m.ListItem(family_id=user.family_id, list_id=gift_list.id, gift_id=gift_id,
                          status=m.ItemStatus.IDEA, **data.model_dump())
        session.add(item)
        await record(session, family_id=user.family_id, actor_id=user.id,
                     kind=m.EventKind.ADDED, entity=item, topics=_item_topics(gift_list))
    return ListItem.from_model(item)


async def update_list_item(
    info: Info,
    id: Annotated[strawberry.ID, strawberry.argument(description="The item to change.")],
    input: Annotated[ListItemPatch, strawberry.argument(description="The changes.")],
) -> ListItem:
    patch = provided(input)
    _check_item_input(patch)
    async with unit_of_work(info) as session:
        item, gift_list = await _get_item(session, id)
        data = validate(ListItemData, {
            **crud.current_values(item, ListItemData),
            **{k: patch[k] for k in ("quantity", "notes") if k in patch},
        })
        changes: dict[str, Any] = {"quantity": data.quantity, "notes": data.notes}
        if "gift_id" in patch or "gift" in patch:
            changes["gift_id"] = await _resolve_gift(info, session, patch)
        await _record_item(info, session, item, gift_list, m.EventKind.UPDATED, changes=changes)
    return ListItem.from_model(item)


async def remove_list_item(
    info: Info,
    id: Annotated[strawberry.ID, strawberry.argument(
        description="The item to take off its list (the gift itself stays).")],
) -> strawberry.ID:
    async with unit_of_work(info) as session:
        item, gift_list = await _get_item(session, id)
        user = info.context.require_user()
        await record_many(session, family_id=user.family_id, actor_id=user.id,
                          entries=await crud.delete_comments(
                              session, m.CommentTarget.LIST_ITEM, [item.id]))
        await _record_item(info, session, item, gift_list, m.EventKind.DELETED)
        await session.delete(item)
    return id


async def set_list_item_status(
    info: Info,
    id: Annotated[strawberry.ID, strawberry.argument(description="The item to move.")],
    status: Annotated[ItemStatus, strawberry.argument(
        description="The status one step before or after its current one.")],
) -> ListItem:
    async with direct_unit_of_work(info) as unit:
        item, gift_list = await _get_item_row(unit, id)
        new = m.ItemStatus(status)
        if new not in TRANSITIONS[item.status]:
            allowed = sorted(s.value for s in TRANSITIONS[item.status])
            raise InvalidTransition(
                f"Cannot move an item from {item.status.value} to {new.value}",
                current=item.status.value, requested=new.value, allowed=allowed,
            )
        await _record_item(info, unit, item, gift_list, m.EventKind.STATUS_CHANGED,
                           changes={"status": new})
    return ListItem.from_model(item)


async def assign_list_item(
    info: Info,
    id: Annotated[strawberry.ID, strawberry.argument(description="The item to assign.")],
    user_id: Annotated[strawberry.ID | None, strawberry.argument(
        description="An active member of the family to take care of it; null or omitted "
                    "unassigns it.")] = None,
) -> ListItem:
    async with direct_unit_of_work(info) as session:
        item, gift_list = await _get_item_row(session, id)
        assignee_id = None
        if user_id is not None:
            assignee = await get_referenced(session, m.User, user_id, "User")
            if not assignee.is_active:
                raise BadInput({"userId": "this member is deactivated"})
            assignee_id = assignee.id
        await _record_item(info, session, item, gift_list, m.EventKind.ASSIGNED,
                           changes={"assignee_id": assignee_id})
    return ListItem.from_model(item)
