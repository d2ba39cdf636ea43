"""Rate limits (the `limits` library): per-user mutations, and the per-IP budgets of the
anonymous mutations (login, signUp, refreshToken and logout; see admission/throttle.py).

Memory storage by default; with `GIFTGRAPH_RATE_LIMIT_STORAGE_URL=redis://…` every
instance shares one budget. If the shared store is unreachable the limiter fails open
(and logs): a broken Redis must not block all traffic.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from giftgraph.admission import BY_NAME
from giftgraph.config import Settings
from giftgraph.errors import RateLimited

log = logging.getLogger("giftgraph.ratelimit")

# The budgets by their admission bound's name (giftgraph.admission.BOUNDS), each with the
# key prefix its counters are stored under (shared by every instance through Redis).
PREFIXES = {
    "login_ip_rate": "login-ip",
    "login_rate": "login",
    "signup_ip_rate": "signup-ip",
    "token_ip_rate": "token-ip",
    "socket_reauth_rate": "reauth",
    "socket_connect_rate": "socket-connect-ip",
}


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        url = settings.rate_limit_storage_url
        options: dict[str, object] = {}
        if url.startswith(("redis://", "rediss://")):
            url = "async+" + url
            # redis-py (already a dependency), short timeouts so a dead Redis fails fast.
            options = {"implementation": "redispy", "socket_timeout": 1,
                       "socket_connect_timeout": 1}
        elif url == "memory://":
            url = "async+memory://"
        self.storage = storage_from_string(url, **options)
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.mutation = parse(settings.mutation_rate)
        self.family_mutation = parse(settings.family_mutation_rate)
        self.budgets: dict[str, RateLimitItem] = {
            bound: parse(getattr(settings, BY_NAME[bound].setting)) for bound in PREFIXES}
        self.failures = 0

    async def _hit(self, item: RateLimitItem, *keys: str, cost: int = 1) -> None:
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

    async def hit_mutation(self, user_id: str, count: int = 1) -> None:
        await self._hit(self.mutation, "mutation", user_id, cost=count)

    async def hit_family_mutation(self, family_id: str, count: int = 1) -> None:
        await self._hit(self.family_mutation, "family-mutation", family_id, cost=count)

    async def hit(self, bound: str, *keys: str) -> None:
        """One use of the budget `bound` (a name of PREFIXES) by `keys` (an IP, and the
        email for `login_rate`); RateLimited when it is spent."""
        await self._hit(self.budgets[bound], PREFIXES[bound], *keys)
