"""GraphQL enums, shared with the database models."""

from enum import Enum

import strawberry

from giftgraph.db import models as m

# The model enums are the GraphQL enums: strawberry.enum registers a class in place (it
# attaches the GraphQL definition and returns the same class), so the names below are
# plain aliases of the model classes and mypy sees them as types.
Role = m.Role
OccasionKind = m.OccasionKind
ListKind = m.ListKind
ItemStatus = m.ItemStatus
CommentTarget = m.CommentTarget
EventKind = m.EventKind

# What each enum and each of its values means (GraphiQL's docs). The values' descriptions
# are set on the definition Strawberry attaches, as `strawberry.enum_value` would: the
# members' values stay the plain strings the database stores.
DESCRIPTIONS: dict[type[Enum], tuple[str, dict[str, str]]] = {
    Role: ("A member's role in their family.", {
        "ADMIN": "Everything a MEMBER may do, and: adds, changes, deactivates and deletes "
                 "members, changes the family's settings, deletes any list or comment. A "
                 "family always keeps at least one active ADMIN.",
        "MEMBER": "Creates, changes and deletes the family's people, occasions, lists, gifts "
                  "and items; deletes only its own lists and comments; changes only its own "
                  "account (not its role).",
    }),
    OccasionKind: ("What kind of day an occasion is.", {
        "BIRTHDAY": "Someone's birthday.",
        "HOLIDAY": "A holiday, such as Christmas or Diwali.",
        "ANNIVERSARY": "An anniversary.",
        "OTHER": "Any other occasion.",
    }),
    ListKind: ("What a gift list is for.", {
        "WISHLIST": "What someone wishes for.",
        "IDEAS": "Gift ideas collected for someone or an occasion.",
        "GIFT_PLAN": "The plan of who buys what.",
    }),
    ItemStatus: ("Where a list item is in the pipeline IDEA → SELECTED → PURCHASED → RECEIVED. "
                 "setListItemStatus moves it one step forward or back; anything else is "
                 "INVALID_TRANSITION.", {
        "IDEA": "Suggested; every new item starts here.",
        "SELECTED": "Chosen as a gift, not bought yet.",
        "PURCHASED": "Bought: its price x quantity counts as spent.",
        "RECEIVED": "Received by the person: still counts as spent.",
    }),
    CommentTarget: ("What a comment is about; `targetId` is the global ID of an object of "
                    "the matching type.", {
        "LIST": "A GiftList.",
        "LIST_ITEM": "A ListItem.",
        "GIFT": "A Gift.",
        "PERSON": "A Person.",
        "OCCASION": "An Occasion.",
    }),
    EventKind: ("What happened to the entity an Event is about.", {
        "ADDED": "Created.",
        "UPDATED": "Changed (including a list unlinked or handed over by a delete elsewhere).",
        "DELETED": "Deleted: the event's node is null.",
        "STATUS_CHANGED": "A list item's status moved (setListItemStatus).",
        "ASSIGNED": "A list item was assigned to a member, or unassigned.",
        "COMMENT_ADDED": "A comment was added to the target named by its topic.",
    }),
}

for _enum, (_about, _values) in DESCRIPTIONS.items():
    strawberry.enum(_enum, name=_enum.__name__, description=_about)
    for _value in _enum.__strawberry_definition__.values:  # type: ignore[attr-defined]
        _value.description = _values[_value.name]  # KeyError: a new value needs its words
del _enum, _about, _values, _value
