"""GraphQL inputs: XInput creates, XPatch updates (omitted = unchanged, null = cleared)."""

from __future__ import annotations

from dataclasses import fields
from datetime import date
from decimal import Decimal
from typing import Any

import strawberry

from giftgraph.schema.enums import CommentTarget, ListKind, OccasionKind, Role

UNSET: Any = strawberry.UNSET


def provided(inp: object) -> dict[str, Any]:
    """The fields the client sent (snake_case), leaving out omitted ones."""
    return {
        f.name: getattr(inp, f.name)
        for f in fields(inp)  # type: ignore[arg-type]
        if getattr(inp, f.name) is not strawberry.UNSET
    }


# Shared words: what a field accepts, and what null means in a patch.
NAME = "1-200 characters (trimmed)."
PATCH_NAME = "1-200 characters (trimmed); it cannot be null."
EMAIL = ("An email address with an ASCII local part, unique across all families (ignoring "
         "case); taken: CONFLICT.")
DISPLAY_NAME = "The name shown to the family, 1-100 characters (trimmed)."
RELATIONSHIP = "How the family knows them, e.g. \"Grandma\" (at most 100 characters)."
BIRTHDAY = "Not in the future."
INTERESTS = "What they like: at most 50, each 1-100 characters."
TEXT = "Free text, at most 5000 characters; blank is stored as null."
BUDGET = "In the family's currency: zero or more, at most two decimal places."
URL = "an http(s) URL with a valid host (at most 2048 characters)."
CLEARS = " Null clears it."
PATCH = "; an omitted field stays as it is, null clears it"


@strawberry.input(description="A new family and its first member, who becomes its ADMIN.")
class SignUpInput:
    family_name: str = strawberry.field(description="The family's name: " + NAME)
    email: str = strawberry.field(description="The ADMIN's login. " + EMAIL)
    password: str = strawberry.field(description="8-128 characters.")
    display_name: str = strawberry.field(description=DISPLAY_NAME)
    currency: str = strawberry.field(
        default="USD", description="The family's currency, an ISO 4217 code (any case).")


@strawberry.input(description="The family's settings; omitted fields stay as they are.")
class FamilyPatch:
    name: str | None = strawberry.field(
        default=UNSET, description="The family's name, 1-200 characters (trimmed); it cannot "
                                   "be null.")
    currency: str | None = strawberry.field(
        default=UNSET,
        description="The family's currency, an ISO 4217 code (any case); it cannot be null. "
                    "From then on every `spent` counts the items priced in it.")


@strawberry.input(description="A new member of the caller's family.")
class RegisterUserInput:
    email: str = strawberry.field(description="Their login. " + EMAIL)
    password: str = strawberry.field(description="Their first password: 8-128 characters.")
    display_name: str = strawberry.field(description=DISPLAY_NAME)
    role: Role = strawberry.field(default=Role.MEMBER, description="MEMBER unless given.")


@strawberry.input(description="Changes to a member; omitted fields stay as they are. A MEMBER "
                              "may change only its own email, displayName and password.")
class UpdateUserInput:
    email: str | None = strawberry.field(
        default=UNSET, description="Their login; it cannot be null. " + EMAIL)
    password: str | None = strawberry.field(
        default=UNSET,
        description="A new password (8-128 characters); null leaves it as it is. It ends "
                    "every session of the member (yours too, for your own): their tokens "
                    "stop working and their sockets close.")
    current_password: str | None = strawberry.field(
        default=UNSET,
        description="Your current password: required to change your own `password` (an "
                    "ADMIN resetting another member's password does not give it).")
    display_name: str | None = strawberry.field(
        default=UNSET, description=DISPLAY_NAME[:-1] + "; it cannot be null.")
    role: Role | None = strawberry.field(
        default=UNSET,
        description="ADMIN only; it cannot be null. The last active ADMIN can't be demoted "
                    "(CONFLICT).")
    is_active: bool | None = strawberry.field(
        default=UNSET,
        description="ADMIN only; false deactivates the member (they can't log in, their "
                    "tokens stop working and their sockets close). It cannot be null; the "
                    "last active ADMIN can't be deactivated (CONFLICT).")


@strawberry.input(description="A new person to give gifts to.")
class PersonInput:
    name: str = strawberry.field(description=NAME)
    relationship: str | None = strawberry.field(default=None, description=RELATIONSHIP)
    birthday: date | None = strawberry.field(default=None, description=BIRTHDAY)
    interests: list[str] | None = strawberry.field(default=None, description=INTERESTS)
    notes: str | None = strawberry.field(default=None, description=TEXT)


@strawberry.input(description="Changes to a person" + PATCH + ".")
class PersonPatch:
    name: str | None = strawberry.field(default=UNSET, description=PATCH_NAME)
    relationship: str | None = strawberry.field(default=UNSET,
                                                description=RELATIONSHIP + CLEARS)
    birthday: date | None = strawberry.field(default=UNSET, description=BIRTHDAY + CLEARS)
    interests: list[str] | None = strawberry.field(
        default=UNSET, description=INTERESTS + " The list given replaces the old one; null "
                                               "clears it.")
    notes: str | None = strawberry.field(default=UNSET, description=TEXT + CLEARS)


@strawberry.input(description="A new occasion.")
class OccasionInput:
    name: str = strawberry.field(description=NAME)
    kind: OccasionKind = strawberry.field(description="What kind of occasion it is.")
    date: date = strawberry.field(description="The day it falls on.")
    description: str | None = strawberry.field(default=None, description=TEXT)
    budget: Decimal | None = strawberry.field(default=None, description=BUDGET)


