"""GraphQL object types, converted from models at the edge (`X.from_model(row)`)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import strawberry

from giftgraph.context import Caller, Info
from giftgraph.db import models as m
from giftgraph.db import queries as q
from giftgraph.db.pagination import PageArgs
from giftgraph.ids import encode_id, event_id
from giftgraph.schema.connection import Connection, connection
from giftgraph.schema.enums import (
    CommentTarget,
    EventKind,
    ItemStatus,
    ListKind,
    OccasionKind,
    Role,
)
from giftgraph.schema.loaders import Loaders, MaybeAwaitable, load_now
from giftgraph.schema.lookahead import Relations, prefetch_selected


def page_args(info: Info, first: int | None, after: str | None,
              last: int | None, before: str | None) -> PageArgs:
    s = info.context.settings
    return PageArgs.parse(first, after, last, before,
                          default=s.default_page_size, maximum=s.max_page_size)


@strawberry.interface(description="An object with a global ID (Relay).")
class Node:
    id: strawberry.ID


FAMILY_CURRENCY = (
    "The family's currency, an ISO 4217 code such as USD (USD unless chosen at signUp or "
    "changed by an ADMIN with updateFamily). Budgets are in it, and every `spent` counts "
    "only the items priced in it.")


@strawberry.type
class Family(Node):
    name: str
    currency: str = strawberry.field(description=FAMILY_CURRENCY)
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, r: m.Family) -> Family:
        return cls(id=strawberry.ID(encode_id("Family", r.id)), name=r.name,
                   currency=r.currency, created_at=r.created_at, updated_at=r.updated_at)


@strawberry.type
class User(Node):
    email: str
    display_name: str
    role: Role
    is_active: bool
    created_at: datetime
    updated_at: datetime
    family_id: strawberry.Private[uuid.UUID]

    @classmethod
    def from_model(cls, r: m.User | Caller) -> User:
        return cls(id=strawberry.ID(encode_id("User", r.id)), email=r.email,
                   display_name=r.display_name, role=r.role, is_active=r.is_active,
                   created_at=r.created_at, updated_at=r.updated_at, family_id=r.family_id)

    # Relations are plain (not async) resolvers that return the object at once when the
    # loader already holds its row, else an awaitable (see `load_now`). A required relation
    # can only be None if a foreign key were broken; graphql-core then reports the null.
    @strawberry.field(graphql_type=Family)
    def family(self, info: Info) -> MaybeAwaitable[Family | None]:
        return load_now(info.context.loaders.family, self.family_id, Family.from_model)


def _user(info: Info, user_id: uuid.UUID | None) -> MaybeAwaitable[User | None]:
    if user_id is None:
        return None
    return load_now(info.context.loaders.user, user_id, User.from_model)


@strawberry.type
class Person(Node):
    name: str
    relationship: str | None
    birthday: date | None
    interests: list[str]
    notes: str | None
    created_at: datetime
    updated_at: datetime
    pk: strawberry.Private[uuid.UUID]

    @classmethod
    def from_model(cls, r: m.Person) -> Person:
        return cls(id=strawberry.ID(encode_id("Person", r.id)), name=r.name,
                   relationship=r.relationship, birthday=r.birthday,
                   interests=list(r.interests or []), notes=r.notes,
                   created_at=r.created_at, updated_at=r.updated_at, pk=r.id)

    @strawberry.field(
        description="Items for this person that were PURCHASED or RECEIVED, newest first.")
    async def gift_history(
        self, info: Info, first: int | None = None, after: str | None = None,
        last: int | None = None, before: str | None = None,
    ) -> Connection[ListItem]:
        args = page_args(info, first, after, last, before)
        loaders = info.context.loaders
        page = await loaders.gift_history.load((self.pk, args, None))
        await prefetch_selected(info, page.rows, item_relations(loaders), "edges", "node")
        return connection(page, ListItem.from_model,
                          lambda: loaders.gift_history_counts.load((self.pk, None)))


def _person(info: Info, person_id: uuid.UUID | None) -> MaybeAwaitable[Person | None]:
    if person_id is None:
        return None
    return load_now(info.context.loaders.person, person_id, Person.from_model)


@strawberry.type
class Pipeline:
    idea: int
    selected: int
    purchased: int
    received: int

    @classmethod
    def from_counts(cls, p: q.Pipeline) -> Pipeline:
        return cls(idea=p.idea, selected=p.selected, purchased=p.purchased, received=p.received)


SPENT = ("Money spent (price x quantity of the PURCHASED and RECEIVED items) in the family's "
         "currency: items priced in another currency are not added (see spentByCurrency). "
         "Two decimal places.")
SPENT_BY_CURRENCY = (
    "Money spent per currency: one entry for each currency that at least one PURCHASED or "
    "RECEIVED item is priced in (its gift's currency; an item without a price counts 0), "
    "sorted by currency code (A to Z). No entry is added for a currency with nothing spent in it, "
    "the family's included: [] when nothing was spent; where there is an entry for the "
    "family's currency, its amount is `spent`.")


@strawberry.type(description="An amount of money in one currency.")
class Money:
    amount: Decimal = strawberry.field(description="With two decimal places, e.g. \"9.00\".")
    currency: str = strawberry.field(description="An ISO 4217 code, e.g. EUR.")

    @classmethod
    def list_of(cls, spending: q.Spending) -> list[Money]:
        return [cls(amount=amount, currency=currency)
                for currency, amount in spending.per_currency()]


@strawberry.type
class PersonProgress:
    pipeline: Pipeline
    spent: Decimal = strawberry.field(description=SPENT)
    spent_by_currency: list[Money] = strawberry.field(description=SPENT_BY_CURRENCY)
    person_id: strawberry.Private[uuid.UUID]

    @classmethod
    def from_progress(cls, p: q.Progress) -> PersonProgress:
        return cls(pipeline=Pipeline.from_counts(p.pipeline), spent=p.spending.spent,
                   spent_by_currency=Money.list_of(p.spending), person_id=p.person_id)

    @strawberry.field(graphql_type=Person)  # progress rows come from this family's persons
    def person(self, info: Info) -> MaybeAwaitable[Person | None]:
        return _person(info, self.person_id)


BUDGET = "In the family's currency (null: none set)."


@strawberry.type
class OccasionSummary:
    occasion: Occasion
    people: list[PersonProgress]
    budget: Decimal | None = strawberry.field(description=BUDGET)
    spent: Decimal = strawberry.field(description=SPENT)
    spent_by_currency: list[Money] = strawberry.field(description=SPENT_BY_CURRENCY)


@strawberry.type
class Occasion(Node):
    name: str
    kind: OccasionKind
    date: date
    description: str | None
    budget: Decimal | None = strawberry.field(description=BUDGET)
    created_at: datetime
    updated_at: datetime
    pk: strawberry.Private[uuid.UUID]

    @classmethod
    def from_model(cls, r: m.Occasion) -> Occasion:
        return cls(id=strawberry.ID(encode_id("Occasion", r.id)), name=r.name, kind=r.kind,
                   date=r.date, description=r.description, budget=r.budget,
                   created_at=r.created_at, updated_at=r.updated_at, pk=r.id)

    @strawberry.field(description="Per person: counts by status and money spent, vs the budget.")
    async def summary(self, info: Info) -> OccasionSummary:
        people, spending = await info.context.loaders.occasion_progress.load(self.pk)
        return OccasionSummary(
            occasion=self, people=[PersonProgress.from_progress(p) for p in people],
            budget=self.budget, spent=spending.spent,
            spent_by_currency=Money.list_of(spending),
        )


@strawberry.type
class Gift(Node):
    name: str
    url: str | None
    store: str | None = strawberry.field(description="The shop, parsed from the URL's host.")
    price: Decimal | None
    currency: str = strawberry.field(
        description="ISO 4217 code of the price. A gift created without one, or updated with "
                    "null, takes the family's currency at that moment (it does not follow "
                    "later changes of the family's currency).")
    image_url: str | None
    description: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, r: m.Gift) -> Gift:
        return cls(id=strawberry.ID(encode_id("Gift", r.id)), name=r.name, url=r.url,
                   store=r.store, price=r.price, currency=r.currency, image_url=r.image_url,
                   description=r.description, created_at=r.created_at, updated_at=r.updated_at)


@strawberry.type
class GiftList(Node):
    name: str
    kind: ListKind
    budget: Decimal | None = strawberry.field(description=BUDGET)
    created_at: datetime
    updated_at: datetime
    pk: strawberry.Private[uuid.UUID]
    person_id: strawberry.Private[uuid.UUID | None]
    occasion_id: strawberry.Private[uuid.UUID | None]
    owner_id: strawberry.Private[uuid.UUID]

    @classmethod
    def from_model(cls, r: m.GiftList) -> GiftList:
        return cls(id=strawberry.ID(encode_id("GiftList", r.id)), name=r.name, kind=r.kind,
                   budget=r.budget, created_at=r.created_at, updated_at=r.updated_at, pk=r.id,
                   person_id=r.person_id, occasion_id=r.occasion_id, owner_id=r.owner_id)

    @strawberry.field(graphql_type=Person | None)
    def person(self, info: Info) -> MaybeAwaitable[Person | None]:
        return _person(info, self.person_id)

    @strawberry.field(graphql_type=Occasion | None)
    def occasion(self, info: Info) -> MaybeAwaitable[Occasion | None]:
        if self.occasion_id is None:
            return None
        return load_now(info.context.loaders.occasion, self.occasion_id, Occasion.from_model)

    @strawberry.field(graphql_type=User)  # owner_id: a RESTRICT foreign key in the family
    def owner(self, info: Info) -> MaybeAwaitable[User | None]:
        return _user(info, self.owner_id)

    @strawberry.field
    async def items(
        self, info: Info, first: int | None = None, after: str | None = None,
        last: int | None = None, before: str | None = None, status: ItemStatus | None = None,
    ) -> Connection[ListItem]:
        args = page_args(info, first, after, last, before)
        loaders = info.context.loaders
        page = await loaders.list_items.load((self.pk, args, status))
        await prefetch_selected(info, page.rows, item_relations(loaders), "edges", "node")
        return connection(page, ListItem.from_model,
                          lambda: loaders.list_item_counts.load((self.pk, status)))


@strawberry.type
class ListItem(Node):
    status: ItemStatus
    quantity: int
    notes: str | None
    created_at: datetime
    updated_at: datetime
    list_id: strawberry.Private[uuid.UUID]
    gift_id: strawberry.Private[uuid.UUID]
    assignee_id: strawberry.Private[uuid.UUID | None]

    @classmethod
    def from_model(cls, r: m.ListItem) -> ListItem:
        return cls(id=strawberry.ID(encode_id("ListItem", r.id)), status=r.status,
                   quantity=r.quantity, notes=r.notes, created_at=r.created_at,
                   updated_at=r.updated_at, list_id=r.list_id, gift_id=r.gift_id,
                   assignee_id=r.assignee_id)

    @strawberry.field(graphql_type=GiftList)  # list_id: a CASCADE foreign key in the family
    def list(self, info: Info) -> MaybeAwaitable[GiftList | None]:
        return load_now(info.context.loaders.gift_list, self.list_id, GiftList.from_model)

    @strawberry.field(graphql_type=Gift)  # gift_id: a RESTRICT foreign key in the family
    def gift(self, info: Info) -> MaybeAwaitable[Gift | None]:
        return load_now(info.context.loaders.gift, self.gift_id, Gift.from_model)

    @strawberry.field(graphql_type=User | None)
    def assignee(self, info: Info) -> MaybeAwaitable[User | None]:
        return _user(info, self.assignee_id)


def item_relations(loaders: Loaders) -> Relations:
    """What a list item's relation fields load (for `prefetch_selected`)."""
    return {"gift": (loaders.gift, "gift_id"), "assignee": (loaders.user, "assignee_id"),
            "list": (loaders.gift_list, "list_id")}


