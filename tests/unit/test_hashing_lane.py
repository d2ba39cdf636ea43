"""The hashing queue's known lane (giftgraph.admission.throttle.Threads): accounts and
networks that log in again and again queue later than the other known callers; how their
logins are weighed, and that the accounts and networks remembered are bounded."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from giftgraph.admission.throttle import Hashing, Threads
from giftgraph.config import Settings
from giftgraph.errors import RateLimited


def test_an_accounts_logins_weigh_less_as_they_age() -> None:
    threads = Threads(1)
    threads.had_turn("a")
    threads.had_turn("a")
    now = time.monotonic()
    assert threads.weight("a", now) == pytest.approx(2.0, abs=0.01)
    assert threads.weight("a", now + Threads.HALF_LIFE) == pytest.approx(1.0, abs=0.01)
    assert threads.weight("b", now) == 0.0
    assert threads.weight(None, now) == 0.0


def test_the_accounts_remembered_are_bounded_and_the_heaviest_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Threads, "LIMIT", 100)
    threads = Threads(1)
    for _ in range(3):
        threads.had_turn("heavy")
    for n in range(1_000):
        threads.had_turn(f"light{n}")
        threads.had_turn("someone", f"198.51.100.{n % 250}/{n}")
    assert len(threads.turns) <= 100
    assert len(threads.networks) <= 100
    assert threads.weight("heavy", time.monotonic()) >= 2.9


async def test_heavy_accounts_wait_behind_the_other_known_callers_only() -> None:
    threads = Threads(1, recent=0.0)  # the weights alone (recency: below)
    for _ in range(3):
        threads.had_turn("busy")
    threads.had_turn("retried")  # one login lately (a typo, a second device): not heavy
    await threads.acquire(True, "holder")  # the one thread, taken
    busy = asyncio.create_task(threads.acquire(True, "busy"))
    stranger = asyncio.create_task(threads.acquire(False))
    retried = asyncio.create_task(threads.acquire(True, "retried"))
    await asyncio.sleep(0)
    fresh = asyncio.create_task(threads.acquire(True, "fresh"))  # came later: behind
    await asyncio.sleep(0)
    order = []
    for _ in range(4):
        threads.release()
        await asyncio.sleep(0)
        order += [name for name, task in (("busy", busy), ("stranger", stranger),
                                          ("retried", retried), ("fresh", fresh))
                  if task.done() and name not in order]
    assert order == ["retried", "fresh", "busy", "stranger"]
    threads.release()
    assert threads.free == 1
    assert not threads.waiting[0]


async def test_a_heavy_account_queues_later_not_last() -> None:
    """A heavy login that came more than the handicap before a known one still goes first:
    an owner who logged in again and again is not starved by a stream of others."""
    threads = Threads(1, handicap=0.05, recent=0.0)
    for _ in range(3):
        threads.had_turn("owner")
    await threads.acquire(True, "holder")
    owner = asyncio.create_task(threads.acquire(True, "owner"))
    await asyncio.sleep(0.1)
    other = asyncio.create_task(threads.acquire(True, "other"))
    await asyncio.sleep(0)
    threads.release()
    await asyncio.sleep(0)
    assert owner.done()
    assert not other.done()
    threads.release()
    await asyncio.sleep(0)
    assert other.done()


def test_the_delay_grows_with_an_accounts_or_a_networks_weight_up_to_the_handicap() -> None:
    threads = Threads(1, handicap=5.0, recent=0.0)

    def delay(account: str | None, network: str | None) -> float:
        return threads.delay(account, network, time.monotonic())

    threads.had_turn("once", "192.0.2.1")
    assert delay("once", "192.0.2.1") == 0.0  # one login lately: free
    for n in range(4):  # a household: four accounts, a login each, from one network
        threads.had_turn(f"member{n}", "192.0.2.2")
    assert delay("member0", "192.0.2.2") == 0.0
    assert delay(None, "192.0.2.2") == 0.0
    for _ in range(3):
        threads.had_turn("thrice", "192.0.2.3")
    assert delay("thrice", None) == pytest.approx(2 * Threads.STEP, abs=0.05)
    for _ in range(30):  # an account logging in again and again: at most the handicap
        threads.had_turn("looping", "192.0.2.4")
    assert delay("looping", None) == 5.0
    for n in range(20):  # twenty accounts, a login each, from one network
        threads.had_turn(f"rotated{n}", "203.0.113.9")
    assert delay("rotated0", None) == 0.0
    assert delay("rotated0", "203.0.113.9") == pytest.approx(4.0, abs=0.05)
    assert delay("fresh", "203.0.113.9") == pytest.approx(4.0, abs=0.05)


async def test_a_rare_login_goes_ahead_of_looping_accounts_that_came_before_it() -> None:
    """The attack's shape: accounts that log in again and again, each from its own
    network, wait for the thread; an owner's rare login, coming last, is next. The looping
    ones keep their order among themselves, and one that timed out is passed over."""
    threads = Threads(1, handicap=5.0)
    for n in range(6):
        for _ in range(10):
            threads.had_turn(f"loop{n}", f"203.0.113.{n}")
    await threads.acquire(True, "holder")
    loops = []
    for n in range(6):
        loops.append(asyncio.create_task(threads.acquire(True, f"loop{n}", f"203.0.113.{n}")))
        await asyncio.sleep(0.01)
    loops[1].cancel()  # its client left (or it timed out) while waiting
    owner = asyncio.create_task(threads.acquire(True, "owner", "192.0.2.77"))
    stranger = asyncio.create_task(threads.acquire(False))
    await asyncio.sleep(0)
    order = []
    tasks = {"owner": owner, "stranger": stranger} | {f"loop{n}": t for n, t in enumerate(loops)}
    for _ in range(6):
        threads.release()
        await asyncio.sleep(0)
        order += [name for name, task in tasks.items()
                  if task.done() and not task.cancelled() and name not in order]
    assert order == ["owner", "loop0", "loop2", "loop3", "loop4", "loop5"]
    assert not stranger.done()
    threads.release()
    await asyncio.sleep(0)
    assert stranger.done()
    threads.release()
    assert threads.free == 1
    assert not threads.waiting[0]
    assert not threads.waiting[1]


async def test_an_established_accounts_login_goes_ahead_of_new_accounts_whatever_its_weight(
        ) -> None:
    """Accounts signed up lately (a flood's), each light, queue behind an established
    account's login, even one that logged in again and again and came last; they still
    go ahead of the callers that are not known."""
    threads = Threads(1, handicap=2.5, fresh=20.0, recent=10.0)
    for _ in range(30):
        threads.had_turn("owner", "192.0.2.77")
    await threads.acquire(True, "holder")
    new = []
    for n in range(3):
        new.append(asyncio.create_task(
            threads.acquire(True, f"new{n}", f"203.0.113.{n}", established=False)))
        await asyncio.sleep(0.01)
    stranger = asyncio.create_task(threads.acquire(False))
    await asyncio.sleep(0)
    owner = asyncio.create_task(threads.acquire(True, "owner", "192.0.2.77"))
    await asyncio.sleep(0)
    tasks = {"owner": owner, "stranger": stranger} | {f"new{n}": t for n, t in enumerate(new)}
    order: list[str] = []
    for _ in range(5):
        threads.release()
        await asyncio.sleep(0)
        order += [name for name, task in tasks.items() if task.done() and name not in order]
    assert order == ["owner", "new0", "new1", "new2", "stranger"]


async def test_a_known_login_that_times_out_in_the_lane_leaves_the_thread_to_the_next() -> None:
    """A known login refused after hash_wait_seconds stays in the heap until it comes up,
    then is passed over: the thread goes to the next waiter and none is lost."""
    hashing = Hashing(Settings(max_concurrent_hashes=1, hash_wait_seconds=0.2,
                               hash_thread_niceness=0))
    release = threading.Event()
    try:
        holder = asyncio.create_task(hashing.run(lambda: release.wait(5), "ip:holder"))
        await asyncio.sleep(0.05)
        with pytest.raises(RateLimited):
            await hashing.run(lambda: "late", "ip:a", known=True, account="a")
        assert len(hashing.slots.waiting[0]) == 1  # still in the heap, done
        later = asyncio.create_task(hashing.run(lambda: "next", "ip:b", known=True))
        await asyncio.sleep(0.05)
        release.set()
        assert await holder
        assert await later == "next"
        assert hashing.slots.free == 1
        assert not hashing.slots.waiting[0]
    finally:
        release.set()
        hashing.close()


async def test_an_account_with_a_login_in_the_last_hour_queues_behind_idle_ones() -> None:
    """Accounts an attacker signed up a day ahead and logs in to again and again each had
    a login ahead lately: an owner whose last login ahead was more than RECENT seconds ago
    goes first, whatever came before it; a new account still goes after both."""
    threads = Threads(1, handicap=2.5, fresh=20.0, recent=10.0)
    now = time.monotonic()
    threads.turns["owner"] = (0.5, now - Threads.RECENT - 60)  # a login ahead, long ago
    threads.turns["prepared"] = (0.0001, now - 600)  # light, but within the hour
    assert threads.delay("owner", None, now) == 0.0
    assert threads.delay("prepared", None, now) == 10.0
    await threads.acquire(True, "holder")
    prepared = asyncio.create_task(threads.acquire(True, "prepared"))
    await asyncio.sleep(0.01)
    new = asyncio.create_task(threads.acquire(True, "new", established=False))
    await asyncio.sleep(0.01)
    owner = asyncio.create_task(threads.acquire(True, "owner"))
    await asyncio.sleep(0)
    tasks = {"prepared": prepared, "new": new, "owner": owner}
    order: list[str] = []
    for _ in range(3):
        threads.release()
        await asyncio.sleep(0)
        order += [name for name, task in tasks.items() if task.done() and name not in order]
    assert order == ["owner", "prepared", "new"]


async def test_a_second_login_of_an_account_while_its_first_is_not_over_counts_as_recent(
        ) -> None:
    """Logins of one account sent at once (from many addresses, with its device token):
    the first is idle, the others queue behind an idle account's login that came after
    them, since the first's login is not yet recorded anywhere."""
    hashing = Hashing(Settings(max_concurrent_hashes=1, hash_wait_seconds=10,
                               hash_thread_niceness=0))
    release, order = threading.Event(), []

    def work(name: str) -> Callable[[], None]:
        return lambda: order.append(name)

    try:
        holder = asyncio.create_task(hashing.run(lambda: release.wait(5), "ip:holder"))
        await asyncio.sleep(0.05)
        logins = []
        for name, key, account in (("a1", "ip:1", "a"), ("a2", "ip:2", "a"),
                                   ("b", "ip:3", "b")):
            logins.append(asyncio.create_task(
                hashing.run(work(name), key, known=True, account=account)))
            await asyncio.sleep(0.01)
        assert hashing.in_flight == {"a": 2, "b": 1}
        release.set()
        await asyncio.gather(holder, *logins)
        assert order == ["a1", "b", "a2"]
        assert hashing.in_flight == {}
        assert hashing.slots.free == 1
    finally:
        release.set()
        hashing.close()
