"""Per-operation DataLoaders: every relation and nested connection is batched."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections import defaultdict, namedtuple
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, Generic, TypeVar, Union, overload

from sqlalchemy import ARRAY, Row, Select, and_, any_, bindparam, func, select
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from strawberry.dataloader import DataLoader

from giftgraph.db import models as m
from giftgraph.db import queries as q
from giftgraph.db.pagination import Order, Page, PageArgs, group_pages, pages_statement
from giftgraph.db.session import OperationDb
from giftgraph.errors import NotFound

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")
L = TypeVar("L", bound=DataLoader[Any, Any])
Key = tuple[uuid.UUID, PageArgs, Hashable]
CountKey = tuple[uuid.UUID, Hashable]
MaybeAwaitable = Union[R, Awaitable[R]]  # noqa: UP007 - a generic alias needs Union
Record = Any  # a loaded row: a named tuple of the model's columns (see `records`)
UNREAD = frozenset({"password_hash"})  # columns no GraphQL type reads


# Loader statements are built once, with their values as parameters: building and
# cache-keying a SELECT costs more than running it through SQLAlchemy's compiled cache.
FAMILY: BindParameter[Any] = bindparam("family_id")
# Keyed by the base statement's builder and everything else that shapes the statement.
_PAGE_STATEMENTS: dict[tuple[str, str, Hashable, bool], Select[Any]] = {}
_COUNT_STATEMENTS: dict[tuple[str, Hashable], Select[Any]] = {}


def columns(model: type[m.Base]) -> list[ColumnElement[Any]]:
    """What loaders select: plain rows of the columns, not ORM entities. The GraphQL types
    only read attributes, and a row costs a fraction of an entity (no identity map,
    instance state or attribute instrumentation), which counted with hundreds per page."""
    return [c for c in model.__table__.c if c.key not in UNREAD]


@functools.cache
def by_id_statement(model: type[m.Base]) -> Select[Any]:
    """The rows of the `ids` that belong to the family `family_id` (parameters)."""
    pk = model.__table__.c.id
    family = pk if model is m.Family else model.__table__.c.family_id
    return select(*columns(model)).where(pk == any_(bindparam("ids", type_=ARRAY(pk.type))),
                                         family == FAMILY)


# A list's person, when the person is of the list's family: a list for another family's
# person (never written by the API) counts as a list for no one, as its `person` reads null.
LIST_PERSON = (select(m.Person.id)
               .where(m.Person.id == m.GiftList.person_id,
                      m.Person.family_id.is_not_distinct_from(m.GiftList.family_id))
               .correlate(m.GiftList).scalar_subquery())
# Per (occasion, person, status, currency) of the occasions `ids`: item count, money spent
# and the family's currency.
OCCASION_PROGRESS = (
    q.progress_statement(FAMILY, m.GiftList.occasion_id, LIST_PERSON)
    .where(m.GiftList.occasion_id == any_(bindparam("ids", type_=ARRAY(m.GiftList.id.type))))
)


@functools.cache
def _record_type(fields: tuple[str, ...]) -> Any:
    return namedtuple("Record", fields)


def records(rows: Sequence[Row[Any]]) -> list[Record]:
    """The rows as named tuples, whose attributes read much faster than a Row's: building a
    GraphQL object reads every column, for hundreds of rows per page."""
    if not rows:
        return []
    make = _record_type(rows[0]._fields)._make
    return [make(r) for r in rows]


def load_now(loader: DataLoader[K, V | None], key: K,
             convert: Callable[[V], R]) -> MaybeAwaitable[R | None]:
    """`convert` of the loader's row for `key` (None when there is none): a plain value
    when the loader already holds it (prefetched, or loaded earlier in the operation),
    else an awaitable.

    graphql-core completes a plain value in place, while every awaitable field costs a
    coroutine, a task and a gather in its parent: for the relations of hundreds of rows
    that was most of a nested query's time. A failed load raises here, as awaiting it would.
    """
    future = loader.cache_map.get(key)
    if future is not None and future.done() and not future.cancelled():
        memo = loader.converted if isinstance(loader, RowLoader) else None
        if memo is not None and (found := memo.get((convert, key), _NONE)) is not _NONE:
            return found  # type: ignore[no-any-return]
        row = future.result()
        value = None if row is None else convert(row)
        if memo is not None:
            memo[(convert, key)] = value
        return value
    return _convert(loader.load(key), convert)


def load_required(loader: DataLoader[K, V | None], key: K, convert: Callable[[V], R],
                  what: str) -> MaybeAwaitable[R]:
    """`load_now` for a required relation. Reads run in autocommit, each statement on a
    snapshot of its own, so the row a parent points to can be deleted between the parent's
    statement and this one (an item removed and its gift deleted meanwhile): that is
    NOT_FOUND, as reading the parent a moment later would have been, not a broken
    non-null field (an INTERNAL_SERVER_ERROR)."""
    future = loader.cache_map.get(key)
    if future is None or not future.done() or future.cancelled():
        # One coroutine, not one awaiting another's: the lean executor closes the
        # coroutines it leaves unawaited, and an inner one would be left never awaited.
        return _required(loader.load(key), convert, what)
    value = load_now(loader, key, convert)
    if value is None:
        raise NotFound(what)
    return value  # type: ignore[return-value]  # a converted row, not an awaitable


async def _required(pending: Awaitable[V | None], convert: Callable[[V], R], what: str) -> R:
    row = await pending
    if row is None:
        raise NotFound(what)
    return convert(row)


_NONE = object()


class Loader(DataLoader[K, V]):
    """Strawberry's DataLoader, but a caller that stops waiting stops only its own wait.

    Strawberry hands every caller of a key the one future of that key, and a task awaiting
    a future cancels it when the task is cancelled. graphql-core cancels the sibling fields
    still pending when a field fails: an item whose gift was deleted mid-read (NOT_FOUND)
    had its `list` field cancelled, that cancelled the list's one future, and every other
    item of the list failed with CancelledError (the dashboard's shared render ended with
    it). Here each caller of a pending key waits on a future of its own, settled from the
    key's; the key's is cancelled when its last caller is (Strawberry then cancels the
    batch's statement once all its keys are: no load outlives its operation)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting: dict[asyncio.Future[Any], int] = {}  # callers of each pending key

    def load(self, key: K) -> Awaitable[V]:
        held = HELD.get()
        if held is not None and held.open:  # loaded with the rest held (`held_loads`)
            waiting: asyncio.Future[V] = self.loop.create_future()
            held.loads.append((self, key, waiting))
            return waiting
        return self._load(key, None)

    def _load(self, key: K, mine: asyncio.Future[V] | None) -> Awaitable[V]:
        shared = super().load(key)  # Strawberry's: always a future
        assert isinstance(shared, asyncio.Future)
        if shared.done():
            if mine is None:
                return shared  # a cancelled task can't cancel a future that is done
            _settle(mine, shared)
            return mine
        if mine is None:
            mine = self.loop.create_future()
        self._waiting[shared] = self._waiting.get(shared, 0) + 1
        shared.add_done_callback(functools.partial(_settle, mine))
        mine.add_done_callback(functools.partial(self._left, shared))
        return mine

    def _left(self, shared: asyncio.Future[Any], _: asyncio.Future[Any]) -> None:
        """One caller is done waiting (answered, or cancelled): the last one of a key still
        pending cancels it."""
        left = self._waiting.get(shared, 1) - 1
        if left > 0:
            self._waiting[shared] = left
            return
        self._waiting.pop(shared, None)
        if not shared.done():
            shared.cancel()


class _Held:
    """The loads asked for while `held_loads` holds them: (loader, key, future). Closed once
    they are made: a task started meanwhile (its context a copy) loads as usual after."""

    __slots__ = ("loads", "open")

    def __init__(self) -> None:
        self.loads: list[tuple[Loader[Any, Any], Any, asyncio.Future[Any]]] = []
        self.open = True


HELD: ContextVar[_Held | None] = ContextVar("giftgraph_held_loads", default=None)


@contextlib.contextmanager
def held_loads() -> Iterator[None]:
    """The loads asked for in this task meanwhile are made together at its end: a batch
    per loader, as in one turn of the event loop, though the task gave other tasks turns
    in between (the lean executor completing a wave in slices; a loader dispatches its
    batch on the loop's next turn, so each slice had made a statement of its own). A load
    whose caller stopped waiting meanwhile is not made."""
    held = _Held()
    token = HELD.set(held)
    try:
        yield
    finally:
        HELD.reset(token)
        held.open = False
        for loader, key, waiting in held.loads:
            if not waiting.done():
                loader._load(key, waiting)


def _settle(mine: asyncio.Future[Any], shared: asyncio.Future[Any]) -> None:
    """A caller's future, as the key's has ended (its exception read here either way: it is
    the callers' to report, not asyncio's 'never retrieved')."""
    if shared.cancelled():
        if not mine.done():
            mine.cancel()
        return
    exc = shared.exception()
    if mine.done():
        return
    if exc is not None:
        mine.set_exception(exc)
    else:
        mine.set_result(shared.result())


class RowLoader(Loader[K, V]):
    """A loader of rows by key that also keeps what `load_now` made of them: a row many
    parents point to (the gift of many items, the assignee of many) becomes one object,
    not one per parent. The objects are read-only, like the rows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.converted: dict[tuple[Callable[[Any], Any], Hashable], Any] = {}

    def clear(self, key: K) -> None:
        super().clear(key)
        self.converted.clear()

    def clear_all(self) -> None:
        super().clear_all()
        self.converted.clear()


async def _convert(pending: Awaitable[V | None], convert: Callable[[V], R]) -> R | None:
    row = await pending
    return None if row is None else convert(row)


async def prefetch(*loads: tuple[DataLoader[K, Any], Iterable[K | None]]) -> None:
    """Load these keys now, batched with every sibling's, so that the fields reading them
    resolve at once (`load_now`). Failures stay in the loader's cache, for the field that
    reads them to report exactly as it would without prefetching."""
    pending = [loader.load(key) for loader, keys in loads
               for key in set(keys) if key is not None]
    try:
        for future in pending:  # a loader's keys are one batch: its first wait is the only one
            with contextlib.suppress(Exception):
                await future
    except asyncio.CancelledError:
        for future in pending:  # its own waits (`Loader`): a key goes with its last caller
            if isinstance(future, asyncio.Future):
                future.cancel()
        raise


class _Made(Generic[L]):
    """A loader of `Loaders`, made when the operation first reads it. Most operations use
    a few of them, an event's snapshot for `familyEvents { seq at }` none; shared
    scopes (live/streams.py) are made per event and per dashboard version and live a while,
    and their unused loaders filled the young generation whose collections pause the loop."""

    def __init__(self, make: Callable[[Loaders], L]) -> None:
        self.make = make
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, loaders: None, owner: type | None = None) -> _Made[L]: ...
    @overload
    def __get__(self, loaders: Loaders, owner: type | None = None) -> L: ...
    def __get__(self, loaders: Loaders | None, owner: type | None = None) -> L | _Made[L]:
        if loaders is None:
            return self
        if "db" not in loaders.__dict__:  # closed (`Loaders.close`): its operation is over
            raise AttributeError(self.name)
        loader = loaders.__dict__[self.name] = self.make(loaders)  # read there from now on
        return loader


def _by_id_loader(model: type[m.Owned]) -> _Made[RowLoader[uuid.UUID, Record | None]]:
    """The `Loaders` loader of `model`'s rows by primary key."""
    return _Made(lambda loaders: loaders._by_id(model))


class Loaders:
    """All loaders of one operation, scoped to the caller's family."""

    user = _by_id_loader(m.User)
    person = _by_id_loader(m.Person)
    occasion = _by_id_loader(m.Occasion)
    gift_list = _by_id_loader(m.GiftList)
    gift = _by_id_loader(m.Gift)
    list_item = _by_id_loader(m.ListItem)
    comment = _by_id_loader(m.Comment)

    @_Made
    def family(self) -> RowLoader[uuid.UUID, Any]:
        return RowLoader(self._families)

    @_Made
    def list_items(self) -> DataLoader[Key, Page[Record]]:
        return Loader(self._item_pages)

    @_Made
    def list_item_counts(self) -> DataLoader[CountKey, int]:
        return Loader(self._item_counts)

    @_Made
    def gift_history(self) -> DataLoader[Key, Page[Record]]:
        return Loader(self._history_pages)

    @_Made
    def gift_history_counts(self) -> DataLoader[CountKey, int]:
        return Loader(self._history_counts)

    @_Made
    def comment_counts(self) -> DataLoader[CountKey, int]:
        return Loader(self._comment_counts)

    @_Made
    def occasion_progress(self) -> DataLoader[uuid.UUID, tuple[list[q.Progress], q.Spending]]:
        return Loader(self._occasion_progress)

    def __init__(self, db: OperationDb, family_id: uuid.UUID) -> None:
        self.db = db
        self.family_id = family_id

    def clear(self) -> None:
        """Forget cached rows (after a mutation changed them)."""
        for loader in vars(self).values():
            if isinstance(loader, DataLoader):
                loader.clear_all()

    def close(self) -> None:
        """At the operation's end. Each loader's batch function refers back to this object,
        a reference cycle that holds every row, future and batch the loaders kept (thousands
        per nested read) until the garbage collector's next pass; dropping the loaders
        breaks it, so all of that is freed at once instead (and the collector runs less)."""
        self.clear()
        vars(self).clear()

    def _by_id(self, model: type[m.Owned]) -> RowLoader[uuid.UUID, Record | None]:
        async def load(ids: list[uuid.UUID]) -> list[Record | None]:
            rows = await self.db.rows(by_id_statement(model),
                                      {"ids": ids, "family_id": self.family_id})
            found = {r.id: r for r in records(rows)}
            return [found.get(i) for i in ids]

        return RowLoader(load)

    async def _families(self, ids: list[uuid.UUID]) -> list[Record | None]:
        # A user only ever reaches its own family (`family_id` is the caller's).
        rows = await self.db.rows(by_id_statement(m.Family),
                                  {"ids": ids, "family_id": self.family_id})
        found = {r.id: r for r in records(rows)}
        return [found.get(i) for i in ids]

    # Nested connections: keys are (parent id, page args, filter); one query per distinct
    # (page args, filter) however many parents ask.

    async def _pages(
        self,
        keys: Sequence[Key],
        base: Callable[[Hashable], Select[Any]],
        parent: ColumnElement[Any] | InstrumentedAttribute[Any],
        order: Order,
    ) -> list[Page[Any]]:
        groups: dict[tuple[PageArgs, Hashable], list[uuid.UUID]] = defaultdict(list)
        for pid, args, flt in keys:
            groups[(args, flt)].append(pid)
        results: dict[Key, Page[Any]] = {}
        for (args, flt), pids in groups.items():
            unique = list(dict.fromkeys(pids))
            if args.cursor is None:  # the usual case: the same statement every time
                cached = (base.__name__, order.name, flt, args.backward)
                stmt = _PAGE_STATEMENTS.get(cached)
                if stmt is None:
                    stmt = _PAGE_STATEMENTS[cached] = pages_statement(base(flt), parent,
                                                                      order, args)
            else:  # the cursor's values are part of the statement
                stmt = pages_statement(base(flt), parent, order, args)
            rows = records(await self.db.rows(stmt, {"parents": unique, "limit": args.limit + 1,
                                                     "family_id": self.family_id}))
            for pid, page in group_pages(rows, unique, order, args).items():
                results[(pid, args, flt)] = page
        return [results[k] for k in keys]

    async def _counts(
        self, keys: Sequence[CountKey], base: Callable[[Hashable], Select[Any]],
        parent: ColumnElement[Any] | InstrumentedAttribute[Any],
    ) -> list[int]:
        groups: dict[Hashable, list[uuid.UUID]] = defaultdict(list)
        for pid, flt in keys:
            groups[flt].append(pid)
        counts: dict[CountKey, int] = {}
        for flt, pids in groups.items():
            cached = (base.__name__, flt)
            stmt = _COUNT_STATEMENTS.get(cached)
            if stmt is None:
                stmt = _COUNT_STATEMENTS[cached] = (
                    base(flt)
                    .with_only_columns(parent, func.count())
                    .where(parent == any_(bindparam("parents", type_=ARRAY(parent.type))))
                    .group_by(parent)
                )
            found = dict(await self.db.rows(stmt, {"parents": list(dict.fromkeys(pids)),
                                                   "family_id": self.family_id}))
            for pid in pids:
                counts[(pid, flt)] = found.get(pid, 0)
        return [counts[k] for k in keys]

    @staticmethod
    def _items_base(status: Hashable) -> Select[Any]:
        stmt = select(*columns(m.ListItem)).where(m.ListItem.family_id == FAMILY)
        if status is not None:
            stmt = stmt.where(m.ListItem.status == status)
        return stmt

    async def _item_pages(self, keys: list[Key]) -> list[Page[Record]]:
        return await self._pages(keys, self._items_base, m.ListItem.list_id, q.ITEMS)

    async def _item_counts(self, keys: list[CountKey]) -> list[int]:
        return await self._counts(keys, self._items_base, m.ListItem.list_id)

    @staticmethod
    def _history_base(_: Hashable) -> Select[Any]:
        # The item's list, of its family (an item on another family's list is no one's
        # history here).
        return (
            select(*columns(m.ListItem))
            .join(m.GiftList, and_(
                m.GiftList.id == m.ListItem.list_id,
                m.GiftList.family_id.is_not_distinct_from(m.ListItem.family_id)))
            .where(m.ListItem.family_id == FAMILY, m.ListItem.status.in_(q.SPENT_STATUSES))
        )

    async def _history_pages(self, keys: list[Key]) -> list[Page[Record]]:
        return await self._pages(keys, self._history_base, m.GiftList.person_id, q.HISTORY)

    async def _history_counts(self, keys: list[CountKey]) -> list[int]:
        return await self._counts(keys, self._history_base, m.GiftList.person_id)

    @staticmethod
    def _comments_base(target: Hashable) -> Select[Any]:
        return select(*columns(m.Comment)).where(m.Comment.family_id == FAMILY,
                                                 m.Comment.target == target)

    async def _comment_counts(self, keys: list[CountKey]) -> list[int]:
        """Comments per (target's id, target kind): one statement per kind asked for."""
        return await self._counts(keys, self._comments_base, m.Comment.target_id)

    async def _occasion_progress(
        self, ids: list[uuid.UUID]
    ) -> list[tuple[list[q.Progress], q.Spending]]:
        rows = await self.db.rows(OCCASION_PROGRESS, {"family_id": self.family_id, "ids": ids})
        by_occasion: dict[uuid.UUID, list[Any]] = defaultdict(list)
        for occasion_id, *rest in rows:
            by_occasion[occasion_id].append(rest)
        out = []
        for oid in ids:
            people, total = q.fold_progress(by_occasion.get(oid, []))
            out.append((list(people.values()), total))
        return out
