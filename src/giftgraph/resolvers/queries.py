"""Cross-entity queries: node(id), the activity log, and the dashboard."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

import strawberry
from sqlalchemy import bindparam, func, select, true
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from giftgraph.context import Info
from giftgraph.db import models as m
from giftgraph.db import queries as q
from giftgraph.db.session import OperationDb
from giftgraph.errors import BadInput, NotFound
from giftgraph.ids import parse_id
from giftgraph.resolvers.common import list_connection
from giftgraph.schema.arguments import After, Before, First, Last
from giftgraph.schema.connection import Connection
from giftgraph.schema.lookahead import prefetch_selected
from giftgraph.schema.types import (
    NODE_TYPES,
    SPENT_BY_CURRENCY,
    Event,
    ListItem,
    Money,
    Node,
    Occasion,
    PersonProgress,
    Pipeline,
    item_relations,
    to_node,
)

NEXT_OCCASIONS = 5
RECENT_IDEAS = 10
RECENT_ACTIVITY = 20
# `node`'s loader of each type, by its name in `Loaders` (made when first read).
NODE_LOADERS = {"Family": "family", "User": "user", "Person": "person", "Occasion": "occasion",
                "GiftList": "gift_list", "Gift": "gift", "ListItem": "list_item",
                "Comment": "comment"}


def search_condition(info: Info, column: InstrumentedAttribute[str],
                     search: str | None) -> ColumnElement[bool] | None:
    """`column` contains `search`, case-insensitively (None: no search). A search longer
    than `max_search_length` is refused (and counted) before any SQL is built or run."""
    if not search:
        return None
    ctx = info.context
    if len(search) > ctx.settings.max_search_length:
        ctx.count_refusal("search_length")
        raise BadInput({"search": f"at most {ctx.settings.max_search_length} characters"})
    return column.ilike(q.like_pattern(search))


async def node(
    info: Info,
    id: Annotated[strawberry.ID, strawberry.argument(
        description="The global ID of any object of your family (an Event's too).")],
) -> Node | None:
    """Any object of the caller's family by global ID; anything else is NOT_FOUND."""
    family_id = info.context.family_id
    type_name, key = parse_id(id)
    if type_name == "Event":
        if not isinstance(key, tuple) or key[0] != family_id:
            raise NotFound()
        row = await info.context.db.scalar(
            select(m.Event).where(m.Event.family_id == family_id, m.Event.seq == key[1])
        )
        if row is None:
            raise NotFound()
        return Event.from_model(row)
    if type_name not in NODE_TYPES or not isinstance(key, uuid.UUID):
        raise NotFound()
    pk = key
    loaders = info.context.loaders
    loader = getattr(loaders, NODE_LOADERS[type_name])  # only that one is made
    row = await loader.load(pk)
    if row is None:
        raise NotFound()
    return to_node(type_name, row)


async def events(info: Info, first: First = None, after: After = None,
                 last: Last = None, before: Before = None,
                 topic: Annotated[str | None, strawberry.argument(
                     description="Only this topic's events, spelt as in Event.topic (e.g. "
                                 "list:{id}); omitted: family, where each change appears "
                                 "once.")] = None) -> Connection[Event]:
    """The activity log, newest first: one event per change (topic `family`) by default."""
    stmt = select(m.Event).where(
        m.Event.family_id == info.context.family_id, m.Event.topic == (topic or "family")
    )
    return await list_connection(info, stmt, q.EVENTS, Event.from_model,
                                 first, after, last, before,
                                 {"actor": (info.context.loaders.user, "actor_id")})


# The dashboard's statements are built once, with the family and the date as parameters:
# building SQLAlchemy expressions and their cache keys each time is work repeated on every read.
FAMILY: BindParameter[Any] = bindparam("family_id")
TODAY: BindParameter[Any] = bindparam("today")
NEXT_OCCASIONS_SQL = (select(m.Occasion)
                      .where(m.Occasion.family_id == FAMILY, m.Occasion.date >= TODAY)
                      .order_by(m.Occasion.date, m.Occasion.id).limit(NEXT_OCCASIONS))
PIPELINE_SQL = (select(m.ListItem.status, func.count())
                .where(m.ListItem.family_id == FAMILY).group_by(m.ListItem.status))
# Per person (by name), per (status, currency) of the items of their lists: count, money
# spent. Each person's lists by the person's index, their items by `q.items_of`, grouped
# per person: no join the planner could turn into reading every family's lists. Lists of
# the person's family only (the family checked as `q.items_of` does).
_PERSON_LISTS = (select(m.GiftList.id, m.GiftList.family_id)
                 .where(m.GiftList.person_id == m.Person.id,
                        m.GiftList.family_id.is_not_distinct_from(m.Person.family_id))
                 .correlate(m.Person).offset(0).lateral("person_lists"))
