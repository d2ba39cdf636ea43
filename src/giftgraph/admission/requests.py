"""HTTP requests in flight per caller: one client's share of the process.

Every other bound limits what one request may cost; none limited how many requests one
caller has running at once. The process serves them all on one event loop, so a family
with 20 connections each sending `{ me { id } }` in a loop made every other family's
requests wait behind its 20 (a victim's p99 went from ~20 ms to ~550 ms).

`InFlight` lets each caller (its family, read from a verified access token; else its IP)
run at most `max_requests_per_caller` GraphQL requests over HTTP at once. The next waits
for one of them to finish, at most `request_wait_seconds`, then is refused (RATE_LIMITED,
`requests_per_caller`). A waiting request's body is not read yet: it costs its
connection only, and connections are bounded (`admission.server`). The bound is per
process.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from giftgraph import auth
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


class InFlight:
    """At most `max_requests_per_caller` requests of one caller at once."""

    def __init__(self, settings: Settings, refusals: Refusals | None = None) -> None:
        self.limit = settings.max_requests_per_caller
        self.wait = settings.request_wait_seconds
        self.settings = settings
        self.refusals = refusals
        self.callers: dict[str, _Caller] = {}  # only callers with a request running or waiting

    def key(self, request: Request) -> str:
        """The caller of `request`: `family:<id>` when it carries a valid access token
        (its signature verified: a forged one can't spend another family's share), else
        `ip:<address>`."""
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
        return f"ip:{client.host if client is not None else 'unknown'}"

    @asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        """Held while one request of `key` runs; RateLimited (counted) after waiting
        `request_wait_seconds` for one of its others to finish."""
        caller = self.callers.get(key) or self.callers.setdefault(key, _Caller(self.limit))
        caller.users += 1
        try:
            try:
                async with asyncio.timeout(self.wait):
                    await caller.slots.acquire()
            except TimeoutError:
                if self.refusals is not None:
                    self.refusals.count("requests_per_caller")
                raise RateLimited(max(1, math.ceil(self.wait))) from None
            try:
                yield
            finally:
                caller.slots.release()
        finally:
            caller.users -= 1
            if caller.users == 0:
                self.callers.pop(key, None)
