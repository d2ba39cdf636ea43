"""What the demo family did lately: item changes, comments, and the feed of both."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from giftgraph.db import models as m
from giftgraph.demo.catalogue import CATALOGUE
from giftgraph.demo.draw import ago, between
from giftgraph.demo.people import ListPlan, called_as
from giftgraph.events import ENTITY_TYPES, FAMILY_TOPIC, snapshot

N_COMMENTS = 80
RECENT_ITEMS = 50  # items whose history goes into the activity feed
RECENT_COMMENTS = 15


@dataclass
class Change:
    at: datetime
    kind: m.EventKind
    row: m.ListItem | m.Comment
    actor_id: uuid.UUID | None
    overrides: dict[str, Any]


def item_history(
    rng: random.Random, items: list[m.ListItem], lists: list[m.GiftList], users: list[m.User],
    now: datetime,
) -> list[Change]:
    """Move the latest RECENT_ITEMS items into the past week and describe their changes."""
    owner = {gl.id: gl.owner_id for gl in lists}
    recent = rng.sample(items, min(RECENT_ITEMS, len(items)))
    starts = sorted(ago(rng, now, 0.2, 6) for _ in recent)
    changes: list[Change] = []
    for item, added in zip(recent, starts, strict=True):
        item.created_at = item.updated_at = added
        later_status = item.status != m.ItemStatus.IDEA
        base = {"status": m.ItemStatus.IDEA.value} if later_status else {}
        actor = owner[item.list_id] if rng.random() < 0.7 else rng.choice(users).id
        changes.append(Change(added, m.EventKind.ADDED, item, actor,
                              {**base, "assignee_id": None}))
        if item.assignee_id is not None:
            item.updated_at = between(rng, item.updated_at,
                                      min(item.updated_at + timedelta(hours=20), now))
            changes.append(Change(item.updated_at, m.EventKind.ASSIGNED, item,
                                  rng.choice((item.assignee_id, actor)), dict(base)))
        if later_status:
            item.updated_at = between(rng, item.updated_at,
                                      min(item.updated_at + timedelta(hours=15), now))
            changes.append(Change(item.updated_at, m.EventKind.STATUS_CHANGED, item,
                                  item.assignee_id or actor, {}))
    return changes


def make_comments(
    rng: random.Random, family_id: uuid.UUID, plans: list[ListPlan], lists: list[m.GiftList],
    items: list[m.ListItem], gifts: list[m.Gift], persons: list[m.Person],
    occasions: list[m.Occasion], users: list[m.User], now: datetime,
) -> list[m.Comment]:
    """About 80 comments on lists, items, gifts, persons and occasions."""
    plan_of = {gl.id: plan for plan, gl in zip(plans, lists, strict=True)}
    gift_of = {g.id: g for g in gifts}
    on_lists = list(dict.fromkeys(i.gift_id for i in items))  # ordered: same seed, same data
    said = CATALOGUE.comments
    personless = [t for t in said[m.CommentTarget.LIST_ITEM] if "{person}" not in t]
    storeless = [t for t in said[m.CommentTarget.GIFT] if "{store}" not in t]
    targets = rng.choices(list(m.CommentTarget), weights=(20, 25, 12, 13, 10), k=N_COMMENTS)
    comments: list[m.Comment] = []
    for target in targets:
        person: m.Person | None = None
        fields: dict[str, str] = {}
        row: m.GiftList | m.ListItem | m.Gift | m.Person | m.Occasion
        if target == m.CommentTarget.LIST:
            row = rng.choice(lists)
            template = rng.choice(said[m.CommentTarget.LIST])
            fields["list"] = row.name
        elif target == m.CommentTarget.LIST_ITEM:
            row = rng.choice(items)
            gift = gift_of[row.gift_id]
            person = plan_of[row.list_id].person
            template = rng.choice(said[m.CommentTarget.LIST_ITEM] if person else personless)
            fields |= {"gift": gift.name, "store": gift.store or "the store"}
        elif target == m.CommentTarget.GIFT:
            row = gift_of[rng.choice(on_lists)]
            template = rng.choice(said[m.CommentTarget.GIFT] if row.store else storeless)
            fields |= {"gift": row.name, "store": row.store or "the store"}
        elif target == m.CommentTarget.PERSON:
            row = person = rng.choice(persons)
            template = rng.choice(said[m.CommentTarget.PERSON])
            fields["interest"] = rng.choice(person.interests)
        else:
            row = rng.choice(occasions)
            template = rng.choice(said[m.CommentTarget.OCCASION])
            fields["occasion"] = row.name
        fields["person"] = called_as(person) if person else "them"
        created = between(rng, row.created_at, now - timedelta(days=5))
        comments.append(m.Comment(
            id=uuid.uuid4(),
            family_id=family_id, target=target, target_id=row.id,
            author_id=rng.choice(users).id, body=template.format(**fields)[:2000],
            created_at=created, updated_at=created,
        ))
    return comments


def comment_history(
    rng: random.Random, comments: list[m.Comment], now: datetime
) -> list[Change]:
    """Move the latest RECENT_COMMENTS comments into the past few days, as feed entries."""
    recent = rng.sample(comments, min(RECENT_COMMENTS, len(comments)))
    changes: list[Change] = []
    for comment in recent:
        comment.created_at = comment.updated_at = ago(rng, now, 0.1, 4)
        changes.append(Change(comment.created_at, m.EventKind.COMMENT_ADDED, comment,
                              comment.author_id, {}))
    return changes


def feed_events(family_id: uuid.UUID, changes: list[Change]) -> list[m.Event]:
    """Feed rows, oldest first so `seq` follows time, each with the row as it was then."""
    events: list[m.Event] = []
    for seq, change in enumerate(sorted(changes, key=lambda c: c.at), 1):  # a new family
        payload = snapshot(change.row) | {"updated_at": change.at.isoformat(),
                                          **change.overrides}
        events.append(m.Event(
            family_id=family_id, seq=seq, topic=FAMILY_TOPIC, kind=change.kind,
            entity_type=ENTITY_TYPES[type(change.row)],
            entity_id=change.row.id,
            actor_id=change.actor_id, at=change.at, payload=payload,
        ))
    return events
