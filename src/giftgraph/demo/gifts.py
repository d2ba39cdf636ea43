"""The demo family's gifts, its lists and the items on them, and budgets that fit."""

from __future__ import annotations

import random
import re
import unicodedata
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal

from giftgraph.db import models as m
from giftgraph.demo.catalogue import CATALOGUE, Product
from giftgraph.demo.draw import ago, between, money
from giftgraph.demo.people import BUDGET_TBD, ListPlan
from giftgraph.validation import store_from_url

N_GIFTS = 300
N_ITEMS = 600


def _slug(text_: str) -> str:
    """A URL slug: ASCII, lowercase, words joined by hyphens."""
    ascii_ = unicodedata.normalize("NFKD", text_).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")


def _digits(rng: random.Random, n: int) -> str:
    """`n` random decimal digits."""
    return "".join(rng.choice("0123456789") for _ in range(n))


def _url(rng: random.Random, store: str, slug: str) -> str | None:
    """A realistic product URL at `store` (None for gifts that are not bought online)."""
    if store == "amazon":
        asin = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8))
        return f"https://www.amazon.com/dp/B0{asin}"
    if store == "etsy":
        return f"https://www.etsy.com/listing/{rng.randint(1_000_000_000, 1_799_999_999)}/{slug}"
    if store == "target":
        return f"https://www.target.com/p/{slug}/-/A-{_digits(rng, 8)}"
    if store == "rei":
        return f"https://www.rei.com/product/{rng.randint(100_000, 249_999)}/{slug}"
    if store == "bookshop":
        return f"https://bookshop.org/p/books/{slug}/{_digits(rng, 8)}?ean=978{_digits(rng, 10)}"
    if store == "uncommongoods":
        return f"https://www.uncommongoods.com/product/{slug}"
    if store == "lego":
        return f"https://www.lego.com/en-us/product/{slug}-{rng.randint(10_000, 79_999)}"
    if store == "bestbuy":
        return f"https://www.bestbuy.com/site/{slug}/{_digits(rng, 7)}.p"
    if store == "williams-sonoma":
        return f"https://www.williams-sonoma.com/products/{slug}/"
    return None


def make_gift_lists(
    rng: random.Random, family_id: uuid.UUID, plans: list[ListPlan], users: list[m.User],
    now: datetime,
) -> list[m.GiftList]:
    """One GiftList per plan, owners spread across users, budgets mostly on gift plans."""
    budget_odds = {m.ListKind.GIFT_PLAN: 0.8, m.ListKind.IDEAS: 0.2, m.ListKind.WISHLIST: 0.1}
    rows: list[m.GiftList] = []
    for plan in plans:
        created = ago(rng, now, 20, 85)
        budget = BUDGET_TBD if rng.random() < budget_odds[plan.kind] else None
        rows.append(m.GiftList(
            id=uuid.uuid4(),
            family_id=family_id, name=plan.name, kind=plan.kind,
            person_id=plan.person.id if plan.person else None,
            occasion_id=plan.occasion.id if plan.occasion else None,
            owner_id=rng.choices(users, weights=[5, 3, 2][: len(users)])[0].id,
            budget=budget, created_at=created, updated_at=created,
        ))
    return rows


def make_gifts(
    rng: random.Random, family_id: uuid.UUID, now: datetime
) -> tuple[list[m.Gift], dict[str, list[m.Gift]]]:
    """About 300 gifts from the catalog (every product once, then more variants)."""
    combos = [(tag, product, variant) for tag, products in CATALOGUE.products.items()
              for product in products for variant in (product.variants or ("",))]
    rng.shuffle(combos)
    first_seen: set[str] = set()
    firsts: list[tuple[str, Product, str]] = []
    rest: list[tuple[str, Product, str]] = []
    for combo in combos:
        (firsts if combo[1].name not in first_seen else rest).append(combo)
        first_seen.add(combo[1].name)
    gifts: list[m.Gift] = []
    by_tag: dict[str, list[m.Gift]] = {tag: [] for tag in CATALOGUE.products}
    for tag, product, variant in (firsts + rest)[:N_GIFTS]:
        name = f"{product.name} ({variant})" if variant else product.name
        url = _url(rng, product.store, _slug(name))
        price = None if product.price is None else money(product.price)
        if price is not None and rng.random() < 0.15:
            price = money(price * Decimal("0.85"))  # caught on sale
        handmade = product.store == "etsy"
        descriptions = (CATALOGUE.handmade_descriptions if handmade
                        else CATALOGUE.gift_descriptions)
        description = rng.choice(descriptions) if url and rng.random() < 0.4 else None
        created = ago(rng, now, 8, 100)
        gift = m.Gift(
            id=uuid.uuid4(),
            family_id=family_id, name=name, url=url, store=store_from_url(url), price=price,
            currency="USD", image_url=None, description=description,
            created_at=created, updated_at=created,
        )
        gifts.append(gift)
        by_tag[tag].append(gift)
    return gifts, by_tag


