"""Shared resolver helpers: family-scoped lookups, the unit of work, connections."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import Select, bindparam, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from giftgraph.context import Info
from giftgraph.db import models as m
from giftgraph.db.pagination import Order, page_from_rows, page_statement
from giftgraph.db.session import DirectUnit, Prepared, Unit, execute_in
from giftgraph.errors import NotFound
from giftgraph.ids import decode_id
from giftgraph.schema.connection import Connection, connection
from giftgraph.schema.lookahead import Relations, prefetch_selected
from giftgraph.schema.types import page_args

M = TypeVar("M", bound=m.Owned)
T = TypeVar("T")
U = TypeVar("U", bound=Unit)
# get_owned's `lock` for a row about to be referenced: FOR KEY SHARE (see get_referenced).
KEY_SHARE = "key_share"


async def get_owned(
    session: Unit, model: type[M], gid: str, type_name: str, *,
    lock: bool | str = True,
) -> M:
    """The caller's family's row for a global ID; anything else is NOT_FOUND. In a unit of
    work with no ORM session (`direct_unit_of_work`), an entity built from the row."""
    pk = decode_id(gid, type_name)
    params = {"id": pk, "family_id": session.info["family_id"]}
    if isinstance(session, DirectUnit):
        rows = await execute_in(session, _owned_row(model, lock), params)
        if not rows:
            raise NotFound(type_name)
        return entity_of(model, rows[0])
    row = await session.scalar(_owned_statement(model, lock), params)
    if row is None:
        raise NotFound(type_name)
    return row  # type: ignore[no-any-return]


async def get_referenced(session: Unit, model: type[M], gid: str, type_name: str) -> M:
    """The caller's family's row that a write is about to point a foreign key at, locked
    FOR KEY SHARE until COMMIT: a concurrent delete of it either waits for this transaction
    or has committed, and then the row is NOT_FOUND here, exactly as an unknown ID (where
    a plain read let the write go on to a foreign-key violation, INTERNAL_SERVER_ERROR).
    The lock blocks no other change of the row but its key's, and comes, as every row
    lock, before the family's event lock."""
    return await get_owned(session, model, gid, type_name, lock=KEY_SHARE)


@functools.cache
def _owned_statement(model: type[m.Owned], lock: bool | str) -> Select[Any]:
    """A row of `model` by ID within a family, built once per model (and lock)."""
    stmt = select(model).where(model.id == bindparam("id"),
                               model.family_id == bindparam("family_id"))
    if lock == KEY_SHARE:
        return stmt.with_for_update(read=True, key_share=True)
    return stmt.with_for_update() if lock else stmt


@functools.cache
def _owned_row(model: type[m.Owned], lock: bool | str) -> Prepared:
    """`_owned_statement` as the table's columns (`entity_of` builds the entity)."""
    return Prepared(_owned_statement(model, lock).with_only_columns(*_columns(model)[0]))


@functools.cache
def _columns(model: type[m.Owned]) -> tuple[tuple[Any, ...], tuple[str, ...]]:
    """A model's table columns and the attributes they map to."""
    mapper = inspect(model)
    columns = tuple(mapper.local_table.c)
    return columns, tuple(mapper.get_property_by_column(c).key for c in columns)


def columns_of(model: type[m.Owned]) -> tuple[Any, ...]:
    """The columns `entity_of` builds a `model` from, in its order."""
    return _columns(model)[0]


def entity_of(model: type[M], values: Sequence[Any]) -> M:
    """A `model` entity of a row of its `columns_of`, attached to no session: for a unit
    of work that writes with `execute_in` only (its attributes are the row's; nothing of
    it is ever flushed)."""
    return model(**dict(zip(_columns(model)[1], values, strict=True)))


@asynccontextmanager
async def unit_of_work(info: Info) -> AsyncIterator[AsyncSession]:
    """One transaction for one mutation, scoped to the caller's family."""
    async with _unit(info, info.context.db.write()) as session:
        yield session


@asynccontextmanager
async def direct_unit_of_work(info: Info) -> AsyncIterator[Unit]:
    """`unit_of_work` for a mutation whose statements all run through `execute_in`
    (`OperationDb.write_direct`: no ORM session)."""
    async with _unit(info, info.context.db.write_direct()) as unit:
        yield unit


@asynccontextmanager
async def _unit(info: Info, opened: AbstractAsyncContextManager[U]) -> AsyncIterator[U]:
    ctx = info.context
    user = ctx.require_user()
    async with opened as unit:
        unit.info["family_id"] = user.family_id
        yield unit
    if ctx.operation.loaders is not None:
        ctx.operation.loaders.clear()


async def list_connection(
    info: Info,
    base: Select[Any],
    order: Order,
    convert: Callable[[Any], T],
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    relations: Relations | None = None,
) -> Connection[T]:
    """A top-level connection over `base` (already filtered to the family); the
    `relations` of its nodes that the operation selects are loaded with the page."""
    args = page_args(info, first, after, last, before)
    db = info.context.db
    rows = await db.scalars(page_statement(base, order, args))
    page = page_from_rows(rows, order, args)

    async def count() -> int:
        counted = select(func.count()).select_from(base.order_by(None).subquery())
        return await db.scalar(counted) or 0

    if relations:
        await prefetch_selected(info, page.rows, relations, "edges", "node")
    return connection(page, convert, count)
