"""The demo catalogue: who the family's people are, what there is to give, what gets said.

The data is `catalogue.json` (package data); this module reads it once into typed records.
Order matters: the seeded generator draws from these sequences, so the same seed gives the
same family only while their order stays as it is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, NamedTuple

from giftgraph.db import models as m


class Relative(NamedTuple):
    relationship: str
    gender: str
    ages: tuple[int, int]
    surname: str  # which surname: family | grand | niece | friend


class Product(NamedTuple):
    name: str
    store: str  # key of gifts.url(); "" for gifts with no link
    price: str | None
    variants: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalogue:
    relatives: tuple[Relative, ...]
    # Called by relationship rather than by first name in list and occasion names.
    called_by_role: frozenset[str]
    kids: frozenset[str]
    first_names: dict[tuple[str, str], tuple[str, ...]]  # (gender, generation) -> names
    surnames: tuple[str, ...]
    friends: dict[str, tuple[tuple[str, str], ...]]  # gender -> (first, last) names
    person_notes: dict[str, tuple[str, ...]]  # relationship -> notes
    products: dict[str, tuple[Product, ...]]  # tag -> products
    kid_tags: tuple[str, ...]
    adult_tags: tuple[str, ...]
    senior_tags: tuple[str, ...]
    host_tags: tuple[str, ...]
    gift_descriptions: tuple[str, ...]
    handmade_descriptions: tuple[str, ...]
    item_notes: tuple[str, ...]
    # Comment templates per target: {list}, {gift}, {store}, {person}, {interest}, {occasion}.
    comments: dict[m.CommentTarget, tuple[str, ...]]


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ValueError(f"demo catalogue: expected a list of strings, got {value!r}")
    return tuple(value)


def _product(raw: dict[str, Any]) -> Product:
    return Product(str(raw["name"]), str(raw["store"]),
                   None if raw["price"] is None else str(raw["price"]),
                   _strings(raw.get("variants", [])))


def parse(raw: dict[str, Any]) -> Catalogue:
    """The catalogue from its JSON document."""
    products = {tag: tuple(_product(p) for p in items) for tag, items in raw["products"].items()}
    kid_tags = _strings(raw["kid_tags"])
    adult_tags = tuple(t for t in products if t not in kid_tags)
    not_for_seniors = _strings(raw["not_for_seniors"])
    return Catalogue(
        relatives=tuple(Relative(r["relationship"], r["gender"], (r["ages"][0], r["ages"][1]),
                                 r["surname"]) for r in raw["relatives"]),
        called_by_role=frozenset(_strings(raw["called_by_role"])),
        kids=frozenset(_strings(raw["kids"])),
        first_names={(gender, generation): _strings(names)
                     for gender, by_generation in raw["first_names"].items()
                     for generation, names in by_generation.items()},
        surnames=_strings(raw["surnames"]),
        friends={gender: tuple((first, last) for first, last in names)
                 for gender, names in raw["friends"].items()},
        person_notes={rel: _strings(notes) for rel, notes in raw["person_notes"].items()},
        products=products,
        kid_tags=kid_tags,
        adult_tags=adult_tags,
        senior_tags=tuple(t for t in adult_tags if t not in not_for_seniors),
        host_tags=_strings(raw["host_tags"]),
        gift_descriptions=_strings(raw["gift_descriptions"]),
        handmade_descriptions=_strings(raw["handmade_descriptions"]),
        item_notes=_strings(raw["item_notes"]),
        comments={m.CommentTarget(target): _strings(templates)
                  for target, templates in raw["comments"].items()},
    )


def load() -> Catalogue:
    """The catalogue shipped with the package."""
    text = files("giftgraph.demo").joinpath("catalogue.json").read_text(encoding="utf-8")
    return parse(json.loads(text))


CATALOGUE = load()
