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


@strawberry.input
class SignUpInput:
    family_name: str
    email: str
    password: str
    display_name: str
    currency: str = strawberry.field(
        default="USD", description="The family's currency, an ISO 4217 code (any case).")


@strawberry.input(description="The family's settings; omitted fields stay as they are.")
class FamilyPatch:
    name: str | None = strawberry.field(
        default=UNSET, description="The family's name; it cannot be null.")
    currency: str | None = strawberry.field(
        default=UNSET,
        description="The family's currency, an ISO 4217 code (any case); it cannot be null. "
                    "From then on every `spent` counts the items priced in it.")


@strawberry.input
class RegisterUserInput:
    email: str
    password: str
    display_name: str
    role: Role = Role.MEMBER


@strawberry.input
class UpdateUserInput:
    email: str | None = UNSET
    password: str | None = UNSET
    current_password: str | None = strawberry.field(
        default=UNSET,
        description="Your current password: required to change your own `password` (an "
                    "ADMIN resetting another member's password does not give it).")
    display_name: str | None = UNSET
    role: Role | None = UNSET
    is_active: bool | None = UNSET


@strawberry.input
class PersonInput:
    name: str
    relationship: str | None = None
    birthday: date | None = None
    interests: list[str] | None = None
    notes: str | None = None


@strawberry.input
class PersonPatch:
    name: str | None = UNSET
    relationship: str | None = UNSET
    birthday: date | None = UNSET
    interests: list[str] | None = UNSET
    notes: str | None = UNSET


@strawberry.input
class OccasionInput:
    name: str
    kind: OccasionKind
    date: date
    description: str | None = None
    budget: Decimal | None = None


@strawberry.input
class OccasionPatch:
    name: str | None = UNSET
    kind: OccasionKind | None = UNSET
    date: date | None = UNSET
    description: str | None = UNSET
    budget: Decimal | None = UNSET


@strawberry.input
class GiftListInput:
    name: str
    kind: ListKind
    person_id: strawberry.ID | None = None
    occasion_id: strawberry.ID | None = None
    budget: Decimal | None = None


@strawberry.input
class GiftListPatch:
    name: str | None = UNSET
    kind: ListKind | None = UNSET
    person_id: strawberry.ID | None = UNSET
    occasion_id: strawberry.ID | None = UNSET
    budget: Decimal | None = UNSET


@strawberry.input
class GiftInput:
    name: str
    url: str | None = None
    price: Decimal | None = None
    currency: str | None = strawberry.field(
        default=None,
        description="ISO 4217 code of the price (any case). Omitted or null: the family's "
                    "currency.")
    image_url: str | None = None
    description: str | None = None


@strawberry.input
class GiftPatch:
    name: str | None = UNSET
    url: str | None = UNSET
    price: Decimal | None = UNSET
    currency: str | None = strawberry.field(
        default=UNSET,
        description="ISO 4217 code of the price (any case). Null: the family's "
                    "currency at the time of the change; omitted: unchanged.")
    image_url: str | None = UNSET
    description: str | None = UNSET


@strawberry.input(description="Exactly one of giftId (an existing gift) or gift (a new one).")
class ListItemInput:
    gift_id: strawberry.ID | None = None
    gift: GiftInput | None = None
    quantity: int | None = 1
    notes: str | None = None


@strawberry.input
class ListItemPatch:
    gift_id: strawberry.ID | None = UNSET
    gift: GiftInput | None = UNSET
    quantity: int | None = UNSET
    notes: str | None = UNSET


@strawberry.input
class CommentInput:
    target: CommentTarget
    target_id: strawberry.ID
    body: str