def _status_weights(plan: ListPlan, today: date) -> tuple[int, int, int, int]:
    """How likely IDEA/SELECTED/PURCHASED/RECEIVED are, given how close the occasion is."""
    if plan.kind == m.ListKind.IDEAS:
        past = plan.occasion is not None and plan.occasion.date < today
        return (60, 20, 15, 5) if past else (75, 20, 5, 0)
    if plan.occasion is not None:
        days = (plan.occasion.date - today).days
        if days < 0:
            return (5, 5, 25, 65)
        if days <= 45:
            return (25, 40, 35, 0)
        return (60, 28, 12, 0)
    return (55, 25, 15, 5)


def _list_sizes(rng: random.Random, n_lists: int) -> list[int]:
    """Item counts per list that add up to N_ITEMS, uneven but never below 8."""
    sizes = [N_ITEMS // n_lists] * n_lists
    for i in range(N_ITEMS - sum(sizes)):
        sizes[i % n_lists] += 1
    for _ in range(n_lists * 3):
        src, dst = rng.randrange(n_lists), rng.randrange(n_lists)
        moved = min(rng.randint(1, 4), sizes[src] - 8)
        if moved > 0:
            sizes[src] -= moved
            sizes[dst] += moved
    return sizes


def make_items(
    rng: random.Random, family_id: uuid.UUID, plans: list[ListPlan], lists: list[m.GiftList],
    gifts: list[m.Gift], by_tag: dict[str, list[m.Gift]], users: list[m.User], today: date,
    now: datetime,
) -> list[m.ListItem]:
    """About 600 items, mostly gifts matching each person's interests."""
    statuses = list(m.ItemStatus)
    items: list[m.ListItem] = []
    for plan, gift_list, size in zip(plans, lists, _list_sizes(rng, len(lists)), strict=True):
        cap = plan.max_price
        affordable = {g for g in gifts if cap is None or (g.price is not None and g.price <= cap)}
        if plan.person is not None:
            kid = plan.person.relationship in CATALOGUE.kids
            prefer_tags = tuple(plan.person.interests)
            fill_tags = CATALOGUE.kid_tags if kid else CATALOGUE.adult_tags
        else:
            prefer_tags, fill_tags = plan.tags, CATALOGUE.adult_tags
        preferred = [g for t in prefer_tags for g in by_tag.get(t, []) if g in affordable]
        skip = set(preferred)
        fallback = [g for t in fill_tags for g in by_tag.get(t, [])
                    if g in affordable and g not in skip]
        chosen = rng.sample(preferred, min(len(preferred), round(size * 0.7)))
        chosen += rng.sample(fallback, min(len(fallback), size - len(chosen)))
        weights = _status_weights(plan, today)
        for gift in chosen:
            status = rng.choices(statuses, weights=weights)[0]
            assigned = rng.random() < (0.15 if status == m.ItemStatus.IDEA else 0.85)
            created = between(rng, max(gift_list.created_at, gift.created_at),
                              now - timedelta(days=7))
            items.append(m.ListItem(
                id=uuid.uuid4(),
                family_id=family_id, list_id=gift_list.id, gift_id=gift.id, status=status,
                assignee_id=rng.choice(users).id if assigned else None,
                quantity=rng.choices((1, 2, 3), weights=(80, 14, 6))[0],
                notes=rng.choice(CATALOGUE.item_notes) if rng.random() < 0.25 else None,
                created_at=created,
                updated_at=created if status == m.ItemStatus.IDEA and not assigned
                else between(rng, created, now - timedelta(days=7)),
            ))
    return items


def fit_budgets(
    rng: random.Random, lists: list[m.GiftList], occasions: list[m.Occasion],
    items: list[m.ListItem], gifts: list[m.Gift],
) -> None:
    """Size each budget that is set to what its items cost, so most plans are within budget."""
    price = {g.id: g.price or Decimal(0) for g in gifts}
    spent_by_list: dict[uuid.UUID, Decimal] = {gl.id: Decimal(0) for gl in lists}
    for item in items:
        if item.status in (m.ItemStatus.PURCHASED, m.ItemStatus.RECEIVED):
            spent_by_list[item.list_id] += price[item.gift_id] * item.quantity
    spent_by_occasion: dict[uuid.UUID, Decimal] = {o.id: Decimal(0) for o in occasions}
    for gift_list in lists:
        spent = spent_by_list[gift_list.id]
        if gift_list.occasion_id is not None:
            spent_by_occasion[gift_list.occasion_id] += spent
        if gift_list.budget is not None:
            # Now and then a little over budget, as real plans are.
            gift_list.budget = _round_up(spent * Decimal(rng.uniform(0.95, 1.4)), 25, 50)
    for occasion in occasions:
        if occasion.budget is not None:
            spent = spent_by_occasion[occasion.id]
            occasion.budget = _round_up(spent * Decimal(rng.uniform(1.1, 1.5)), 50, 100)


def _round_up(value: Decimal, step: int, minimum: int) -> Decimal:
    """`value` rounded up to a multiple of `step`, at least `minimum`, with two places."""
    steps = -(-value // step)  # ceiling division
    return money(max(steps * step, Decimal(minimum)))
