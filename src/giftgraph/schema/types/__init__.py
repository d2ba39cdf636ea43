"""GraphQL object types: the family's data (entities.py, comments.py) and what
subscriptions deliver (live.py). Everything is importable from here, as it was from the
one module before."""

from giftgraph.schema.types.comments import TARGET_TYPES, AuthPayload, Comment
from giftgraph.schema.types.entities import (
    BUDGET,
    FAMILY_CURRENCY,
    SPENT,
    SPENT_BY_CURRENCY,
    Family,
    Gift,
    GiftList,
    ListItem,
    Money,
    Node,
    Occasion,
    OccasionSummary,
    Person,
    PersonProgress,
    Pipeline,
    User,
    item_relations,
    list_relations,
    page_args,
)
from giftgraph.schema.types.live import NODE_TYPES, Event, Presence, to_node

__all__ = [
    "BUDGET",
    "FAMILY_CURRENCY",
    "NODE_TYPES",
    "SPENT",
    "SPENT_BY_CURRENCY",
    "TARGET_TYPES",
    "AuthPayload",
    "Comment",
    "Event",
    "Family",
    "Gift",
    "GiftList",
    "ListItem",
    "Money",
    "Node",
    "Occasion",
    "OccasionSummary",
    "Person",
    "PersonProgress",
    "Pipeline",
    "Presence",
    "User",
    "item_relations",
    "list_relations",
    "page_args",
    "to_node",
]
