"""Seed one realistic demo family (`giftgraph demo-data`), deterministically from a seed.

The family is planned in memory (people.py, gifts.py, activity.py, drawing from the
catalogue in catalogue.json), then inserted phase by phase in one transaction."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from giftgraph.auth import hash_password
from giftgraph.config import Settings
from giftgraph.db import models as m
from giftgraph.db.engine import create_database
from giftgraph.demo.activity import comment_history, feed_events, item_history, make_comments
from giftgraph.demo.catalogue import CATALOGUE
from giftgraph.demo.gifts import fit_budgets, make_gift_lists, make_gifts, make_items
from giftgraph.demo.people import make_occasions, make_persons, plan_lists

DEMO_EMAIL = "demo@giftgraph.dev"
DEMO_PASSWORD = "demo-password-123"  # noqa: S105 - the published demo login, not a secret
FAMILY_NAME = "The Demo Family"
EMAIL_DOMAIN = "giftgraph.dev"


class Member(NamedTuple):
    local: str  # of the email address
    first_name: str
    role: m.Role


# The first one is DEMO_EMAIL.
USERS = (Member("demo", "Alex", m.Role.ADMIN), Member("sam", "Sam", m.Role.MEMBER),
         Member("jamie", "Jamie", m.Role.MEMBER))
CHUNK = 100  # rows per flush, so the progress bars move
# The tables the demo family is inserted into (analyzed after it is)
LOADED = tuple(model.__tablename__ for model in (
    m.Family, m.User, m.Person, m.Occasion, m.GiftList, m.Gift, m.ListItem, m.Comment,
    m.Event))
PHASES = ("users", "persons", "occasions", "lists", "gifts", "items", "comments", "events")


@dataclass(frozen=True)
class DemoLogin:
    email: str
    password: str


def _progress(show: bool) -> Progress:
    """A progress display with one bar per phase; renders nothing when `show` is false."""
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not show,
    )


async def _insert(
    session: AsyncSession, progress: Progress, task: TaskID, rows: Sequence[m.Base]
) -> None:
    """Add rows in chunks, flushing each chunk and advancing the phase's bar."""
    progress.update(task, total=len(rows))
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        session.add_all(chunk)
        await session.flush()
        progress.advance(task, len(chunk))


async def _existing_login(sessions: async_sessionmaker[AsyncSession]) -> DemoLogin | None:
    """The demo login if a user with the demo email already exists (any letter case)."""
    async with sessions() as session:
        email = await session.scalar(
            select(m.User.email).where(func.lower(m.User.email) == DEMO_EMAIL.lower())
        )
    return None if email is None else DemoLogin(email=email, password=DEMO_PASSWORD)


async def _users(
    session: AsyncSession, family: m.Family, password_hash: str, surname: str, at: datetime
) -> list[m.User]:
    """The demo admin plus members, each under an email no other user has."""
    wanted = [f"{member.local}@{EMAIL_DOMAIN}" for member in USERS]
    taken = set(
        (await session.scalars(
            select(func.lower(m.User.email)).where(
                func.lower(m.User.email).like(f"%@{EMAIL_DOMAIN}")
            )
        )).all()
    )
    users: list[m.User] = []
    for (local, first, role), email in zip(USERS, wanted, strict=True):
        n = 2
        while email != DEMO_EMAIL and email in taken:
            email = f"{local}{n}@{EMAIL_DOMAIN}"
            n += 1
        taken.add(email)
        users.append(m.User(
            id=uuid.uuid4(),
            family_id=family.id, email=email, display_name=f"{first} {surname}", role=role,
            is_active=True, password_hash=password_hash, created_at=at, updated_at=at,
        ))
    return users


async def _seed_family(
    session: AsyncSession, rng: random.Random, password_hash: str, progress: Progress
) -> None:
    """Plan the whole demo family in memory, then insert it phase by phase."""
    tasks = {phase: progress.add_task(phase, total=None) for phase in PHASES}
    now = datetime.now(UTC)
    today = now.date()
    surnames = dict(zip(("family", "grand", "niece"), rng.sample(CATALOGUE.surnames, 3),
                        strict=True))

    started = now - timedelta(days=120)
    family = m.Family(id=uuid.uuid4(), name=FAMILY_NAME, created_at=started, updated_at=started)
    users = await _users(session, family, password_hash, surnames["family"], started)
    persons = make_persons(rng, family.id, surnames, today, now)
    occasions, occasion_plans = make_occasions(rng, family.id, persons, today, now)
    plans = plan_lists(rng, persons, occasion_plans)
    lists = make_gift_lists(rng, family.id, plans, users, now)
    gifts, by_tag = make_gifts(rng, family.id, now)
    items = make_items(rng, family.id, plans, lists, gifts, by_tag, users, today, now)
    fit_budgets(rng, lists, occasions, items, gifts)
    changes = item_history(rng, items, lists, users, now)
    comments = make_comments(rng, family.id, plans, lists, items, gifts, persons, occasions,
                             users, now)
    changes += comment_history(rng, comments, now)

    session.add(family)
    await session.flush()
    await _insert(session, progress, tasks["users"], users)
    await _insert(session, progress, tasks["persons"], persons)
    await _insert(session, progress, tasks["occasions"], occasions)
    await _insert(session, progress, tasks["lists"], lists)
    await _insert(session, progress, tasks["gifts"], gifts)
    await _insert(session, progress, tasks["items"], items)
    await _insert(session, progress, tasks["comments"], comments)
    # Same lock as events.record(), so `seq` order is commit order for this family.
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:f, 0))"), {"f": str(family.id)}
    )
    # Snapshots are taken now, after the rows were flushed.
    await _insert(session, progress, tasks["events"], feed_events(family.id, changes))


async def seed(
    url: str, settings: Settings, *, seed_value: int = 7, show_progress: bool = True
) -> DemoLogin:
    """Insert the demo family (unless its admin already exists) and return its login."""
    db = create_database(url, settings)
    try:
        existing = await _existing_login(db.sessions)
        if existing is not None:
            print(f"Demo user {existing.email} already exists; nothing was added.")
            return existing
        password_hash = await hash_password(settings, DEMO_PASSWORD)
        rng = random.Random(seed_value)  # noqa: S311 - demo data, not security
        try:
            with _progress(show_progress) as progress:
                # One transaction: a failed or interrupted run leaves nothing half-seeded.
                async with db.sessions() as session, session.begin():
                    await _seed_family(session, rng, password_hash, progress)
        except IntegrityError:
            # A concurrent demo-data run committed the demo user first.
            existing = await _existing_login(db.sessions)
            if existing is None:
                raise
            print(f"Demo user {existing.email} was created concurrently; nothing was added.")
            return existing
        # Planner statistics for what was loaded, now rather than when autovacuum gets to
        # it: until then the planner guesses at every table's size and selectivity.
        async with db.engine.connect() as conn:
            await conn.execute(text(f"ANALYZE {', '.join(LOADED)}"))
            await conn.commit()
        return DemoLogin(email=DEMO_EMAIL, password=DEMO_PASSWORD)
    finally:
        await db.dispose()