_PERSON_ITEMS = q.items_of(_PERSON_LISTS.c.id, _PERSON_LISTS.c.family_id, "person_items")
_PERSON_PROGRESS = (select(_PERSON_ITEMS.c.status, _PERSON_ITEMS.c.currency,
                           func.count(_PERSON_ITEMS.c.id).label("n"),
                           q.spent_of(_PERSON_ITEMS).label("spent"))
                    .select_from(_PERSON_LISTS).join(_PERSON_ITEMS, true())
                    .group_by(_PERSON_ITEMS.c.status, _PERSON_ITEMS.c.currency)
                    .lateral("progress"))
PEOPLE_SQL = (select(m.Person.id, _PERSON_PROGRESS.c.status, _PERSON_PROGRESS.c.currency,
                     func.coalesce(_PERSON_PROGRESS.c.n, 0),
                     func.coalesce(_PERSON_PROGRESS.c.spent, 0), q.family_currency(FAMILY))
              .select_from(m.Person).outerjoin(_PERSON_PROGRESS, true())
              .where(m.Person.family_id == FAMILY)
              .order_by(m.Person.name, m.Person.id))
RECENT_IDEAS_SQL = (select(m.ListItem)
                    .where(m.ListItem.family_id == FAMILY,
                           m.ListItem.status == m.ItemStatus.IDEA)
                    .order_by(m.ListItem.created_at.desc(), m.ListItem.id.desc())
                    .limit(RECENT_IDEAS))
ACTIVITY_SQL = (select(m.Event).where(m.Event.family_id == FAMILY, m.Event.topic == "family")
                .order_by(m.Event.seq.desc()).limit(RECENT_ACTIVITY))
BUDGET_SQL = (select(func.sum(m.Occasion.budget))
              .where(m.Occasion.family_id == FAMILY, m.Occasion.date >= TODAY))
# Per currency: money spent on items of lists for upcoming occasions: the family's lists,
# each list's occasion by its key (of the family: a list for another family's occasion is
# for none), their PURCHASED and RECEIVED items by `q.items_of` (filtered before their
# gifts are read).
_LIST_DATE = (select(m.Occasion.date)
              .where(m.Occasion.id == m.GiftList.occasion_id,
                     m.Occasion.family_id.is_not_distinct_from(m.GiftList.family_id))
              .scalar_subquery())
_SPENT_ITEMS = q.items_of(m.GiftList.id, m.GiftList.family_id, "i", q.SPENT_STATUSES)
SPENT_SQL = (select(_SPENT_ITEMS.c.currency, q.spent_of(_SPENT_ITEMS),
                    q.family_currency(FAMILY))
             .select_from(m.GiftList).join(_SPENT_ITEMS, true())
             .where(m.GiftList.family_id == FAMILY, _SPENT_ITEMS.c.family_id == FAMILY,
                    _LIST_DATE >= TODAY)
             .group_by(_SPENT_ITEMS.c.currency))


async def _next_occasions(db: OperationDb, family_id: uuid.UUID, today: date) -> list[Occasion]:
    rows = await db.scalars(NEXT_OCCASIONS_SQL, {"family_id": family_id, "today": today})
    return [Occasion.from_model(r) for r in rows]


async def _pipeline(db: OperationDb, family_id: uuid.UUID, today: date) -> Pipeline:
    counts = q.Pipeline()
    for status, n in await db.rows(PIPELINE_SQL, {"family_id": family_id}):
        counts.add(status, n)
    return Pipeline.from_counts(counts)


async def _people(db: OperationDb, family_id: uuid.UUID, today: date) -> list[PersonProgress]:
    people, _ = q.fold_progress(await db.rows(PEOPLE_SQL, {"family_id": family_id}))
    return [PersonProgress.from_progress(p) for p in people.values()]


async def _recent_ideas(db: OperationDb, family_id: uuid.UUID, today: date) -> list[ListItem]:
    rows = await db.scalars(RECENT_IDEAS_SQL, {"family_id": family_id})
    return [ListItem.from_model(r) for r in rows]


async def _activity(db: OperationDb, family_id: uuid.UUID, today: date) -> list[Event]:
    rows = await db.scalars(ACTIVITY_SQL, {"family_id": family_id})
    return [Event.from_model(r) for r in rows]


async def _budget(db: OperationDb, family_id: uuid.UUID, today: date) -> Decimal | None:
    return await db.scalar(BUDGET_SQL, {"family_id": family_id, "today": today})


async def _spent(db: OperationDb, family_id: uuid.UUID, today: date) -> q.Spending:
    return q.fold_spending(await db.rows(SPENT_SQL, {"family_id": family_id, "today": today}))


