"""GraphQL enums, shared with the database models."""

import strawberry

from giftgraph.db import models as m

Role = strawberry.enum(m.Role, name="Role")
OccasionKind = strawberry.enum(m.OccasionKind, name="OccasionKind")
ListKind = strawberry.enum(m.ListKind, name="ListKind")
ItemStatus = strawberry.enum(m.ItemStatus, name="ItemStatus")
CommentTarget = strawberry.enum(m.CommentTarget, name="CommentTarget")
EventKind = strawberry.enum(m.EventKind, name="EventKind")
