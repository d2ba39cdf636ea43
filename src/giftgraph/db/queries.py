"""Read queries: sort orders of every connection and the aggregate views."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from giftgraph.db import models as m
from giftgraph.db.pagination import Order

USERS = Order("users", (m.User.created_at, m.User.id))
PERSONS = Order("persons", (m.Person.name, m.Person.id))
OCCASIONS = Order("occasions", (m.Occasion.date, m.Occasion.id))
LISTS = Order("lists", (m.GiftList.created_at, m.GiftList.id))
GIFTS = Order("gifts", (m.Gift.created_at, m.Gift.id))
ITEMS = Order("items", (m.ListItem.created_at, m.ListItem.id))
HISTORY = Order("history", (m.ListItem.updated_at, m.ListItem.id), desc=True)
COMMENTS = Order("comments", (m.Comment.created_at, m.Comment.id))
EVENTS = Order("events", (m.Event.seq,), desc=True)

SPENT_STATUSES = (m.ItemStatus.PURCHASED, m.ItemStatus.RECEIVED)
ZERO = Decimal("0.00")


def like_pattern(search: str) -> str:
    """`%search%` for LIKE/ILIKE, its wildcards (and the escape character) taken literally.

    `persons.name` and `gifts.name` have trigram GIN indexes (migration 0003) where the
    server ships pg_trgm, which serve this ILIKE; without them it scans the family's rows."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass
class Pipeline:
    idea: int = 0
    selected: int = 0
    purchased: int = 0
    received: int = 0

    def add(self, status: m.ItemStatus | None, n: int) -> None:
        if status is not None:
            setattr(self, status.value.lower(), getattr(self, status.value.lower()) + n)


@dataclass
class Progress:
    person_id: uuid.UUID
    pipeline: Pipeline = field(default_factory=Pipeline)
    spent: Decimal = ZERO


# Money spent on an item: price x quantity once PURCHASED or RECEIVED. Built once: an
# operator on a derived expression (`coalesce(...) * quantity`) memoizes a comparator that
# refers back to it, a reference cycle in every statement that built it anew.
SPENT: ColumnElement[Any] = func.coalesce(
    func.sum(
        case(
            (
                m.ListItem.status.in_(SPENT_STATUSES),
                func.coalesce(m.Gift.price, 0) * m.ListItem.quantity,
            ),
            else_=0,
        )
    ),
    0,
)


def progress_statement(family_id: uuid.UUID | BindParameter[Any],
                       *group: ColumnElement[Any]) -> Select[Any]:
    """Per (group..., status): item count and money spent, over lists with their items."""
    return (
        select(*group, m.ListItem.status, func.count(m.ListItem.id), SPENT)
        .select_from(m.GiftList)
        .outerjoin(m.ListItem, m.ListItem.list_id == m.GiftList.id)
        .outerjoin(m.Gift, m.Gift.id == m.ListItem.gift_id)
        .where(m.GiftList.family_id == family_id)
        .group_by(*group, m.ListItem.status)
    )


def fold_progress(rows: Sequence[Any]) -> tuple[dict[uuid.UUID, Progress], Decimal]:
    """Rows of (person_id, status, count, spent) → progress per person, and the total spent."""
    people: dict[uuid.UUID, Progress] = {}
    total = ZERO
    for person_id, status, count, spent in rows:
        total += Decimal(spent)
        if person_id is None:
            continue
        p = people.setdefault(person_id, Progress(person_id))
        p.pipeline.add(status, count)
        p.spent += Decimal(spent)
    return people, total

