"""The sort order of every connection (keyset pagination: see db/pagination.py)."""

from __future__ import annotations

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
