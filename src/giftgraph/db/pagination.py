"""Keyset (cursor) pagination, for one list or batched over many parents."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy import ARRAY, Integer, Select, any_, bindparam, func, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from giftgraph.errors import BadInput
from giftgraph.ids import b64url_decode, b64url_encode, parse_uuid

T = TypeVar("T")
Key = InstrumentedAttribute[Any]


@dataclass(frozen=True)
class PageArgs:
    """Normalised Relay arguments: `limit` rows after/before a cursor."""

    limit: int
    cursor: str | None = None
    backward: bool = False

    @classmethod
    def parse(
        cls,
        first: int | None,
        after: str | None,
        last: int | None = None,
        before: str | None = None,
        *,
        default: int = 20,
        maximum: int = 100,
    ) -> PageArgs:
        errors: dict[str, str] = {}
        if first is not None and last is not None:
            errors["last"] = "use either first or last, not both"
        if first is not None and first < 0:
            errors["first"] = "must be zero or more"
        if last is not None and last < 0:
            errors["last"] = "must be zero or more"
        if after is not None and before is not None:
            errors["before"] = "use either after or before, not both"
        if errors:
            raise BadInput(errors)
        backward = last is not None or (before is not None and first is None)
        n = last if backward else first
        limit = min(default if n is None else n, maximum)
        return cls(limit=limit, cursor=before if backward else after, backward=backward)


@dataclass
class Page(Generic[T]):
    rows: list[T]
    order: Order  # encodes a row's cursor: only the cursors a query selects are made
    has_next: bool
    has_previous: bool


@dataclass(frozen=True, eq=False)  # eq=False: SQLAlchemy attributes overload ==
class Order:
    """The sort keys of a connection; the last key must be unique (usually `id`)."""

    name: str  # tags cursors so one connection's cursor is refused by another
    keys: tuple[Key, ...]
    desc: bool = False

    def types(self) -> tuple[type, ...]:
        return tuple(k.type.python_type for k in self.keys)

    def encode(self, row: Any) -> str:
        # orjson writes datetimes and dates exactly as isoformat() would (and asyncpg's
        # UUID subclass via str): this runs for every row of every page.
        return b64url_encode(orjson.dumps([self.name, *(getattr(row, k.key) for k in self.keys)],
                                          default=str))

    def decode(self, cursor: str, arg: str) -> tuple[Any, ...]:
        """The key values of a cursor this connection wrote, or BAD_USER_INPUT naming `arg`:
        every value is read back only in the one form `encode` (or its SQL twin in
        accel/compiled.py) writes, so no value reaches the database that it can't take."""
        try:
            raw = b64url_decode(cursor)
            if raw is None:
                raise ValueError("not base64url")
            decoded = orjson.loads(raw)
            types = self.types()
            if not isinstance(decoded, list) or len(decoded) != len(types) + 1:
                raise ValueError("shape")
            tag, *values = decoded
            if tag != self.name:
                raise ValueError("cursor of another connection")
            return tuple(_load(t, v) for t, v in zip(types, values, strict=True))
        except (ValueError, TypeError, OverflowError, orjson.JSONDecodeError) as exc:
            raise BadInput({arg: "not a valid cursor for this connection"}) from exc

    def clauses(self, args: PageArgs) -> tuple[list[ColumnElement[bool]], list[Any]]:
        """WHERE clauses for the cursor and ORDER BY terms for the fetch direction."""
        descending = self.desc != args.backward
        where: list[ColumnElement[bool]] = []
        if args.cursor is not None:
            values = self.decode(args.cursor, "before" if args.backward else "after")
            lhs = tuple_(*self.keys)
            where.append(lhs < tuple_(*values) if descending else lhs > tuple_(*values))
        order = [k.desc() if descending else k.asc() for k in self.keys]
        return where, order


# What `encode` writes for a key (isoformat() of asyncpg's UTC datetimes, date.isoformat()),
# in ASCII: fromisoformat() alone would also take other offsets (year 1 at +14:00 is no
# UTC instant), week dates and basic formats.
_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                       r"(\.[0-9]{6})?\+00:00")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _load(t: type, v: Any) -> Any:
    """A key value as its column takes it; TypeError or ValueError for anything else."""
    if t is datetime:
        if not isinstance(v, str) or not _DATETIME.fullmatch(v):
            raise ValueError("datetime")
        return datetime.fromisoformat(v)
    if t is date:
        if not isinstance(v, str) or not _DATE.fullmatch(v):
            raise ValueError("date")
        return date.fromisoformat(v)
    if t is uuid.UUID:
        key = parse_uuid(v) if isinstance(v, str) else None
        if key is None:
            raise ValueError("uuid")
        return key
    if t is int:  # a bigint column: a bool or an int out of its range is no cursor
        if type(v) is not int or not -(2**63) <= v < 2**63:
            raise TypeError("int")
        return v
    if t is str:  # PostgreSQL text holds no NUL character
        if not isinstance(v, str) or "\x00" in v:
            raise TypeError("str")
        return v
    raise TypeError(f"no cursor value of type {t.__name__}")


def _page(rows: Sequence[Any], order: Order, args: PageArgs) -> Page[Any]:
    more = len(rows) > args.limit
    rows = list(rows[: args.limit])
    if args.backward:
        rows.reverse()
        has_prev, has_next = more, args.cursor is not None
    else:
        has_prev, has_next = args.cursor is not None, more
    return Page(rows, order, has_next, has_prev)


def page_statement(base: Select[Any], order: Order, args: PageArgs) -> Select[Any]:
    where, order_by = order.clauses(args)
    return base.where(*where).order_by(*order_by).limit(args.limit + 1)


def page_from_rows(rows: Sequence[Any], order: Order, args: PageArgs) -> Page[Any]:
    return _page(rows, order, args)


def pages_statement(
    base: Select[Any],
    parent: ColumnElement[Any] | InstrumentedAttribute[Any],
    order: Order,
    args: PageArgs,
) -> Select[Any]:
    """One statement for the first page of every parent (window function per parent).

    `base` selects columns (not entities); each result row has them plus `gg_parent`. The
    parents' ids and the rows per parent are parameters (`parents`, a list, and `limit`:
    `args.limit + 1`), so without a cursor the statement is the same for every call and
    can be built once (`= ANY(:parents)`: one prepared statement however many parents)."""
    where, order_by = order.clauses(args)
    rn = func.row_number().over(partition_by=parent, order_by=order_by).label("gg_rn")
    sub = (
        base.add_columns(parent.label("gg_parent"), rn)
        .where(parent == any_(bindparam("parents", type_=ARRAY(parent.type))), *where)
        .subquery()
    )
    return (
        select(*(c for c in sub.c if c.key != "gg_rn"))
        .where(sub.c.gg_rn <= bindparam("limit", type_=Integer()))
        .order_by(sub.c.gg_parent, sub.c.gg_rn)
    )


def group_pages(
    result_rows: Sequence[Any], parent_ids: Sequence[Any], order: Order, args: PageArgs
) -> dict[Any, Page[Any]]:
    grouped: dict[Any, list[Any]] = {pid: [] for pid in parent_ids}
    for row in result_rows:
        grouped[row.gg_parent].append(row)
    return {pid: _page(rows, order, args) for pid, rows in grouped.items()}