def list_relations(loaders: Loaders) -> Relations:
    """What a gift list's relation fields load (for `prefetch_selected`)."""
    return {"person": (loaders.person, "person_id"), "owner": (loaders.user, "owner_id"),
            "occasion": (loaders.occasion, "occasion_id")}


@strawberry.type
class Comment(Node):
    target: CommentTarget
    target_id: strawberry.ID
    body: str
    created_at: datetime
    updated_at: datetime
    author_id: strawberry.Private[uuid.UUID | None]

    @classmethod
    def from_model(cls, r: m.Comment) -> Comment:
        return cls(id=strawberry.ID(encode_id("Comment", r.id)), target=r.target,
                   target_id=strawberry.ID(encode_id(TARGET_TYPES[r.target], r.target_id)),
                   body=r.body, created_at=r.created_at, updated_at=r.updated_at,
                   author_id=r.author_id)

    @strawberry.field(graphql_type=User | None,
                      description="Null once the author's account was deleted.")
    def author(self, info: Info) -> MaybeAwaitable[User | None]:
        return _user(info, self.author_id)


TARGET_TYPES: dict[m.CommentTarget, str] = {
    m.CommentTarget.LIST: "GiftList",
    m.CommentTarget.LIST_ITEM: "ListItem",
    m.CommentTarget.GIFT: "Gift",
    m.CommentTarget.PERSON: "Person",
    m.CommentTarget.OCCASION: "Occasion",
}

