"""The demo family's people and occasions, and the gift lists planned for them."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from giftgraph.db import models as m
from giftgraph.demo.catalogue import CATALOGUE
from giftgraph.demo.draw import ago, money

N_LISTS = 30
BUDGET_TBD = Decimal("100.00")  # "has a budget"; gifts.fit_budgets() sets the amount


@dataclass
class ListPlan:
    name: str
    kind: m.ListKind
    person: m.Person | None = None
    occasion: m.Occasion | None = None
    tags: tuple[str, ...] = ()  # gift tags to prefer when there is no person
    max_price: Decimal | None = None


def ordinal(n: int) -> str:
    """1 -> '1st', 12 -> '12th', 22 -> '22nd'."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def called_as(person: m.Person) -> str:
    """How the family refers to a person: 'Mom' for parents, the first name otherwise."""
    if person.relationship in CATALOGUE.called_by_role:
        return person.relationship or person.name
    return person.name.split()[0]


def possessive(name: str) -> str:
    """'Mom' -> "Mom's"."""
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th `weekday` (Monday is 0) of a month."""
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


class Holiday(NamedTuple):
    name: str  # with its year: "Christmas 2026"
    day: date


def _holidays(start: date, end: date) -> list[Holiday]:
    """The family's gift-giving holidays between two dates, soonest first."""
    found: list[Holiday] = []
    for year in range(start.year, end.year + 1):
        for name, day in (
            ("Mother's Day", _nth_weekday(year, 5, 6, 2)),
            ("Father's Day", _nth_weekday(year, 6, 6, 3)),
            ("Thanksgiving", _nth_weekday(year, 11, 3, 4)),
            ("Christmas", date(year, 12, 25)),
        ):
            if start <= day <= end:
                found.append(Holiday(f"{name} {year}", day))
    return sorted(found, key=lambda h: h.day)


def make_persons(
    rng: random.Random, family_id: uuid.UUID, surnames: dict[str, str], today: date, now: datetime
) -> list[m.Person]:
    """Twelve relatives and friends with birthdays, interests and notes."""
    used: set[str] = set()
    persons: list[m.Person] = []
    for rel in CATALOGUE.relatives:
        age = rng.randint(*rel.ages)
        if rel.surname == "friend":
            first, last = rng.choice([f for f in CATALOGUE.friends[rel.gender] if f[0] not in used])
        else:
            generation = ("kid" if age < 18 else "young" if age < 45
                          else "middle" if age < 75 else "old")
            names = CATALOGUE.first_names[rel.gender, generation]
            first = rng.choice([n for n in names if n not in used])
            last = surnames[rel.surname]
        used.add(first)
        birthday = date(today.year - age - 1, rng.randint(1, 12), rng.randint(1, 28))
        tags = (CATALOGUE.kid_tags if age < 18 else CATALOGUE.senior_tags if age >= 75
                else CATALOGUE.adult_tags)
        created = ago(rng, now, 100, 120)
        persons.append(m.Person(
            id=uuid.uuid4(),
            family_id=family_id, name=f"{first} {last}", relationship=rel.relationship,
            birthday=birthday, interests=rng.sample(tags, rng.randint(3, 5)),
            notes=(rng.choice(CATALOGUE.person_notes[rel.relationship])
                   if rng.random() < 0.85 else None),
            created_at=created, updated_at=created,
        ))
    return persons


def _occasion(
    family_id: uuid.UUID, name: str, kind: m.OccasionKind, day: date, budget: Decimal | None,
    description: str | None, created: datetime,
) -> m.Occasion:
    """One Occasion row."""
    return m.Occasion(id=uuid.uuid4(), family_id=family_id, name=name, kind=kind, date=day,
                      budget=budget, description=description, created_at=created,
                      updated_at=created)


