"""The anonymous mutations' per-IP budgets, and the bound on concurrent password hashing.

`login`, `signUp`, `refreshToken` and `logout` need no token, so the per-user mutation
budget does not reach them: each spends a budget of the client's IP first, before any
database work or hashing (`login_ip_rate` and `login_rate`, `signup_ip_rate`,
`token_ip_rate`, shared by every instance when the rate-limit store is Redis).

argon2id is slow and memory-hard on purpose (64 MiB, ~50 ms of a core per hash), so it
runs off the event loop, in a pool of `max_concurrent_hashes` threads of its own; a request
waits for a free one at most `hash_wait_seconds`, then gets RATE_LIMITED (`retryAfter`)
instead of queueing without end: however many requests hash at once, the rest of the
server keeps its cores and its memory. The bound is per process. The hashing threads run
at a lower priority (`hash_thread_niceness`): when the cores are short, the event loop's
thread goes first (a permitted signUp flood's hashes competed with it for the same cores).

The threads are shared fairly: each caller (a family when authenticated, else an IP) has
one hash at a time, running or waiting for a thread (`Hashing.turn`); its next waits for
its own turn, within the same `hash_wait_seconds`. Without it, one ADMIN's burst of
`registerUser` (120 a minute, the mutation budget) queued ahead of every login and signUp
of the process: each waited ~5 s, then was refused.

A free thread goes first to a login that is likely its account owner's: from a network the
account has signed in from (giftgraph.db.networks), at most `known_login_rate` of them per
account, or with its device token (an account that has logged in again and again lately
queues as if it came later: `Threads`); then to the others, in the order they came.
Eighty addresses each sending a wrong password a second, within their own budgets, kept
the queue full: the owner's correct login waited ~5 s and was refused in one try of two.
No account is ever locked: others' attempts spend nothing of it, and every login still
pays one argon2 check.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from giftgraph.admission.clients import client_network
from giftgraph.admission.requests import Pace
from giftgraph.config import Settings
from giftgraph.errors import RateLimited

if TYPE_CHECKING:
    from giftgraph.admission import Refusals
    from giftgraph.ratelimit import RateLimits

T = TypeVar("T")


class _Key:
    """One caller's lock (its hash running or waiting for a thread) and its users."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Turn:
    """`Hashing.run` as one caller: one of its hashes at a time (ahead of the others'
    when `known`, later among those when `account` is heavy: `Threads`)."""

    __slots__ = ("account", "hashing", "key", "known")

    def __init__(self, hashing: Hashing, key: str, known: bool = False,
                 account: str | None = None) -> None:
        self.hashing = hashing
        self.key = key
        self.known = known
        self.account = account

    async def run(self, work: Callable[[], T]) -> T:
        return await self.hashing.run(work, self.key, known=self.known, account=self.account)


