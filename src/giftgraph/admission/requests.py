"""HTTP requests in flight per caller: one client's share of the process.

Every other bound limits what one request may cost; none limited how many requests one
caller has running at once. The process serves them all on one event loop, so a family
with 20 connections each sending `{ me { id } }` in a loop made every other family's
requests wait behind its 20 (a victim's p99 went from ~20 ms to ~550 ms).

`InFlight` lets each caller (its family, read from a verified access token; else its IP)
run at most `max_requests_per_caller` GraphQL requests over HTTP at once. The next waits
for one of them to finish, at most `request_wait_seconds`, then is refused (RATE_LIMITED,
`requests_per_caller`). A request's body is read before it takes a slot: a body still
coming (a slow client, or one that never finishes) holds none of its caller's, and is
bounded in size (`body_bytes`) and time (`admission.server`). The bound is per
process.

A refusal is cheap, not free: the body is read and decoded, the token checked against the
database, the document parsed and measured. A caller that goes on sending what is refused
(a budget spent, a document or an argument over a bound, a request error) as fast as
it is answered would take the loop's turns from every other family with refusals alone.
So refusals have a budget of their own per caller (`Pace`, the bound
`refusals_per_caller`): a token bucket of `refusal_burst` refusals that refills at
`refusal_rate` a second. While it has a token, nothing waits; once a caller has spent it,
each of its requests waits, before its body is read, for the next token and takes it; a
request that is then not refused gives it back. A client that honours `retryAfter`, or
makes a mistake now and then, never waits.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from giftgraph import auth
from giftgraph.admission.clients import client_key
from giftgraph.admission.pace import Bucket, KeyedPace
from giftgraph.errors import RateLimited, Unauthenticated

if TYPE_CHECKING:
    from starlette.requests import Request

    from giftgraph.admission import Refusals
    from giftgraph.config import Settings


class _Caller:
    """One caller's slots, and its requests running or waiting for one (`users`)."""

    __slots__ = ("slots", "users")

    def __init__(self, limit: int) -> None:
        self.slots = asyncio.Semaphore(limit)
        self.users = 0


class Turn:
    """One request's admission: `answered(refused)` says how it went."""

    __slots__ = ("key", "pace", "reserved")

    def __init__(self, pace: Pace, key: str, reserved: bool) -> None:
        self.pace = pace
        self.key = key
        self.reserved = reserved  # it took a token before it ran

    def answered(self, refused: bool) -> None:
        """The request was refused (spend a token) or not (give back the one it took)."""
        if refused and not self.reserved:
            self.pace.spend(self.key)
        elif not refused and self.reserved:
            self.pace.give_back(self.key)
        self.reserved = False


class Pace(KeyedPace):
    """Refusals per caller: a token bucket of `burst` that refills at `rate` a second,
    spent by each refusal after the fact. A caller without a token waits for the next one
    before its request is parsed."""

    def __init__(self, rate: float, burst: int, wait: float,
                 refusals: Refusals | None = None) -> None:
        super().__init__("refusals_per_caller", rate, burst, wait, refusals)

    def spend(self, key: str, now: float | None = None) -> None:
        """One refusal of `key`'s."""
        now = time.monotonic() if now is None else now
        bucket = self._refill(key, now)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(self.burst, now)
        bucket.tokens = max(-self.burst, bucket.tokens - 1)
        self._sweep(now)

    def give_back(self, key: str) -> None:
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(self.burst, bucket.tokens + 1)

    def spent(self, key: str, now: float | None = None) -> bool:
        """Whether `key` has no token left (its next request waits)."""
        bucket = self._refill(key, time.monotonic() if now is None else now)
        return bucket is not None and bucket.tokens < 1

    async def wait_turn(self, key: str) -> bool:
        """Wait, if `key` has no token, for the next one and take it (True); RateLimited
        (counted) after `wait` seconds. False: it had tokens, nothing was taken."""
        bucket = self._refill(key, time.monotonic())
        if bucket is None or (bucket.tokens >= 1 and not bucket.lock.locked()):
            return False
        if self.refusals is not None:
            self.refusals.count(self.bound)
        try:
            async with asyncio.timeout(self.wait), bucket.lock:
                while (bucket.tokens < 1):
                    await asyncio.sleep((1 - bucket.tokens) / self.rate)
                    self._refill(key, time.monotonic())
                bucket.tokens -= 1
        except TimeoutError:
            raise RateLimited(max(1, math.ceil((1 - bucket.tokens) / self.rate))) from None
        return True


class InFlight:
    """At most `max_requests_per_caller` requests of one caller at once."""

    def __init__(self, settings: Settings, refusals: Refusals | None = None) -> None:
        self.limit = settings.max_requests_per_caller
        self.wait = settings.request_wait_seconds
        self.settings = settings
        self.refusals = refusals
        self.callers: dict[str, _Caller] = {}  # only callers with a request running or waiting
        self.pace = Pace(settings.refusal_rate, settings.refusal_burst, self.wait, refusals)

    def key(self, request: Request) -> str:
        """The caller of `request`: `family:<id>` when it carries a valid access token
        (its signature verified: a forged one can't spend another family's share), else
        `ip:<network>` (giftgraph.admission.clients)."""
        header = request.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            try:
                claims = auth.decode_access_token(self.settings, token.strip())
            except Unauthenticated:
                pass
            else:
                return f"family:{claims.family_id}"
        client = request.client
        return client_key(client.host if client is not None else None,
                          self.settings.ipv6_prefix_length)

    @asynccontextmanager
    async def turn(self, key: str,
                   read: Callable[[], Awaitable[object]] | None = None) -> AsyncIterator[Turn]:
        """Held while one request of `key` runs; RateLimited (counted) after waiting
        `request_wait_seconds` for one of its others to finish, or for a refusal token
        when the caller has spent them (`Pace`). `read` (the request's body) is awaited
        between the two: a caller out of tokens waits before its body is read, and a body
        still coming holds no slot. The request tells the `Turn` whether it was refused."""
        turn = Turn(self.pace, key, await self.pace.wait_turn(key))
        try:
            if read is not None:
                await read()
            async with self.slot(key):
                yield turn
        except Exception as exc:
            # A request error raised for the view to answer (a malformed body: 400, 405,
            # 415) is a refusal too; a client gone away or a failure of ours is not.
            status = getattr(exc, "status_code", None)
            turn.answered(refused=isinstance(status, int) and 400 <= status < 500)
            raise
        finally:
            turn.answered(refused=False)  # not answered (cancelled): no refusal

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        """One of `key`'s `max_requests_per_caller`, held: RateLimited (counted) after
        `request_wait_seconds` without one (a request's `turn`)."""
        release = await self.hold(key)
        try:
            yield
        finally:
            release()

    async def hold(self, key: str) -> Callable[[], None]:
        """`slot`, taken until the function it returns is called (again: nothing more). A
        socket's query or mutation (web/view.py) is let go from its task's end too."""
        caller = self.callers.get(key) or self.callers.setdefault(key, _Caller(self.limit))
        caller.users += 1

        def leave() -> None:
            caller.users -= 1
            if caller.users == 0 and self.callers.get(key) is caller:
                self.callers.pop(key, None)

        try:
            async with asyncio.timeout(self.wait):
                await caller.slots.acquire()
        except TimeoutError:
            leave()
            if self.refusals is not None:
                self.refusals.count("requests_per_caller")
            raise RateLimited(max(1, math.ceil(self.wait))) from None
        except BaseException:
            leave()
            raise
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                caller.slots.release()
                leave()

        return release
