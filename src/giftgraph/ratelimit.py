"""Rate limits (the `limits` library): per-user mutations, and the per-IP budgets of the
anonymous mutations (login, signUp, refreshToken and logout; see admission/throttle.py).

Each budget is a sliding-window counter (the limits library's `SlidingWindowCounter`: this
window's count plus the previous window's, weighted by how much of it still overlaps).
With `GIFTGRAPH_RATE_LIMIT_STORAGE_URL=redis://…` every instance shares one budget through
the library's Redis storage. If the shared store is unreachable the limiter fails open
(and logs): a broken Redis must not block all traffic.

In one process (`memory://`) the counters are `LocalWindows`, not the library's async
memory storage: that one sweeps every key it holds after each hit (its moving window hands
each key to a worker thread), so a hit cost grows with the number of users, addresses and
families seen in the last minute. In W4 the sweep's threads took a fifth of the server's
samples (py-spy); with W5's 10,000 users it would run without pause.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from limits import RateLimitItem, parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from giftgraph.admission import BY_NAME
from giftgraph.admission.pace import KeyedPace
from giftgraph.config import Settings
from giftgraph.errors import RateLimited

log = logging.getLogger("giftgraph.ratelimit")

# The budgets by their admission bound's name (giftgraph.admission.BOUNDS), each with the
# key prefix its counters are stored under (shared by every instance through Redis).
PREFIXES = {
    "login_ip_rate": "login-ip",
    "login_rate": "login",
    "known_login_rate": "known-login",
    "signup_ip_rate": "signup-ip",
    "token_ip_rate": "token-ip",
    "socket_reauth_rate": "reauth",
    "socket_connect_rate": "socket-connect-ip",
    "persisted_register_rate": "persisted-register",
}


class Window(NamedTuple):
    """One key's counts: this window's and the previous one's."""

    seconds: int  # the window's length
    number: int  # which window (time since the epoch // seconds)
    hits: int
    previous: int