class Threads:
    """The hashing threads' turns: `limit` at once. When one is free it goes to the
    longest-waiting known caller (likely an account's owner: `known`); an account that
    has logged in again and again lately (`heavy`: its successful logins ahead, each
    halving in weight every HALF_LIFE seconds, weigh HEAVY or more) queues as if it had
    come `handicap` seconds later, so that an attacker's own accounts, logging in again
    and again, do not fill the lane ahead of an owner's rare login, and a heavy owner
    still waits a bounded time. Then the longest-waiting other caller. Weights are this
    process's."""

    HALF_LIFE = 60.0
    HEAVY = 2.5  # e.g. three logins ahead within ~30 s, or one every ~30 s or less
    LIMIT = 4096  # accounts remembered; past it, down to half, the lightest first

    def __init__(self, limit: int, handicap: float = 2.5) -> None:
        self.free = limit
        self.handicap = handicap
        # known, others, known but heavy
        self.waiting: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]],
                            deque[asyncio.Future[None]]] = (deque(), deque(), deque())
        self.queued_at: dict[asyncio.Future[None], float] = {}  # known and heavy waiters
        self.turns: dict[str, tuple[float, float]] = {}  # account: (weight, as of)

    def weight(self, account: str | None, now: float) -> float:
        """`account`'s logins ahead, each halved every HALF_LIFE seconds since."""
        if account is None or account not in self.turns:
            return 0.0
        weight, at = self.turns[account]
        return float(weight * 0.5 ** ((now - at) / self.HALF_LIFE))

    def had_turn(self, account: str) -> None:
        """A login of `account` that went ahead succeeded (only its own successes weigh
        on it: a stranger's failures with its device token or from its network do not)."""
        now = time.monotonic()
        self.turns[account] = (self.weight(account, now) + 1.0, now)
        if len(self.turns) > self.LIMIT:  # down to half, the lightest let go first
            kept = sorted(self.turns, key=lambda a: self.weight(a, now))[self.LIMIT // 2:]
            self.turns = {a: self.turns[a] for a in kept}

    async def acquire(self, known: bool, account: str | None = None) -> None:
        if self.free > 0:  # a free thread means no one is waiting: given at release
            self.free -= 1
            return
        now = time.monotonic()
        heavy = known and self.weight(account, now) >= self.HEAVY
        lane = self.waiting[2 if heavy else 0 if known else 1]
        turn = asyncio.get_running_loop().create_future()
        lane.append(turn)
        if known:
            self.queued_at[turn] = now + (self.handicap if heavy else 0.0)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.release()  # given, then cancelled (timed out): the next one's
            elif turn in lane:  # a release may have passed over it already
                lane.remove(turn)
            raise
        finally:
            self.queued_at.pop(turn, None)

    def _next_known(self) -> asyncio.Future[None] | None:
        """The known waiter that came first, a heavy one `handicap` seconds later than it
        did (each lane is in that order: the earlier of their heads)."""
        known, _, heavy = self.waiting
        for lane in (known, heavy):
            while lane and lane[0].done():
                lane.popleft()
        if not known and not heavy:
            return None
        if heavy and (not known or self.queued_at[heavy[0]] < self.queued_at[known[0]]):
            return heavy.popleft()
        return known.popleft()

    def release(self) -> None:
        turn = self._next_known()
        if turn is None:
            others = self.waiting[1]
            while others and turn is None:
                turn = others.popleft()
                if turn.done():
                    turn = None
        if turn is None:
            self.free += 1
        else:
            turn.set_result(None)


def _yield_to_the_loop(niceness: int) -> None:
    """A hashing thread's scheduling priority, lowered by `niceness` (Linux: per thread):
    when the cores are short, the event loop's thread, which every other family's
    requests and deliveries wait for, runs before a hash. Unchanged where not supported."""
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)


