"""Comments (a remark on a list, an item, a gift, a person or an occasion) and the auth
payload: GraphQL types converted from models at the edge."""

from __future__ import annotations

import uuid
from datetime import datetime

import strawberry

from giftgraph.context import Info
from giftgraph.db import models as m
from giftgraph.ids import encode_id
from giftgraph.schema.enums import CommentTarget
from giftgraph.schema.loaders import MaybeAwaitable
from giftgraph.schema.types.entities import CREATED_AT, UPDATED_AT, Node, User, user_of


@strawberry.type(description="A remark on a list, an item, a gift, a person or an occasion.")
class Comment(Node):
    target: CommentTarget = strawberry.field(description="What kind of object it is about.")
    target_id: strawberry.ID = strawberry.field(
        description="The global ID of the object it is about.")
    body: str = strawberry.field(description="The text (1-2000 characters).")
    created_at: datetime = strawberry.field(description=CREATED_AT)
    updated_at: datetime = strawberry.field(description=UPDATED_AT)
    author_id: strawberry.Private[uuid.UUID | None]

    @classmethod
    def from_model(cls, r: m.Comment) -> Comment:
        return cls(id=strawberry.ID(encode_id("Comment", r.id)), target=r.target,
                   target_id=strawberry.ID(encode_id(TARGET_TYPES[r.target], r.target_id)),
                   body=r.body, created_at=r.created_at, updated_at=r.updated_at,
                   author_id=r.author_id)

    @strawberry.field(graphql_type=User | None,
                      description="Who wrote it; null once their account was deleted.")
    def author(self, info: Info) -> MaybeAwaitable[User | None]:
        return user_of(info, self.author_id)


TARGET_TYPES: dict[m.CommentTarget, str] = {
    m.CommentTarget.LIST: "GiftList",
    m.CommentTarget.LIST_ITEM: "ListItem",
    m.CommentTarget.GIFT: "Gift",
    m.CommentTarget.PERSON: "Person",
    m.CommentTarget.OCCASION: "Occasion",
}

@strawberry.type(description="A session: the tokens to call the API with, and who they "
                              "belong to.")
class AuthPayload:
    access_token: str = strawberry.field(
        description="A short-lived JWT: send it as `Authorization: Bearer <accessToken>` (on a "
                    "socket, in connection_init's payload as `authorization`).")
    refresh_token: str = strawberry.field(
        description="A long-lived token for refreshToken (which rotates it) and logout. "
                    "Single-use: presenting a used one again revokes the whole session.")
    expires_in: int = strawberry.field(description="Seconds until the access token expires.")
    user: User = strawberry.field(description="The logged-in member.")
    device_token: str = strawberry.field(
        description="This device's token: keep it (it outlives logout) and send it as login's "
                    "`deviceToken`, and the login goes ahead of a flood of others' login "
                    "attempts from any network. Good for as long as a refresh token, until "
                    "the member's password changes; it never replaces the password.")