NODE_TYPES: dict[str, Any] = {
    "Family": Family, "User": User, "Person": Person, "Occasion": Occasion,
    "GiftList": GiftList, "Gift": Gift, "ListItem": ListItem, "Comment": Comment,
}


def to_node(entity_type: str, row: Any) -> Node:
    return NODE_TYPES[entity_type].from_model(row)  # type: ignore[no-any-return]


@strawberry.type
class Event(Node):
    seq: str = strawberry.field(description="Monotonic cursor; pass it as `since` to resume.")
    topic: str
    kind: EventKind
    entity_type: str
    entity_id: strawberry.ID
    at: datetime
    actor_id: strawberry.Private[uuid.UUID | None]
    payload: strawberry.Private[dict[str, Any] | None]

    @classmethod
    def from_model(cls, r: m.Event) -> Event:
        return cls(id=strawberry.ID(event_id(r.family_id, r.seq)), seq=str(r.seq),
                   topic=r.topic, kind=r.kind, entity_type=r.entity_type,
                   entity_id=strawberry.ID(encode_id(r.entity_type, r.entity_id)), at=r.at,
                   actor_id=r.actor_id, payload=r.payload)

    @strawberry.field(graphql_type=User | None)
    def actor(self, info: Info) -> MaybeAwaitable[User | None]:
        return _user(info, self.actor_id)

    @strawberry.field(
        description="The entity as it was right after the change; null after DELETED.")
    def node(self) -> Node | None:
        from giftgraph.events import from_snapshot

        if self.payload is None:
            return None
        row = from_snapshot(self.entity_type, self.payload)
        return to_node(self.entity_type, row) if row is not None else None


@strawberry.type
class AuthPayload:
    access_token: str
    refresh_token: str
    expires_in: int = strawberry.field(description="Seconds until the access token expires.")
    user: User


@strawberry.type(description="Who is watching a topic right now.")
class Presence:
    topic: str
    viewers: list[User]


