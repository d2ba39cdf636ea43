"""Random instants and amounts of money, as the demo generator draws them."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal

CENT = Decimal("0.01")
DAY = 86_400.0


def ago(rng: random.Random, now: datetime, lo_days: float, hi_days: float) -> datetime:
    """A random instant between `hi_days` and `lo_days` before `now`."""
    return now - timedelta(seconds=rng.uniform(lo_days * DAY, hi_days * DAY))


def between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A random instant in [start, end] (start itself if the range is empty)."""
    span = (end - start).total_seconds()
    return start + timedelta(seconds=rng.uniform(0, span)) if span > 0 else start


def money(value: str | int | Decimal) -> Decimal:
    """`value` as a Decimal with exactly two places."""
    return Decimal(value).quantize(CENT)