def make_occasions(
    rng: random.Random, family_id: uuid.UUID, persons: list[m.Person], today: date, now: datetime
) -> tuple[list[m.Occasion], list[ListPlan]]:
    """About eight occasions from two months ago to ten months ahead, with their gift plans.

    The birthday occasions move their person's birthday onto the occasion's date.
    """
    by_role = {p.relationship: p for p in persons}
    occasions: list[m.Occasion] = []
    plans: list[ListPlan] = []

    def created() -> datetime:
        """When the family added an occasion: three to four months ago."""
        return ago(rng, now, 90, 110)

    # Days from today, spread over the window; holidays fall where the calendar puts them.
    slots = [base + rng.randint(-10, 10) for base in (-50, -20, 20, 80, 170, 280)]
    # Birthdays: one recently past, one coming up soon, one later in the year.
    birthday_slots = (slots[1], slots[2], slots[4])
    other_slots = rng.sample((slots[0], slots[3], slots[5]), 3)
    for person, offset in zip(rng.sample(persons, 3), birthday_slots, strict=True):
        day = today + timedelta(days=offset)
        if (day.month, day.day) == (2, 29):
            day += timedelta(days=1)
        born = person.birthday.year if person.birthday else today.year - 40
        age = day.year - born
        person.birthday = date(born, day.month, day.day)
        called = called_as(person)
        milestone = person.relationship in CATALOGUE.kids or age % 10 == 0
        name = f"{possessive(called)} {ordinal(age)} birthday" if milestone else (
            f"{possessive(called)} birthday")
        occasion = _occasion(family_id, name, m.OccasionKind.BIRTHDAY, day, BUDGET_TBD,
                             rng.choice(("Dinner at their favorite place, gifts after.",
                                         "Small party at home.", None)), created())
        occasions.append(occasion)
        plans.append(ListPlan(f"{possessive(called)} birthday {day.year}",
                              m.ListKind.GIFT_PLAN, person, occasion))

    # Anniversary of Mom and Dad.
    day = today + timedelta(days=other_slots.pop())
    mom_born = by_role["Mom"].birthday
    married = (mom_born.year if mom_born else today.year - 60) + 25
    occasion = _occasion(family_id, f"Mom & Dad's {ordinal(day.year - married)} anniversary",
                         m.OccasionKind.ANNIVERSARY, day, BUDGET_TBD,
                         "Surprise dinner - the kids are chipping in together.", created())
    occasions.append(occasion)
    plans.append(ListPlan("Anniversary gift for Mom & Dad", m.ListKind.GIFT_PLAN,
                          by_role["Mom"], occasion))

    # Holidays: Christmas if it falls in the window, plus one more.
    window = _holidays(today - timedelta(days=60), today + timedelta(days=300))
    christmas = [h for h in window if h.name.startswith("Christmas")]
    others = [h for h in window if not h.name.startswith("Christmas")]
    picked = christmas[:1] + rng.sample(others, min(len(others), 2 - len(christmas[:1])))
    for name, day in sorted(picked, key=lambda h: h.day):
        big = name.startswith("Christmas")
        occasion = _occasion(family_id, name, m.OccasionKind.HOLIDAY, day, BUDGET_TBD,
                             "Everyone at Grandma and Grandpa's this year." if big else None,
                             created())
        occasions.append(occasion)
        if big:
            for person in rng.sample(persons, 6):
                plans.append(ListPlan(f"{name} - {called_as(person)}", m.ListKind.GIFT_PLAN,
                                      person, occasion))
            plans.append(ListPlan("Stocking stuffers", m.ListKind.IDEAS, None, occasion,
                                  max_price=money(30)))
        elif name.startswith("Mother's"):
            for role in ("Mom", "Grandma"):
                plans.append(ListPlan(f"{name} - {role}", m.ListKind.GIFT_PLAN,
                                      by_role[role], occasion))
        elif name.startswith("Father's"):
            for role in ("Dad", "Grandpa"):
                plans.append(ListPlan(f"{name} - {role}", m.ListKind.GIFT_PLAN,
                                      by_role[role], occasion))
        else:
            plans.append(ListPlan(f"{name} host gifts", m.ListKind.IDEAS, None, occasion,
                                  tags=CATALOGUE.host_tags))

    # Everything else, to make eight.
    cousin, friend, sister = by_role["Cousin"], by_role["Best friend"], by_role["Sister"]
    extras: list[tuple[str, m.Person | None, str]] = [
        (f"{possessive(called_as(cousin))} graduation", cousin, "Ceremony at 10am, lunch after."),
        (f"{possessive(called_as(friend))} housewarming", friend, "Bring a plant or a bottle."),
        ("Office Secret Santa", None, "$30 limit, exchange at the team lunch."),
        (f"{possessive(called_as(sister))} baby shower", sister, "Registry link is in the invite."),
    ]
    for name, who, description in rng.sample(extras, max(0, 8 - len(occasions))):
        offset = other_slots.pop() if other_slots else rng.randint(-60, 300)
        day = today + timedelta(days=offset)
        budget = BUDGET_TBD if who is not None and rng.random() < 0.7 else None
        occasion = _occasion(family_id, name, m.OccasionKind.OTHER, day, budget,
                             description, created())
        occasions.append(occasion)
        if who is None:
            plans.append(ListPlan("Secret Santa ideas (under $30)", m.ListKind.IDEAS, None,
                                  occasion, max_price=money(30)))
        else:
            plans.append(ListPlan(f"{name} gift", m.ListKind.GIFT_PLAN, who, occasion))
    return occasions, plans


def plan_lists(
    rng: random.Random, persons: list[m.Person], occasion_plans: list[ListPlan]
) -> list[ListPlan]:
    """Thirty lists: the occasions' gift plans, host gifts, then wishlists and idea lists."""
    plans = list(occasion_plans)
    plans.append(ListPlan("Host gifts to keep on hand", m.ListKind.IDEAS, tags=CATALOGUE.host_tags))
    shuffled = rng.sample(persons, len(persons))
    plans += [ListPlan(f"{possessive(called_as(p))} wishlist", m.ListKind.WISHLIST, p)
              for p in shuffled]
    plans += [ListPlan(f"Gift ideas for {called_as(p)}", m.ListKind.IDEAS, p) for p in shuffled]
    return plans[:N_LISTS]
