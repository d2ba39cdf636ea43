"""Paces: what one family may start per second, spread out instead of all at once.

A budget per minute (`family_mutation_rate`) says how much a family may do; it does not
say how fast. Spent in one burst, a family's 600 root mutation fields (each a transaction,
each event fanned out to every open subscription of the family) or its members' 1,200
subscriptions (each a parse, an authentication and a hub listener) queue that much work
on the one event loop at once, and every other family's requests and deliveries wait
behind it. A `KeyedPace` lets a family start `burst` of them at once, then `rate` a
second: the next waits its turn (a request before it runs, a socket's `subscribe` before
the socket is read again), and a request is refused (RATE_LIMITED) only after waiting
`request_wait_seconds` (a socket simply waits). Waiting costs no CPU. Each wait is
counted under its bound. Per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from giftgraph.errors import RateLimited

if TYPE_CHECKING:
    from giftgraph.admission import Refusals


class Bucket:
    """One key's tokens (refilled since `at`), and the lock its waiters queue on."""

    __slots__ = ("at", "lock", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at
        self.lock = asyncio.Lock()  # its waiting starts, one behind the other


class KeyedPace:
    """A token bucket per key (a family): `burst` at once, then `rate` a second."""

    def __init__(self, bound: str, rate: float, burst: int, wait: float | None,
                 refusals: Refusals | None = None) -> None:
        self.bound = bound
        self.rate = rate
        self.burst = float(burst)
        self.wait = wait
        self.refusals = refusals
        self.buckets: dict[str, Bucket] = {}  # only keys with tokens spent
        self.swept = time.monotonic()

    def _refill(self, key: str, now: float) -> Bucket | None:
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= self.burst and not bucket.lock.locked():
                del self.buckets[key]  # full again: nothing to remember
                return None
        return bucket

    def tokens(self, key: str, now: float | None = None) -> float:
        """What `key` may start now without waiting."""
        bucket = self._refill(key, time.monotonic() if now is None else now)
        return self.burst if bucket is None else bucket.tokens

    async def take(self, key: str, n: int = 1,
                   before_wait: Callable[[], Awaitable[None]] | None = None) -> bool:
        """Start `n` for `key`: at once while its bucket has them, else after waiting for
        them (at most `burst` are waited for: `n` over it runs once the bucket is full,
        and the debt delays what comes next). RateLimited after `wait` seconds (None:
        no limit). Whether it waited. `before_wait` runs first when it must wait: a
        caller lets go of what others need (a pooled connection) while it waits its turn."""
        now = time.monotonic()
        self._sweep(now)
        bucket = self._refill(key, now)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(self.burst, now)
        need = min(float(n), self.burst)
        if bucket.tokens >= need and not bucket.lock.locked():
            bucket.tokens -= n
            return False
        if self.refusals is not None:
            self.refusals.count(self.bound)
        if before_wait is not None:
            await before_wait()
        try:
            async with asyncio.timeout(self.wait), bucket.lock:
                while bucket.tokens < need:
                    await asyncio.sleep((need - bucket.tokens) / self.rate)
                    self._refill(key, time.monotonic())
                bucket.tokens -= n
        except TimeoutError:
            raise RateLimited(max(1, math.ceil((need - bucket.tokens) / self.rate))) from None
        return True

    def _sweep(self, now: float) -> None:
        if now - self.swept < 60:
            return
        self.swept = now
        for key in list(self.buckets):
            self._refill(key, now)


class TimeBudget:
    """Seconds of work a second, per key and for the whole process: a key (a family) may
    use `share` of a second each second (after a `burst` of seconds), and all keys
    together `total`. `turn(key, estimate)` waits while the key's budget is spent (its
    waiters queue on one lock: one piece of a key's work at a time goes on to the
    process; `held` keeps that lock until the piece is done), then while the process's
    is (counted under `bound`), then reserves
    `estimate`; `charge(key, seconds, estimate)` settles what the work really took, so work
    priced wrongly in advance pays what it cost. A key's debt is capped at `max_debt`
    seconds, the process's at `burst`: a burst of work (a reconnect storm's first results)
    delays what follows by at most that much. Work that only ever brings the newest state
    (a live query's result) loses nothing by waiting: the key's changes fold into its next
    run.

    The process's budget goes to the waiting key that has the most of its own budget left
    (it has used least of late), first come first served among equals: the keys waiting
    are taken by the seconds they used, not by their pieces of work. Taken first come,
    first served, four families' 17 live queries each, every family within its share, kept
    a fifth family's one live query 1.5 s behind at the median and 4.5 s at p99; taken in
    turn by count, still 3.7 s at p99 (and eight families, 1.8 s), the process's debt of
    up to 2 s repaid at 0.35 s a second for everyone (adversary, 2026-11-28)."""

    def __init__(self, bound: str, share: float, total: float, burst: float,
                 refusals: Refusals | None = None, max_debt: float = 2.0) -> None:
        self.bound = bound
        self.keys = KeyedPace(bound, share, 1, None)
        self.process = KeyedPace(bound, total, 1, None)
        self.keys.burst = self.process.burst = burst
        self.refusals = refusals
        self.max_debt = max_debt
        self.process_debt = burst
        self._waiting: list[tuple[str, float]] = []  # keys waiting for the process's budget
        self._changed = asyncio.Event()  # set (and replaced) when a waiter goes or leaves
        self._running: dict[str, list[Any]] = {}  # per key: its lock, and who holds or waits

    @staticmethod
    def _bucket(pace: KeyedPace, key: str, now: float) -> Bucket:
        bucket = pace._refill(key, now)
        if bucket is None:
            bucket = pace.buckets[key] = Bucket(pace.burst, now)
        return bucket

    @contextlib.asynccontextmanager
    async def held(self, key: str, estimate: float = 0.0) -> AsyncIterator[None]:
        """`turn`, and the key's next piece waits until this one is done (charged): what a
        key has let in and not finished is one piece at a time, so the process's budget
        sees each piece's real cost before the key's next is let in. Let in on their
        estimates, one family's 12 reruns went in within 6 ms, ran ~6 s together and
        held every family's live queries back meanwhile (adversary, 2026-11-28)."""
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = [asyncio.Lock(), 0]
        running[1] += 1
        try:
            async with running[0]:
                await self._wait(key, estimate)
                yield
        finally:
            running[1] -= 1
            if not running[1]:
                del self._running[key]

    async def turn(self, key: str, estimate: float = 0.0) -> None:
        """The key's turn and the process's, `estimate` reserved; the key's next piece
        may be let in at once (`held` keeps it out until this one is done)."""
        async with self.held(key, estimate):
            pass

    async def _wait(self, key: str, estimate: float) -> None:
        """The key's budget, then the process's (the key's lock held: one piece a key)."""
        counted = False
        while (bucket := self._bucket(self.keys, key, time.monotonic())).tokens <= 0:
            if not counted and self.refusals is not None:
                self.refusals.count(self.bound)
                counted = True
            # Looked at again at least every second: a credit may come meanwhile.
            await asyncio.sleep(min(1.0, -bucket.tokens / self.keys.rate + 0.001))
        bucket.tokens -= estimate  # reserved: the key's next piece sees it spent
        await self._process_turn(key, estimate, counted)

    async def _process_turn(self, key: str, estimate: float, counted: bool) -> None:
        """The process's budget for `key`'s piece (the key's lock held: one piece a key)."""
        entry = (key, estimate)
        self._waiting.append(entry)
        try:
            while True:
                process = self._bucket(self.process, "", time.monotonic())
                if process.tokens > 0 and self._first() is entry:
                    self._waiting.remove(entry)
                    process.tokens -= estimate  # reserved
                    self._wake()  # the next may go too
                    return
                delay = None  # budget left, another key's first: until it goes
                if process.tokens <= 0:
                    if not counted and self.refusals is not None:
                        self.refusals.count(self.bound)
                        counted = True
                    delay = min(1.0, -process.tokens / self.process.rate + 0.001)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), delay)
        except BaseException:
            if entry in self._waiting:
                self._waiting.remove(entry)
                self._wake()
            raise

    def _first(self) -> tuple[str, float]:
        """The waiting key with the most of its own budget left (the first such)."""
        return max(self._waiting, key=lambda entry: self.keys.tokens(entry[0]))

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def charge(self, key: str, seconds: float, estimate: float = 0.0, *,
               process: bool = True) -> None:
        """`process` False: the key's budget only (work that did not take a turn)."""
        now = time.monotonic()
        paces = ((self.keys, key, self.max_debt), (self.process, "", self.process_debt)) \
            if process else ((self.keys, key, self.max_debt),)
        for pace, k, debt in paces:
            bucket = self._bucket(pace, k, now)
            bucket.tokens = max(-debt, bucket.tokens - (seconds - estimate))


class Allowance:
    """Seconds of one kind of work per key, settled after the fact: a key (a caller) may
    spend `share` of a second each second after a `burst`; `retry_after(key)` is 0 while
    it has some left, else the seconds until it has, and `charge(key, seconds)` counts what
    a piece of work took (its debt capped at `max_debt`). For work whose cost is known only
    once it is done (parsing and validating a document never seen before): the caller
    that has spent its share is refused the next piece, before it starts."""

    def __init__(self, bound: str, share: float, burst: float, max_debt: float = 2.0) -> None:
        self.pace = KeyedPace(bound, share, 1, None)
        self.pace.burst = burst
        self.max_debt = max_debt

    def retry_after(self, key: str) -> float:
        tokens = self.pace.tokens(key)
        return 0.0 if tokens > 0 else (0.001 - tokens) / self.pace.rate

    def charge(self, key: str, seconds: float) -> None:
        now = time.monotonic()
        self.pace._sweep(now)
        bucket = self.pace._refill(key, now)
        if bucket is None:
            bucket = self.pace.buckets[key] = Bucket(self.pace.burst, now)
        bucket.tokens = max(-self.max_debt, bucket.tokens - seconds)
