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
account has signed in from (giftgraph.db.networks), or with its device token, while that
network's (or device's) failures ahead stay within `known_login_rate`. Among those, an
account signed up lately, or an account or network that has logged in again and again
lately, queues as if it came later (`Threads`). Then the others, in the order they came.
Eighty addresses each sending a wrong password a second, within their own budgets, kept
the queue full: the owner's correct login waited ~5 s and was refused in one try of two.
No account is ever locked: others' attempts spend nothing of it, and every login still
pays one argon2 check.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
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
    when `known`, later among those when `account` or `network` has logged in again and
    again lately: `Threads`)."""

    __slots__ = ("account", "established", "hashing", "key", "known", "network", "recent")

    def __init__(self, hashing: Hashing, key: str, known: bool = False,
                 account: str | None = None, network: str | None = None,
                 established: bool = True, recent: bool = False) -> None:
        self.hashing = hashing
        self.key = key
        self.known = known
        self.account = account
        self.network = network
        self.established = established
        self.recent = recent

    async def run(self, work: Callable[[], T]) -> T:
        return await self.hashing.run(work, self.key, known=self.known, account=self.account,
                                      network=self.network, established=self.established,
                                      recent=self.recent)


class Threads:
    """The hashing threads' turns: `limit` at once. When one is free it goes to a known
    caller (likely an account's owner: `known`), the one that came first, where a caller
    counts as having come later (`delay`) when its account or network has logged in again
    and again lately, or when its account is new; then to the longest-waiting other caller.

    An account's successful logins ahead weigh 1 each, halving every HALF_LIFE seconds;
    a network's weigh the same, shared by NETWORK_SHARE accounts (a household). Past FREE
    (a login lately: a typo, a second device) each unit of weight makes its next login
    queue STEP seconds later, at most `handicap` (half the longest wait: a heavy owner is
    passed only by lighter logins that came within it). An account that is not yet
    established (younger than `login_established_seconds`) queues `fresh` seconds later
    (four times the longest wait), and an account that logged in within the last RECENT
    seconds `recent` seconds later (twice the longest wait; the database keeps the last
    login, giftgraph.db.networks, so any process and a restart know it): each tier
    behind every login of the one before, whatever its weight (established and idle,
    established and recent, new and idle, new and recent), and all ahead of the other
    callers. Accounts signed up for an attack, and rotated so that each stays light,
    queue behind the owners'; accounts signed up a day ahead have one idle login an hour
    (in each process: logins of one account sent at once count as recent behind the
    first, `Hashing.in_flight`, but another process does not see them until the first
    commits). Weights are this process's; past LIMIT accounts, the lightest are
    forgotten."""

    HALF_LIFE = 60.0
    FREE = 1.0
    STEP = 1.0  # seconds later per unit of weight past FREE
    NETWORK_SHARE = 4.0
    RECENT = 3600.0
    LIMIT = 16384  # accounts (and networks) remembered; past it, down to half, lightest first

    def __init__(self, limit: int, handicap: float = 2.5, fresh: float | None = None,
                 recent: float | None = None) -> None:
        self.free = limit
        self.handicap = handicap
        self.fresh = 8 * handicap if fresh is None else fresh
        self.recent = 4 * handicap if recent is None else recent
        # known (a heap: as of when each counts as having come), others (in order)
        self.waiting: tuple[list[tuple[float, int, asyncio.Future[None]]],
                            deque[asyncio.Future[None]]] = ([], deque())
        self.arrivals = itertools.count()  # ties in the heap: first come first
        self.turns: dict[str, tuple[float, float]] = {}  # account: (weight, as of)
        self.networks: dict[str, tuple[float, float]] = {}  # network: (weight, as of)

    def weight(self, account: str | None, now: float,
               of: dict[str, tuple[float, float]] | None = None) -> float:
        """`account`'s (or, `of=self.networks`, a network's) logins ahead, each halved
        every HALF_LIFE seconds since."""
        weights = self.turns if of is None else of
        if account is None or account not in weights:
            return 0.0
        weight, at = weights[account]
        return float(weight * 0.5 ** ((now - at) / self.HALF_LIFE))

    def delay(self, account: str | None, network: str | None, now: float,
              established: bool = True, recent: bool = False) -> float:
        """How much later than it came a known login of `account` from `network` queues
        (`recent`: the account logged in within RECENT seconds, as the database says;
        this process's own memory of its logins ahead counts too)."""
        weight = max(self.weight(account, now),
                     self.weight(network, now, self.networks) / self.NETWORK_SHARE)
        later = min(self.handicap, max(0.0, weight - self.FREE) * self.STEP)
        if recent or (account is not None and account in self.turns
                      and now - self.turns[account][1] < self.RECENT):
            later += self.recent
        return later if established else later + self.fresh

    def had_turn(self, account: str, network: str | None = None) -> None:
        """A login of `account` from `network` that went ahead succeeded (only its own
        successes weigh on it: a stranger's failures with its device token or from its
        network do not)."""
        now = time.monotonic()
        for key, weights in ((account, self.turns), (network, self.networks)):
            if key is None:
                continue
            weights[key] = (self.weight(key, now, weights) + 1.0, now)
            if len(weights) > self.LIMIT:
                self._prune(weights, now)

    def _prune(self, weights: dict[str, tuple[float, float]], now: float) -> None:
        """Down to half of LIMIT, the lightest let go first."""
        by_weight = sorted(weights, key=lambda key: self.weight(key, now, weights))
        for gone in by_weight[:len(by_weight) - self.LIMIT // 2]:
            del weights[gone]

    async def acquire(self, known: bool, account: str | None = None,
                      network: str | None = None, established: bool = True,
                      recent: bool = False) -> None:
        if self.free > 0:  # a free thread means no one is waiting: given at release
            self.free -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        if known:
            now = time.monotonic()
            later = self.delay(account, network, now, established, recent)
            heapq.heappush(self.waiting[0], (now + later, next(self.arrivals), turn))
        else:
            self.waiting[1].append(turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.release()  # given, then cancelled (timed out): the next one's
            elif not known and turn in self.waiting[1]:  # a release may have passed it
                self.waiting[1].remove(turn)
            # a known one stays in the heap, done: passed over when it comes up
            raise

    def release(self) -> None:
        known, others = self.waiting
        turn = None
        while known and turn is None:
            turn = heapq.heappop(known)[2]
            if turn.done():
                turn = None
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
        # a heavy account's logins queue up to half the longest wait later, a recent one's
        # twice the longest wait later, a new account's four times
        self.slots = Threads(self.limit, self.wait / 2, fresh=4 * self.wait,
                             recent=2 * self.wait)
        self.pool = ThreadPoolExecutor(self.limit, thread_name_prefix="giftgraph-hash",
                                       initializer=_yield_to_the_loop,
                                       initargs=(settings.hash_thread_niceness,))
        self.keys: dict[str, _Key] = {}  # only keys with a hash running or waiting
        # accounts with a known login waiting or hashing: the next one counts as recent
        # (the first one's login is not yet committed)
        self.in_flight: dict[str, int] = {}
        self.refused = 0

    def turn(self, key: str, known: bool = False, account: str | None = None,
             network: str | None = None, established: bool = True,
             recent: bool = False) -> Turn:
        """The gate of one caller (`family:<id>`, `ip:<network>`); `known`: a login from
        a network its account (`account`: its user's id) has signed in from, or with its
        device token: ahead of the others, later among them as its account or its
        client's `network` has logged in lately, or the account logged in within the hour
        (`recent`), or is not `established` (`Threads`)."""
        return Turn(self, key, known, account, network, established, recent)

    def logged_in(self, account: str, network: str | None = None) -> None:
        """A login of `account` from `network` that went ahead succeeded: it weighs on
        the next ones of both."""
        self.slots.had_turn(account, network)

    async def run(self, work: Callable[[], T], key: str | None = None, *,
                  known: bool = False, account: str | None = None,
                  network: str | None = None, established: bool = True,
                  recent: bool = False) -> T:
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
        flying = account if known else None
        if flying is not None:  # another login of the account not yet over: recent
            recent = recent or flying in self.in_flight
            self.in_flight[flying] = self.in_flight.get(flying, 0) + 1

        def leave() -> None:
            if flying is not None:
                left = self.in_flight.pop(flying) - 1
                if left:
                    self.in_flight[flying] = left
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
                await self.slots.acquire(known, account, network, established, recent)
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

    async def known_login(self, network: str) -> bool:
        """Whether a login from a network its account has signed in from (or with its
        device token: `network` names the device) may go ahead of the hashing queue: while
        the network has not spent `known_login_rate` (by failed logins ahead:
        `known_login_failed`). Past it the login waits its turn with the others (counted).
        The owner's own logins spend nothing (13 routine logins in an hour took an
        account's lane away), and a network whose logins ahead fail (an attacker's own
        accounts, signed up from the flooding addresses, with wrong passwords) loses the
        lane for all its logins. Nothing is spent per account: a stranger on a network the
        owner once used (a cafe's) failing with the owner's email spent the account's lane
        for an hour, and the owner's logins from home then waited behind a flood."""
        try:
            await self.limits.check("known_login_rate", "network", network)
        except RateLimited:
            if self.refusals is not None:
                self.refusals.count("known_login_rate")
            return False
        return True

    async def known_login_failed(self, network: str) -> None:
        """A login that went ahead failed: spend its network's lane (a device token's
        failures spend the device's alone: `network` names it)."""
        with contextlib.suppress(RateLimited):
            await self.limits.hit("known_login_rate", "network", network)

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