@strawberry.input(description="Changes to an occasion" + PATCH + ".")
class OccasionPatch:
    name: str | None = strawberry.field(default=UNSET, description=PATCH_NAME)
    kind: OccasionKind | None = strawberry.field(default=UNSET,
                                                 description="It cannot be null.")
    date: date | None = strawberry.field(default=UNSET,
                                         description="The day it falls on; it cannot be null.")
    description: str | None = strawberry.field(default=UNSET, description=TEXT + CLEARS)
    budget: Decimal | None = strawberry.field(default=UNSET, description=BUDGET + CLEARS)


PERSON_ID = "Whom the list is for: a person of your family (any other ID: NOT_FOUND)."
OCCASION_ID = "The occasion the list is for, of your family (any other ID: NOT_FOUND)."


@strawberry.input(description="A new gift list, owned by the caller.")
class GiftListInput:
    name: str = strawberry.field(description=NAME)
    kind: ListKind = strawberry.field(description="What the list is for.")
    person_id: strawberry.ID | None = strawberry.field(default=None, description=PERSON_ID)
    occasion_id: strawberry.ID | None = strawberry.field(default=None, description=OCCASION_ID)
    budget: Decimal | None = strawberry.field(default=None, description=BUDGET)


@strawberry.input(description="Changes to a gift list" + PATCH + ".")
class GiftListPatch:
    name: str | None = strawberry.field(default=UNSET, description=PATCH_NAME)
    kind: ListKind | None = strawberry.field(default=UNSET, description="It cannot be null.")
    person_id: strawberry.ID | None = strawberry.field(
        default=UNSET, description=PERSON_ID + " Null: for no one.")
    occasion_id: strawberry.ID | None = strawberry.field(
        default=UNSET, description=OCCASION_ID + " Null: for no occasion.")
    budget: Decimal | None = strawberry.field(default=UNSET, description=BUDGET + CLEARS)


PRICE = "The price of one: zero or more, at most two decimal places."


@strawberry.input(description="A new gift.")
class GiftInput:
    name: str = strawberry.field(description=NAME)
    url: str | None = strawberry.field(
        default=None, description="Where to buy it: " + URL + " Its host becomes `store`.")
    price: Decimal | None = strawberry.field(default=None, description=PRICE)
    currency: str | None = strawberry.field(
        default=None,
        description="ISO 4217 code of the price (any case). Omitted or null: the family's "
                    "currency.")
    image_url: str | None = strawberry.field(default=None,
                                             description="A picture of it: " + URL)
    description: str | None = strawberry.field(default=None, description=TEXT)


@strawberry.input(description="Changes to a gift" + PATCH + " (a null currency becomes the "
                              "family's).")
class GiftPatch:
    name: str | None = strawberry.field(default=UNSET, description=PATCH_NAME)
    url: str | None = strawberry.field(
        default=UNSET, description="Where to buy it: " + URL + " `store` follows it. Null "
                                   "clears both.")
    price: Decimal | None = strawberry.field(default=UNSET, description=PRICE + CLEARS)
    currency: str | None = strawberry.field(
        default=UNSET,
        description="ISO 4217 code of the price (any case). Null: the family's "
                    "currency at the time of the change; omitted: unchanged.")
    image_url: str | None = strawberry.field(default=UNSET,
                                             description="A picture of it: " + URL + CLEARS)
    description: str | None = strawberry.field(default=UNSET, description=TEXT + CLEARS)


GIFT_ID = "An existing gift of your family (any other ID: NOT_FOUND)."
NEW_GIFT = ("A new gift, created with the item (BAD_USER_INPUT names its fields as "
            "gift.name, ...).")
QUANTITY = "How many: 1-10000."


@strawberry.input(description="Exactly one of giftId (an existing gift) or gift (a new one).")
class ListItemInput:
    gift_id: strawberry.ID | None = strawberry.field(default=None, description=GIFT_ID)
    gift: GiftInput | None = strawberry.field(default=None, description=NEW_GIFT)
    quantity: int | None = strawberry.field(default=1, description=QUANTITY + " Default 1.")
    notes: str | None = strawberry.field(default=None, description=TEXT)


@strawberry.input(description="Changes to a list item" + PATCH + ". To change its gift, give "
                              "exactly one of giftId or gift; its status changes only with "
                              "setListItemStatus, its assignee with assignListItem.")
class ListItemPatch:
    gift_id: strawberry.ID | None = strawberry.field(
        default=UNSET, description="Put this existing gift of the family there instead "
                                   "(any other ID: NOT_FOUND).")
    gift: GiftInput | None = strawberry.field(
        default=UNSET, description="Put a new gift, created now, there instead.")
    quantity: int | None = strawberry.field(default=UNSET,
                                            description=QUANTITY + " It cannot be null.")
    notes: str | None = strawberry.field(default=UNSET, description=TEXT + CLEARS)


@strawberry.input(description="A new comment, written by the caller.")
class CommentInput:
    target: CommentTarget = strawberry.field(description="What kind of object it is about.")
    target_id: strawberry.ID = strawberry.field(
        description="The global ID of that object, of the type `target` names; another "
                    "type's, or another family's, is NOT_FOUND.")
    body: str = strawberry.field(description="The text: 1-2000 characters (trimmed).")