PARTS: dict[str, Callable[[OperationDb, uuid.UUID, date], Awaitable[Any]]] = {
    "next_occasions": _next_occasions, "pipeline": _pipeline, "people": _people,
    "recent_ideas": _recent_ideas, "activity": _activity, "budget": _budget, "spent": _spent,
}
# Dashboard's fields (as selected) and the part each reads.
PART_OF = {"nextOccasions": "next_occasions", "pipeline": "pipeline", "people": "people",
           "recentIdeas": "recent_ideas", "activity": "activity", "budget": "budget",
           "spent": "spent", "spentByCurrency": "spent"}


@strawberry.type(description="The family at a glance; each part is computed once, if asked.")
class Dashboard:
    family_id: strawberry.Private[uuid.UUID]
    parts: strawberry.Private[dict[str, asyncio.Future[Any]]]

    @classmethod
    def for_family(cls, family_id: uuid.UUID) -> Dashboard:
        return cls(family_id=family_id, parts={})

    async def part(self, name: str, db: OperationDb) -> Any:
        """The part, computed by its first reader. Sibling fields resolve concurrently
        (`spent` and `spentByCurrency` read one part): the others wait for that first one."""
        while (pending := self.parts.get(name)) is not None:
            try:
                # Shielded: a reader cancelled while it waits (graphql-core cancels the
                # sibling fields of one that failed) must not cancel the part for the
                # others, nor its first reader's `set_result`.
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise  # this reader was cancelled, not only the part's first reader
                # Its first reader was cancelled (and the part forgotten): compute it here.
        pending = self.parts[name] = asyncio.get_running_loop().create_future()
        try:
            value = await PARTS[name](db, self.family_id, datetime.now(UTC).date())
        except BaseException as exc:
            del self.parts[name]  # a later reader computes it again
            if isinstance(exc, Exception):
                pending.set_exception(exc)
                pending.exception()  # retrieved: only the waiting readers (if any) raise it
            else:  # cancelled: a reader waiting for it computes it again
                pending.cancel()
            raise
        pending.set_result(value)
        return value

    async def prefetch(self, db: OperationDb, names: Iterable[str] | None = None) -> Dashboard:
        """Compute these parts (every one by default) now: a snapshot shared by many
        subscribers. A part left out is computed by its first reader (`part`)."""
        for name in PARTS if names is None else sorted(names):
            await self.part(name, db)
        return self

    @strawberry.field(description="The next occasions from today on, soonest first.")
    async def next_occasions(self, info: Info) -> list[Occasion]:
        return await self.part("next_occasions", info.context.db)  # type: ignore[no-any-return]

    @strawberry.field(description="Items by status across the family.")
    async def pipeline(self, info: Info) -> Pipeline:
        return await self.part("pipeline", info.context.db)  # type: ignore[no-any-return]

    @strawberry.field(description="Every person with their items by status and money spent.")
    async def people(self, info: Info) -> list[PersonProgress]:
        people = await self.part("people", info.context.db)
        await prefetch_selected(info, people, {"person": (info.context.loaders.person,
                                                          "person_id")})
        return people  # type: ignore[no-any-return]

    @strawberry.field(description="The newest items still at IDEA.")
    async def recent_ideas(self, info: Info) -> list[ListItem]:
        items = await self.part("recent_ideas", info.context.db)
        await prefetch_selected(info, items, item_relations(info.context.loaders))
        return items  # type: ignore[no-any-return]

    @strawberry.field(description="The latest changes, newest first.")
    async def activity(self, info: Info) -> list[Event]:
        events = await self.part("activity", info.context.db)
        await prefetch_selected(info, events, {"actor": (info.context.loaders.user, "actor_id")})
        return events  # type: ignore[no-any-return]

    @strawberry.field(description="Sum of the budgets of upcoming occasions, in the family's "
                                  "currency (null if none set).")
    async def budget(self, info: Info) -> Decimal | None:
        return await self.part("budget", info.context.db)  # type: ignore[no-any-return]

    @strawberry.field(description="Money spent on items of lists for upcoming occasions, in "
                                  "the family's currency only (see spentByCurrency). Two "
                                  "decimal places.")
    async def spent(self, info: Info) -> Decimal:
        spending: q.Spending = await self.part("spent", info.context.db)
        return spending.spent

    @strawberry.field(description=SPENT_BY_CURRENCY)
    async def spent_by_currency(self, info: Info) -> list[Money]:
        return Money.list_of(await self.part("spent", info.context.db))


async def dashboard(info: Info) -> Dashboard:
    return Dashboard.for_family(info.context.family_id)
