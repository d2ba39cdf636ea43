"""The GraphQL types of the family's data (the Node types, their relations and summaries),
converted from models at the edge (`X.from_model(row)`); comments and the auth payload are
in `comments.py`."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

import strawberry

from giftgraph.context import Caller, Info
from giftgraph.db import models as m
from giftgraph.db import progress
from giftgraph.db.pagination import PageArgs
from giftgraph.ids import encode_id
from giftgraph.schema.arguments import After, Before, First, Last
from giftgraph.schema.connection import Connection, connection
from giftgraph.schema.enums import (
    ItemStatus,
    ListKind,
    OccasionKind,
    Role,
)
from giftgraph.schema.loaders import Loaders, MaybeAwaitable, load_now, load_required
from giftgraph.schema.lookahead import Relations, prefetch_selected


def page_args(info: Info, first: int | None, after: str | None,
              last: int | None, before: str | None) -> PageArgs:
    s = info.context.settings
    return PageArgs.parse(first, after, last, before,
                          default=s.default_page_size, maximum=s.max_page_size)


@strawberry.interface(description="An object with a global ID (Relay); Query.node(id) "
                                   "fetches any of them again.")
class Node:
    id: strawberry.ID = strawberry.field(
        description="Global ID, opaque: use it exactly as given. Where an ID is taken, another "
                    "family's, or any other string, is NOT_FOUND.")


CREATED_AT = "When it was created (UTC)."
UPDATED_AT = "When it last changed (UTC)."


FAMILY_CURRENCY = (
    "The family's currency, an ISO 4217 code such as USD (USD unless chosen at signUp or "
    "changed by an ADMIN with updateFamily). Budgets are in it, and every `spent` counts "
    "only the items priced in it.")


@strawberry.type(description="The tenant: a family and everything it plans. Every object "
                              "belongs to one family, and a caller sees only its own.")
class Family(Node):
    name: str = strawberry.field(description="The family's name (1-200 characters).")
    currency: str = strawberry.field(description=FAMILY_CURRENCY)
    created_at: datetime = strawberry.field(description=CREATED_AT)
    updated_at: datetime = strawberry.field(description=UPDATED_AT)

    @classmethod
    def from_model(cls, r: m.Family) -> Family:
        return cls(id=strawberry.ID(encode_id("Family", r.id)), name=r.name,
                   currency=r.currency, created_at=r.created_at, updated_at=r.updated_at)


@strawberry.type(description="A member of the family, who logs in with an email and a "
                              "password.")
class User(Node):
    email: str = strawberry.field(
        description="The login email, unique across all families (ignoring case).")
    display_name: str = strawberry.field(
        description="The name shown to the family (1-100 characters).")
    role: Role = strawberry.field(description="What the member may do: ADMIN or MEMBER.")
    is_active: bool = strawberry.field(
        description="False once an ADMIN deactivated the member: they can't log in, and "
                    "their tokens and open subscriptions stop working.")
    created_at: datetime = strawberry.field(description=CREATED_AT)
    updated_at: datetime = strawberry.field(description=UPDATED_AT)
    family_id: strawberry.Private[uuid.UUID]

    @classmethod
    def from_model(cls, r: m.User | Caller) -> User:
        return cls(id=strawberry.ID(encode_id("User", r.id)), email=r.email,
                   display_name=r.display_name, role=r.role, is_active=r.is_active,
                   created_at=r.created_at, updated_at=r.updated_at, family_id=r.family_id)

    # Relations are plain (not async) resolvers that return the object at once when the
    # loader already holds its row, else an awaitable (see `load_now`); a required one
    # deleted since its parent was read is NOT_FOUND (`load_required`).
    @strawberry.field(graphql_type=Family, description="The member's family.")
    def family(self, info: Info) -> MaybeAwaitable[Family]:
        return load_required(info.context.loaders.family, self.family_id, Family.from_model,
                             "Family")


def user_of(info: Info, user_id: uuid.UUID | None) -> MaybeAwaitable[User | None]:
    if user_id is None:
        return None
    return load_now(info.context.loaders.user, user_id, User.from_model)


@strawberry.type(description="Someone the family gives gifts to.")
class Person(Node):
    name: str = strawberry.field(description="1-200 characters.")
    relationship: str | None = strawberry.field(
        description="How the family knows them, e.g. \"Grandma\" (at most 100 characters); "
                    "null if not given.")
    birthday: date | None = strawberry.field(
        description="Null if unknown; never in the future.")
    interests: list[str] = strawberry.field(
        description="What they like, in the order given (at most 50, each 1-100 characters); "
                    "[] if none.")
    notes: str | None = strawberry.field(
        description="Free text (at most 5000 characters); null if none.")
    created_at: datetime = strawberry.field(description=CREATED_AT)
    updated_at: datetime = strawberry.field(description=UPDATED_AT)
    pk: strawberry.Private[uuid.UUID]

    @classmethod
    def from_model(cls, r: m.Person) -> Person:
        return cls(id=strawberry.ID(encode_id("Person", r.id)), name=r.name,
                   relationship=r.relationship, birthday=r.birthday,
                   interests=list(r.interests or []), notes=r.notes,
                   created_at=r.created_at, updated_at=r.updated_at, pk=r.id)

    @strawberry.field(
        description="The items on this person's lists that are PURCHASED or RECEIVED, the "
                    "most recently changed first.")
    async def gift_history(
        self, info: Info, first: First = None, after: After = None,
        last: Last = None, before: Before = None,
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


@strawberry.type(description="How many list items are at each status.")
class Pipeline:
    idea: int = strawberry.field(description="Items at IDEA.")
    selected: int = strawberry.field(description="Items at SELECTED.")
    purchased: int = strawberry.field(description="Items at PURCHASED.")
    received: int = strawberry.field(description="Items at RECEIVED.")

    @classmethod
    def from_counts(cls, p: progress.Pipeline) -> Pipeline:
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
    def list_of(cls, spending: progress.Spending) -> list[Money]:
        return [cls(amount=amount, currency=currency)
                for currency, amount in spending.per_currency()]


@strawberry.type(description="One person's progress: their items by status, and the money "
                              "spent on them.")
class PersonProgress:
    pipeline: Pipeline = strawberry.field(
        description="Their items (on lists for this person) by status.")
    spent: Decimal = strawberry.field(description=SPENT)
    spent_by_currency: list[Money] = strawberry.field(description=SPENT_BY_CURRENCY)
    person_id: strawberry.Private[uuid.UUID]

    @classmethod
    def from_progress(cls, p: progress.Progress) -> PersonProgress:
        return cls(pipeline=Pipeline.from_counts(p.pipeline), spent=p.spending.spent,
                   spent_by_currency=Money.list_of(p.spending), person_id=p.person_id)

    # progress rows come from this family's persons
    @strawberry.field(graphql_type=Person, description="The person.")
    def person(self, info: Info) -> MaybeAwaitable[Person]:
        return load_required(info.context.loaders.person, self.person_id, Person.from_model,
                             "Person")


BUDGET = "In the family's currency (null: none set)."


@strawberry.type(description="An occasion's progress: per person, and in total against its "
                              "budget.")
class OccasionSummary:
    occasion: Occasion = strawberry.field(description="The occasion summarised.")
    people: list[PersonProgress] = strawberry.field(
        description="One entry per person with a list for this occasion, counting the items "
                    "on those lists. Items on lists without a person count only in the "
                    "totals.")
    budget: Decimal | None = strawberry.field(description=BUDGET)
    spent: Decimal = strawberry.field(description=SPENT)
    spent_by_currency: list[Money] = strawberry.field(description=SPENT_BY_CURRENCY)


@strawberry.type(description="A day the family plans gifts for, such as a birthday or a "
                              "holiday.")
class Occasion(Node):
    name: str = strawberry.field(description="1-200 characters.")
    kind: OccasionKind = strawberry.field(description="What kind of occasion it is.")
    date: date = strawberry.field(description="The day it falls on.")
    description: str | None = strawberry.field(
        description="Free text (at most 5000 characters); null if none.")
    budget: Decimal | None = strawberry.field(description=BUDGET)
    created_at: datetime = strawberry.field(description=CREATED_AT)
    updated_at: datetime = strawberry.field(description=UPDATED_AT)
    pk: strawberry.Private[uuid.UUID]

    @classmethod
    def from_model(cls, r: m.Occasion) -> Occasion:
        return cls(id=strawberry.ID(encode_id("Occasion", r.id)), name=r.name, kind=r.kind,
                   date=r.date, description=r.description, budget=r.budget,
                   created_at=r.created_at, updated_at=r.updated_at, pk=r.id)

    @strawberry.field(description="Progress of the lists for this occasion: per person, items "
                                  "by status and money spent, and the totals vs the budget.")
    async def summary(self, info: Info) -> OccasionSummary:
        people, spending = await info.context.loaders.occasion_progress.load(self.pk)
        return OccasionSummary(
            occasion=self, people=[PersonProgress.from_progress(p) for p in people],
            budget=self.budget, spent=spending.spent,
            spent_by_currency=Money.list_of(spending),
        )


@strawberry.type(description="Something that can go on lists: the same gift may be on "
                              "several.")
class Gift(Node):
    name: str = strawberry.field(description="1-200 characters; `gifts(search:)` matches it.")
    url: str | None = strawberry.field(
        description="Where to buy it: an http(s) URL (at most 2048 characters); null if none.")
    store: str | None = strawberry.field(
        description="The shop, derived from the URL's host without \"www.\" (e.g. "
                    "\"amazon.com\"); null without a URL.")
    price: Decimal | None = strawberry.field(
        description="The price of one, in `currency` (zero or more, two decimal places); null "
                    "if unknown (it then counts 0 in spent).")
    currency: str = strawberry.field(
        description="ISO 4217 code of the price. A gift created without one, or updated with "
                    "null, takes the family's currency at that moment (it does not follow "
                    "later changes of the family's currency).")
    image_url: str | None = strawberry.field(
        description="A picture of it: an http(s) URL (at most 2048 characters); null if none.")
    description: str | None = strawberry.field(
        description="Free text (at most 5000 characters); null if none.")
    created_at: datetime = strawberry.field(description=CREATED_AT)
    updated_at: datetime = strawberry.field(description=UPDATED_AT)

    @classmethod
    def from_model(cls, r: m.Gift) -> Gift:
        return cls(id=strawberry.ID(encode_id("Gift", r.id)), name=r.name, url=r.url,
                   store=r.store, price=r.price, currency=r.currency, image_url=r.image_url,
                   description=r.description, created_at=r.created_at, updated_at=r.updated_at)


@strawberry.type(description="A list of gifts (wishlist, ideas or plan), optionally for a "
                              "person and/or an occasion, owned by the member who created it.")
class GiftList(Node):
    name: str = strawberry.field(description="1-200 characters.")
    kind: ListKind = strawberry.field(description="What the list is for.")
    budget: Decimal | None = strawberry.field(description=BUDGET)
    created_at: datetime = strawberry.field(description=CREATED_AT)
    updated_at: datetime = strawberry.field(description=UPDATED_AT)
    pk: strawberry.Private[uuid.UUID]
    person_id: strawberry.Private[uuid.UUID | None]
    occasion_id: strawberry.Private[uuid.UUID | None]
    owner_id: strawberry.Private[uuid.UUID]

    @classmethod
    def from_model(cls, r: m.GiftList) -> GiftList:
        return cls(id=strawberry.ID(encode_id("GiftList", r.id)), name=r.name, kind=r.kind,
                   budget=r.budget, created_at=r.created_at, updated_at=r.updated_at, pk=r.id,
                   person_id=r.person_id, occasion_id=r.occasion_id, owner_id=r.owner_id)

    @strawberry.field(graphql_type=Person | None,
                      description="Whom the list is for; null if for no one (or the person "
                                  "was deleted).")
    def person(self, info: Info) -> MaybeAwaitable[Person | None]:
        return _person(info, self.person_id)

    @strawberry.field(graphql_type=Occasion | None,
                      description="The occasion the list is for; null if none (or it was "
                                  "deleted).")
    def occasion(self, info: Info) -> MaybeAwaitable[Occasion | None]:
        if self.occasion_id is None:
            return None
        return load_now(info.context.loaders.occasion, self.occasion_id, Occasion.from_model)

    # owner_id: a RESTRICT foreign key in the family
    @strawberry.field(graphql_type=User,
                      description="The member who created it; when that member is deleted, "
                                  "an ADMIN. Only the owner or an ADMIN may delete the list.")
    def owner(self, info: Info) -> MaybeAwaitable[User]:
        return load_required(info.context.loaders.user, self.owner_id, User.from_model, "User")

    @strawberry.field(description="The gifts on this list, oldest first.")
    async def items(
        self, info: Info, first: First = None, after: After = None,
        last: Last = None, before: Before = None,
        status: Annotated[ItemStatus | None, strawberry.argument(
            description="Only the items at this status; omitted: all.")] = None,
    ) -> Connection[ListItem]:
        args = page_args(info, first, after, last, before)
        loaders = info.context.loaders
        page = await loaders.list_items.load((self.pk, args, status))
        await prefetch_selected(info, page.rows, item_relations(loaders), "edges", "node")
        return connection(page, ListItem.from_model,
                          lambda: loaders.list_item_counts.load((self.pk, status)))


@strawberry.type(description="A gift on a list, with where it is in the pipeline and who "
                              "takes care of it.")
class ListItem(Node):
    status: ItemStatus = strawberry.field(
        description="IDEA, SELECTED, PURCHASED or RECEIVED; changed only by "
                    "setListItemStatus, one step at a time.")
    quantity: int = strawberry.field(description="How many (1-10000).")
    notes: str | None = strawberry.field(
        description="Free text (at most 5000 characters); null if none.")
    created_at: datetime = strawberry.field(description=CREATED_AT)
    updated_at: datetime = strawberry.field(description=UPDATED_AT)
    pk: strawberry.Private[uuid.UUID]
    list_id: strawberry.Private[uuid.UUID]
    gift_id: strawberry.Private[uuid.UUID]
    assignee_id: strawberry.Private[uuid.UUID | None]

    @classmethod
    def from_model(cls, r: m.ListItem) -> ListItem:
        return cls(id=strawberry.ID(encode_id("ListItem", r.id)), status=r.status,
                   quantity=r.quantity, notes=r.notes, created_at=r.created_at,
                   updated_at=r.updated_at, pk=r.id, list_id=r.list_id, gift_id=r.gift_id,
                   assignee_id=r.assignee_id)

    # list_id: a CASCADE foreign key in the family
    @strawberry.field(graphql_type=GiftList, description="The list it is on.")
    def list(self, info: Info) -> MaybeAwaitable[GiftList]:
        return load_required(info.context.loaders.gift_list, self.list_id, GiftList.from_model,
                             "List")

    # gift_id: a RESTRICT foreign key in the family
    @strawberry.field(graphql_type=Gift, description="The gift it is.")
    def gift(self, info: Info) -> MaybeAwaitable[Gift]:
        return load_required(info.context.loaders.gift, self.gift_id, Gift.from_model, "Gift")

    @strawberry.field(graphql_type=User | None,
                      description="The member who takes care of it (assignListItem); null if "
                                  "no one.")
    def assignee(self, info: Info) -> MaybeAwaitable[User | None]:
        return user_of(info, self.assignee_id)

    @strawberry.field(description="How many comments are about this item (Query.comments "
                                  "with target LIST_ITEM and its ID).")
    async def comment_count(self, info: Info) -> int:
        return await info.context.loaders.comment_counts.load(
            (self.pk, m.CommentTarget.LIST_ITEM))


def item_relations(loaders: Loaders) -> Relations:
    """What a list item's relation fields load (for `prefetch_selected`)."""
    return {"gift": (loaders.gift, "gift_id"), "assignee": (loaders.user, "assignee_id"),
            "list": (loaders.gift_list, "list_id")}


def list_relations(loaders: Loaders) -> Relations:
    """What a gift list's relation fields load (for `prefetch_selected`)."""
    return {"person": (loaders.person, "person_id"), "owner": (loaders.user, "owner_id"),
            "occasion": (loaders.occasion, "occasion_id")}