class Hashing:
    """Runs password hashing and verification, at most `max_concurrent_hashes` at once,
    and one at a time per caller's key."""

    def __init__(self, settings: Settings, refusals: Refusals | None = None) -> None:
        self.limit = settings.max_concurrent_hashes
        self.wait = settings.hash_wait_seconds
        self.refusals = refusals
        # a heavy account's logins queue as if they came half the longest wait later
        self.slots = Threads(self.limit, self.wait / 2)
        self.pool = ThreadPoolExecutor(self.limit, thread_name_prefix="giftgraph-hash",
                                       initializer=_yield_to_the_loop,
                                       initargs=(settings.hash_thread_niceness,))
        self.keys: dict[str, _Key] = {}  # only keys with a hash running or waiting
        self.refused = 0

    def turn(self, key: str, known: bool = False, account: str | None = None) -> Turn:
        """The gate of one caller (`family:<id>`, `ip:<network>`); `known`: a login from
        a network its account (`account`: its user's id) has signed in from, or with its
        device token: ahead of the others, unless the account is heavy (`Threads`)."""
        return Turn(self, key, known, account)

    def logged_in(self, account: str) -> None:
        """A login of `account` that went ahead succeeded: it weighs on its next ones."""
        self.slots.had_turn(account)

    async def run(self, work: Callable[[], T], key: str | None = None, *,
                  known: bool = False, account: str | None = None) -> T:
        """`work()` in a hashing thread, once `key` has no other hash running or waiting
        and a thread is free (RATE_LIMITED after `hash_wait_seconds` in all); a free
        thread goes to a `known` caller first. A caller cancelled meanwhile (its client
        left) does not free the slot or its key early: both are freed when the thread has
        finished."""
        entry = None
        if key is not None:
            entry = self.keys.get(key) or self.keys.setdefault(key, _Key())
            entry.users += 1
        locked = False

        def leave() -> None:
            if entry is not None:
                if locked:
                    entry.lock.release()
                entry.users -= 1
                if entry.users == 0:
                    self.keys.pop(key, None)  # type: ignore[arg-type]

        try:
            async with asyncio.timeout(self.wait):
                if entry is not None:
                    await entry.lock.acquire()
                    locked = True
                await self.slots.acquire(known, account)
        except TimeoutError:
            leave()
            self.refused += 1
            if self.refusals is not None:
                self.refusals.count("hashing")
            raise RateLimited(max(1, math.ceil(self.wait))) from None
        except BaseException:
            leave()
            raise

        def done(_: object = None) -> None:
            self.slots.release()
            leave()

        try:
            future = asyncio.get_running_loop().run_in_executor(self.pool, work)
        except BaseException:
            done()
            raise
        future.add_done_callback(done)
        return await asyncio.shield(future)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class Throttle:
    """The admission checks of the anonymous mutations, and the app's `Hashing`."""

    def __init__(self, settings: Settings, limits: RateLimits,
                 refusals: Refusals | None = None) -> None:
        self.limits = limits
        self.refusals = refusals
        self.ipv6_prefix_length = settings.ipv6_prefix_length
        self.hashing = Hashing(settings, refusals)
        # New sockets refused per IP, paced as refused HTTP requests are.
        self.connect_pace = Pace(settings.refusal_rate, settings.refusal_burst,
                                 settings.request_wait_seconds, refusals)

    def network(self, host: str | None) -> str:
        """What the per-IP budgets of `host` are keyed by (giftgraph.admission.clients)."""
        return client_network(host, self.ipv6_prefix_length)

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

    async def known_login(self, email: str, network: str, account: bool = True) -> bool:
        """Whether a login for `email` from a network its account has signed in from may
        go ahead of the hashing queue: while neither the account nor the network has
        spent `known_login_rate` (by failed logins ahead: `known_login_failed`). Past it
        the login waits its turn with the others (counted). The owner's own logins spend
        nothing (13 routine logins in an hour took an account's lane away), and a network
        whose logins ahead fail (an attacker's own accounts, signed up from the flooding
        addresses, with wrong passwords) loses the lane for all its logins."""
        try:
            if account:  # a device token's lane is its own (`account=False`): below
                await self.limits.check("known_login_rate", "account", email.strip().lower())
            await self.limits.check("known_login_rate", "network", network)
        except RateLimited:
            if self.refusals is not None:
                self.refusals.count("known_login_rate")
            return False
        return True

    async def known_login_failed(self, email: str, network: str,
                                 account: bool = True) -> None:
        """A login that went ahead failed: spend the account's and the network's lane. A
        device token's failures (`account=False`, `network` naming the device) spend the
        device's alone: whoever holds a copy of it (a shared computer) could otherwise take
        the account's lane from its owner's other devices and networks for an hour."""
        keys_of = [("account", email.strip().lower())] if account else []
        for keys in (*keys_of, ("network", network)):
            with contextlib.suppress(RateLimited):
                await self.limits.hit("known_login_rate", *keys)

    async def sign_up(self, ip: str) -> None:
        await self._spend("signup_ip_rate", ip)

    async def token(self, ip: str) -> None:
        """refreshToken and logout, one budget."""
        await self._spend("token_ip_rate", ip)

    async def socket_connect(self, ip: str) -> None:
        """A new WebSocket, before its handshake is accepted: per IP."""
        await self._spend("socket_connect_rate", ip)

    async def reauth(self, user_id: str) -> None:
        """A ping that re-authenticates a socket: per user, over all of its sockets."""
        await self._spend("socket_reauth_rate", user_id)
