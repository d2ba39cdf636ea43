"""`giftgraph demo-data`: the same family for the same seed.

What the seed alone decides is pinned (the members, the relatives with their interests,
the size of everything); dates, and what follows from them, move with the day it runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text

from giftgraph.config import Settings
from giftgraph.db import models as m
from giftgraph.db.engine import create_database
from giftgraph.db.migrate import upgrade
from giftgraph.demo import DEMO_EMAIL, DEMO_PASSWORD, seed
from tests.conftest import make_settings

SEED_1_PERSONS = [
    ("Daniel Alvarez", "Brother", ["travel", "music", "camping", "painting"]),
    ("Emily Brooks", "Sister", ["puzzles", "painting", "photography"]),
    ("Hannah Kim", "Best friend", ["tea", "knitting", "camping", "reading", "travel"]),
    ("Harold Hughes", "Grandpa", ["coffee", "board games", "baking", "skincare", "puzzles"]),
    ("James Alvarez", "Dad", ["woodworking", "yoga", "skincare", "music", "golf"]),
    ("Joan Hughes", "Grandma", ["photography", "baking", "painting", "travel", "woodworking"]),
    ("Karen Hughes", "Aunt", ["music", "puzzles", "birdwatching", "camping", "golf"]),
    ("Linda Alvarez", "Mom", ["knitting", "wine", "puzzles", "photography"]),
    ("Marcus Lee", "Friend", ["board games", "cooking", "travel", "yoga", "hiking"]),
    ("Mia Brooks", "Niece", ["dinosaurs", "science", "art", "video games", "lego"]),
    ("Theo Brooks", "Nephew", ["lego", "science", "art", "soccer"]),
    ("Tyler Hughes", "Cousin", ["birdwatching", "gardening", "travel", "photography", "tea"]),
]


async def test_seed_1_makes_the_same_family(database_url: str, settings: Settings) -> None:
    login = await seed(database_url, settings, seed_value=1, show_progress=False)
    assert (login.email, login.password) == (DEMO_EMAIL, DEMO_PASSWORD)
    db = create_database(database_url, settings)
    try:
        async with db.engine.connect() as conn:
            async def count(model: Any) -> int:
                return (await conn.execute(select(func.count()).select_from(model))).scalar_one()

            sizes = {model.__name__: await count(model) for model in (
                m.Family, m.User, m.Person, m.GiftList, m.Gift, m.ListItem, m.Comment)}
            assert sizes == {"Family": 1, "User": 3, "Person": 12, "GiftList": 30,
                             "Gift": 300, "ListItem": 600, "Comment": 80}
            assert await count(m.Occasion) > 0
            assert await count(m.Event) > 0
            family = (await conn.execute(select(m.Family.name))).scalar_one()
            assert family == "The Demo Family"
            users = (await conn.execute(
                select(m.User.email, m.User.display_name, m.User.role).order_by(m.User.email)
            )).all()
            assert [tuple(u) for u in users] == [
                ("demo@giftgraph.dev", "Alex Alvarez", m.Role.ADMIN),
                ("jamie@giftgraph.dev", "Jamie Alvarez", m.Role.MEMBER),
                ("sam@giftgraph.dev", "Sam Alvarez", m.Role.MEMBER),
            ]
            persons = (await conn.execute(
                select(m.Person.name, m.Person.relationship, m.Person.interests)
                .order_by(m.Person.name)
            )).all()
            assert [(p.name, p.relationship, list(p.interests)) for p in persons] == \
                SEED_1_PERSONS
            gift_names = set((await conn.execute(select(m.Gift.name))).scalars())
            assert "Super Mario Bros. Wonder" in gift_names  # every product is a gift
    finally:
        await db.dispose()


async def test_seed_leaves_planner_statistics(empty_database: str) -> None:
    """`demo-data` analyzes what it loaded: the planner knows the tables' sizes at once.
    In a database of its own, whose tables nobody analyzed (the shared one keeps what
    earlier tests' loads left in its statistics: the cleanup deletes rows)."""
    await upgrade(empty_database)
    settings = make_settings(empty_database)
    await seed(empty_database, settings, seed_value=1, show_progress=False)
    db = create_database(empty_database, settings)
    try:
        async with db.engine.connect() as conn:
            rows = dict((await conn.execute(text(
                "SELECT relname, reltuples FROM pg_class WHERE relname = ANY(:names)"),
                {"names": ["gifts", "list_items", "users"]})).all())
    finally:
        await db.dispose()
    assert rows == {"gifts": 300, "list_items": 600, "users": 3}
