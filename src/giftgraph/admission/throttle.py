"""The anonymous mutations' per-IP budgets, and the bound on concurrent password hashing.

`login`, `signUp`, `refreshToken` and `logout` need no token, so the per-user mutation
budget does not reach them: each spends a budget of the client's IP first, before any
database work or hashing (`login_ip_rate` and `login_rate`, `signup_ip_rate`,
`token_ip_rate`, shared by every instance when the rate-limit store is Redis).

argon2id is slow and memory-hard on purpose (64 MiB, ~50 ms of a core per hash), so it
runs off the event loop, in a pool of `max_concurrent_hashes` threads of its own; a request
waits for a free one at most `hash_wait_seconds`, then gets RATE_LIMITED (`retryAfter`)
instead of queueing without end: however many requests hash at once, the rest of the
server keeps its cores and its memory. The bound is per process.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from giftgraph.config import Settings
from giftgraph.errors import RateLimited

if TYPE_CHECKING:
    from giftgraph.admission import Refusals
    from giftgraph.ratelimit import RateLimits

T = TypeVar("T")


class Hashing:
    """Runs password hashing and verification, at most `max_concurrent_hashes` at once."""

    def __init__(self, settings: Settings, refusals: Refusals | None = None) -> None:
        self.limit = settings.max_concurrent_hashes
        self.wait = settings.hash_wait_seconds
        self.refusals = refusals
        self.slots = asyncio.Semaphore(self.limit)
        self.pool = ThreadPoolExecutor(self.limit, thread_name_prefix="giftgraph-hash")
        self.refused = 0

    async def run(self, work: Callable[[], T]) -> T:
        """`work()` in a hashing thread, once one is free (RATE_LIMITED after waiting
        `hash_wait_seconds`). A caller cancelled meanwhile (its client left) does not free
        the slot early: the slot is freed when the thread has finished."""
        try:
            async with asyncio.timeout(self.wait):
                await self.slots.acquire()
        except TimeoutError:
            self.refused += 1
            if self.refusals is not None:
                self.refusals.count("hashing")
            raise RateLimited(max(1, math.ceil(self.wait))) from None
        try:
            future = asyncio.get_running_loop().run_in_executor(self.pool, work)
        except BaseException:
            self.slots.release()
            raise
        future.add_done_callback(lambda _: self.slots.release())
        return await asyncio.shield(future)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class Throttle:
    """The admission checks of the anonymous mutations, and the app's `Hashing`."""

    def __init__(self, settings: Settings, limits: RateLimits,
                 refusals: Refusals | None = None) -> None:
        self.limits = limits
        self.refusals = refusals
        self.hashing = Hashing(settings, refusals)

    async def _spend(self, bound: str, *keys: str) -> None:
        try:
            await self.limits.hit(bound, *keys)
        except RateLimited:
            if self.refusals is not None:
                self.refusals.count(bound)
            raise

    async def login(self, ip: str, email: str) -> None:
        """Brute force: per IP, and per IP and email."""
        await self._spend("login_ip_rate", ip)
        await self._spend("login_rate", ip, email.strip().lower())

    async def sign_up(self, ip: str) -> None:
        await self._spend("signup_ip_rate", ip)

    async def token(self, ip: str) -> None:
        """refreshToken and logout, one budget."""
        await self._spend("token_ip_rate", ip)

    async def reauth(self, user_id: str) -> None:
        """A ping that re-authenticates a socket: per user, over all of its sockets."""
        await self._spend("socket_reauth_rate", user_id)
