"""Progress of the family's gift plans: items counted by status and money spent, per
person, occasion or family, from one aggregate statement (`progress_statement`) folded into
records (`fold_progress`, `fold_spending`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Select, case, func, select, true
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.selectable import LateralFromClause

from giftgraph.db import models as m

SPENT_STATUSES = (m.ItemStatus.PURCHASED, m.ItemStatus.RECEIVED)
ZERO = Decimal("0.00")


class CurrencyTotal(NamedTuple):
    currency: str  # ISO 4217
    amount: Decimal


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
class Spending:
    """Money spent: the total per currency, and what `spent` reports, the total in the
    family's currency (items priced in another currency are not added to it)."""

    family_currency: str | None = None  # None: nothing was spent (then it is not needed)
    by_currency: dict[str, Decimal] = field(default_factory=dict)

    def add(self, currency: str, amount: Decimal, family_currency: str) -> None:
        self.family_currency = family_currency
        self.by_currency[currency] = self.by_currency.get(currency, ZERO) + Decimal(amount)

    @property
    def spent(self) -> Decimal:
        """The total in the family's currency, two decimal places ("0.00" for none)."""
        amount = self.by_currency.get(self.family_currency or "", ZERO)
        return amount.quantize(ZERO)

    def per_currency(self) -> list[CurrencyTotal]:
        """The total for each currency with a PURCHASED or RECEIVED item, sorted by
        currency code, two decimal places (the family's currency is not added when nothing
        was spent in it)."""
        return [CurrencyTotal(c, self.by_currency[c].quantize(ZERO))
                for c in sorted(self.by_currency)]


@dataclass
class Progress:
    person_id: uuid.UUID
    pipeline: Pipeline = field(default_factory=Pipeline)
    spending: Spending = field(default_factory=Spending)


def items_of(list_id: ColumnElement[Any] | InstrumentedAttribute[Any],
             family_id: ColumnElement[Any] | InstrumentedAttribute[Any], name: str = "i",
             statuses: Sequence[m.ItemStatus] = ()) -> LateralFromClause:
    """The items of the list `list_id` (a column of the enclosing statement) that are of the
    family `family_id` (the caller's, a column or parameter), each with its gift's price
    and currency: a LATERAL subquery read by the list's index, each gift by its key. OFFSET
    0 keeps both lookups per row: flattened into plain joins, the planner could hash a
    whole table for them (`gift_lists`, `gifts` of every family) when it has no statistics,
    or a custom plan's estimates say so (bench/NOTES.md, "The dashboard's money").
    `statuses`: only items of these, filtered before their gifts are read.

    Only rows of the family count: an item of another family on its list, or an item whose
    gift is another family's (neither is ever written by the API; see tests/integration/
    test_forged_rows.py), is left out. The family is checked as `IS NOT DISTINCT FROM`, which
    no index serves, so that the keys' indexes stay the only ones the planner can pick (as
    accel/sql.py's `same_family`)."""
    gift = (select(m.Gift.price, m.Gift.currency)
            .where(m.Gift.id == m.ListItem.gift_id,
                   m.Gift.family_id.is_not_distinct_from(m.ListItem.family_id))
            .offset(0).lateral(f"{name}_gift"))
    items = (select(m.ListItem.id, m.ListItem.status, m.ListItem.quantity, m.ListItem.family_id,
                    gift.c.price, gift.c.currency)
             .select_from(m.ListItem).join(gift, true())
             .where(m.ListItem.list_id == list_id,
                    m.ListItem.family_id.is_not_distinct_from(family_id)))
    if statuses:
        items = items.where(m.ListItem.status.in_(statuses))
    return items.offset(0).lateral(name)


def spent_of(items: LateralFromClause) -> ColumnElement[Any]:
    """Money spent on `items` (`items_of`): price x quantity once PURCHASED or RECEIVED,
    whatever its currency (the statements group by currency)."""
    return func.coalesce(func.sum(case(
        (items.c.status.in_(SPENT_STATUSES), func.coalesce(items.c.price, 0) * items.c.quantity),
        else_=0)), 0)


# The items of each of the statement's `gift_lists` (lists of the caller's family), and the
# money spent on them. Built once: an operator on a derived expression (`coalesce(...) *
# quantity`) memoizes a comparator that refers back to it, a reference cycle in every
# statement that built it anew.
LIST_ITEMS = items_of(m.GiftList.id, m.GiftList.family_id)
SPENT: ColumnElement[Any] = spent_of(LIST_ITEMS)


def family_currency(family_id: uuid.UUID | BindParameter[Any]) -> ColumnElement[str]:
    """The family's currency, as a column of a statement (one lookup by primary key, run
    once per statement: no round trip of its own)."""
    return select(m.Family.currency).where(m.Family.id == family_id).scalar_subquery()


def progress_statement(
    family_id: uuid.UUID | BindParameter[Any],
    *group: ColumnElement[Any] | InstrumentedAttribute[Any],
) -> Select[*tuple[Any, ...]]:
    """Per (group..., status, currency): item count, money spent and the family's
    currency, over the family's lists with their items (see `fold_progress`)."""
    items = LIST_ITEMS
    return (
        select(*group, items.c.status, items.c.currency, func.count(items.c.id), SPENT,
               family_currency(family_id))
        .select_from(m.GiftList)
        .outerjoin(items, true())
        .where(m.GiftList.family_id == family_id)
        .group_by(*group, items.c.status, items.c.currency)
    )


def fold_progress(rows: Sequence[Any]) -> tuple[dict[uuid.UUID, Progress], Spending]:
    """Rows of (person_id, status, currency, count, spent, family currency) → progress per
    person, and the spending of all of them."""
    people: dict[uuid.UUID, Progress] = {}
    total = Spending()
    for person_id, status, currency, count, spent, family in rows:
        counted = status in SPENT_STATUSES and count > 0
        if counted:
            total.add(currency, spent, family)
        if person_id is None:
            continue
        p = people.setdefault(person_id, Progress(person_id))
        p.pipeline.add(status, count)
        if counted:
            p.spending.add(currency, spent, family)
    return people, total


def fold_spending(rows: Sequence[Any]) -> Spending:
    """Rows of (currency, spent, family currency), of PURCHASED and RECEIVED items only."""
    total = Spending()
    for currency, spent, family in rows:
        total.add(currency, spent, family)
    return total