class LocalWindows:
    """Sliding-window counters of one process, computed as the limits library's
    SlidingWindowCounter strategy computes them. A hit reads and writes one key; keys whose
    windows have passed are dropped in one sweep at most once per `sweep_every` seconds."""

    def __init__(self, sweep_every: float = 60.0) -> None:
        self.windows: dict[tuple[str, ...], Window] = {}
        self.sweep_every = sweep_every
        self.swept = time.monotonic()

    def hit(self, item: RateLimitItem, keys: tuple[str, ...], cost: int,
            now: float | None = None) -> float | None:
        """Spend `cost` of `item`'s budget for `keys`: None if allowed, else the seconds
        until it would be."""
        return self._use(item, keys, cost, time.time() if now is None else now, spend=True)

    def check(self, item: RateLimitItem, keys: tuple[str, ...], cost: int,
              now: float | None = None) -> float | None:
        """`hit` without spending: None if `cost` would be allowed now, else the seconds
        until it would be."""
        return self._use(item, keys, cost, time.time() if now is None else now, spend=False)

    def _use(self, item: RateLimitItem, keys: tuple[str, ...], cost: int, now: float,
             *, spend: bool) -> float | None:
        size = item.get_expiry()
        number, into = divmod(now, size)
        window = int(number)
        key = (item.key_for(), *keys)
        current = previous = 0
        if (held := self.windows.get(key)) is not None:
            if held.number == window:
                current, previous = held.hits, held.previous
            elif held.number == window - 1:
                previous = held.hits
        weight = (size - into) / size  # the share of the previous window still inside
        if previous * weight + current + cost > item.amount:
            if current + cost > item.amount or previous == 0:
                return size - into  # only the next window has room
            # the previous window's weight falls by previous/size per second
            return min(size - into,
                       (previous * weight + current + cost - item.amount) * size / previous)
        if spend:
            self.windows[key] = Window(size, window, current + cost, previous)
            self._sweep(now)
        return None

    def _sweep(self, now: float) -> None:
        if time.monotonic() - self.swept < self.sweep_every:
            return
        self.swept = time.monotonic()
        # a count matters while its window is the current or the previous one
        self.windows = {key: held for key, held in self.windows.items()
                        if (held.number + 2) * held.seconds > now}


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        url = settings.rate_limit_storage_url
        options: dict[str, object] = {}
        self.local: LocalWindows | None = None
        if url.startswith(("redis://", "rediss://")):
            url = "async+" + url
            # redis-py (already a dependency), short timeouts so a dead Redis fails fast.
            options = {"implementation": "redispy", "socket_timeout": 1,
                       "socket_connect_timeout": 1}
        elif url == "memory://":
            url = "async+memory://"
            self.local = LocalWindows()
        self.storage = storage_from_string(url, **options)  # type: ignore[arg-type]
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)
        self.mutation = parse(settings.mutation_rate)
        self.family_mutation = parse(settings.family_mutation_rate)
        # The family budget's average pace, after a burst (giftgraph.admission.pace).
        self.family_pace = KeyedPace(
            "family_mutation_pace",
            self.family_mutation.amount / self.family_mutation.get_expiry(),
            settings.family_mutation_burst, settings.request_wait_seconds)
        self.budgets: dict[str, RateLimitItem] = {
            bound: parse(getattr(settings, BY_NAME[bound].setting)) for bound in PREFIXES}
        self.failures = 0

    async def _hit(self, item: RateLimitItem, *keys: str, cost: int = 1) -> None:
        if self.local is not None:
            wait = self.local.hit(item, keys, cost)
            if wait is not None:
                raise RateLimited(max(1, math.ceil(wait)))
            return
        try:
            allowed = await self.limiter.hit(item, *keys, cost=cost)
            if allowed:
                return
            stats = await self.limiter.get_window_stats(item, *keys)
            retry = max(1, math.ceil(stats.reset_time - time.time()))
        except Exception:  # the store is down: fail open rather than refuse everyone
            self.failures += 1
            # Each hit tries again: limits apply as soon as the store answers (a refused
            # connection fails in milliseconds, a hung one after the 1 s socket timeout).
            log.warning("rate limit store unavailable; allowing the request", exc_info=True)
            return
        raise RateLimited(retry)

    async def _check(self, item: RateLimitItem, *keys: str, cost: int = 1) -> None:
        """RateLimited when `cost` of `item`'s budget for `keys` is not left; spends
        nothing (the same store and failure rule as `_hit`)."""
        if self.local is not None:
            wait = self.local.check(item, keys, cost)
            if wait is not None:
                raise RateLimited(max(1, math.ceil(wait)))
            return
        try:
            if await self.limiter.test(item, *keys, cost=cost):
                return
            stats = await self.limiter.get_window_stats(item, *keys)
            retry = max(1, math.ceil(stats.reset_time - time.time()))
        except Exception:  # the store is down: fail open, as `_hit` does
            self.failures += 1
            log.warning("rate limit store unavailable; allowing the request", exc_info=True)
            return
        raise RateLimited(retry)

    async def check_mutation(self, user_id: str, count: int = 1) -> None:
        """RateLimited when the user's mutation budget has no room for `count` root
        fields; spends nothing (`hit_mutation` does, once the operation runs)."""
        await self._check(self.mutation, "mutation", user_id, cost=count)

    async def check_family_mutation(self, family_id: str, count: int = 1) -> None:
        await self._check(self.family_mutation, "family-mutation", family_id, cost=count)

    async def pace_family_mutation(self, family_id: str, count: int = 1,
                                   before_wait: Callable[[], Awaitable[None]] | None = None
                                   ) -> bool:
        """Wait for the family's turn to run `count` root fields (the budget's average
        pace after a burst); RateLimited after request_wait_seconds. Whether it waited
        (`before_wait` runs first if it must)."""
        return await self.family_pace.take(family_id, count, before_wait)

    async def hit_mutation(self, user_id: str, count: int = 1) -> None:
        await self._hit(self.mutation, "mutation", user_id, cost=count)

    async def hit_family_mutation(self, family_id: str, count: int = 1) -> None:
        await self._hit(self.family_mutation, "family-mutation", family_id, cost=count)

    async def check(self, bound: str, *keys: str) -> None:
        """RateLimited when the budget `bound` of `keys` is spent; spends nothing."""
        await self._check(self.budgets[bound], PREFIXES[bound], *keys)

    async def hit(self, bound: str, *keys: str) -> None:
        """One use of the budget `bound` (a name of PREFIXES) by `keys` (an IP, and the
        email for `login_rate`); RateLimited when it is spent."""
        await self._hit(self.budgets[bound], PREFIXES[bound], *keys)
