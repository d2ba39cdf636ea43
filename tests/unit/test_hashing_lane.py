"""The hashing queue's known lane (giftgraph.admission.throttle.Threads): accounts that log
in again and again wait behind the other known callers; how their logins are weighed, and
that the accounts remembered are bounded."""

from __future__ import annotations

import asyncio
import time

import pytest

from giftgraph.admission.throttle import Threads


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
    assert len(threads.turns) <= 100
    assert threads.weight("heavy", time.monotonic()) >= Threads.HEAVY


async def test_heavy_accounts_wait_behind_the_other_known_callers_only() -> None:
    threads = Threads(1)
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
    assert not threads.queued_at


async def test_a_heavy_account_queues_later_not_last() -> None:
    """A heavy login that came more than the handicap before a known one still goes first:
    an owner who logged in again and again is not starved by a stream of others."""
    threads = Threads(1, handicap=0.05)
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
