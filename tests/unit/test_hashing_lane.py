"""The hashing queue's known lane, shared by account (giftgraph.admission.throttle.Threads):
how an account's turns are weighed, and that the accounts remembered are bounded."""

from __future__ import annotations

import asyncio
import time

import pytest

from giftgraph.admission.throttle import Threads


def test_an_accounts_turns_weigh_less_as_they_age() -> None:
    threads = Threads(1)
    threads.had_turn("a@example.com")
    threads.had_turn("a@example.com")
    now = time.monotonic()
    assert threads.weight("a@example.com", now) == pytest.approx(2.0, abs=0.01)
    assert threads.weight("a@example.com", now + Threads.HALF_LIFE) == pytest.approx(1.0, abs=0.01)
    assert threads.weight("b@example.com", now) == 0.0
    assert threads.weight(None, now) == 0.0


def test_the_accounts_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Threads, "LIMIT", 100)
    threads = Threads(1)
    for n in range(1_000):
        threads.had_turn(f"{n}@example.com")
    assert len(threads.turns) <= 100
    assert "999@example.com" in threads.turns  # the newest are kept


async def test_a_free_thread_goes_to_the_known_waiter_with_the_fewest_turns() -> None:
    threads = Threads(1)
    for _ in range(3):
        threads.had_turn("busy@example.com")
    await threads.acquire(True, "holder@example.com")  # the one thread, taken
    busy = asyncio.create_task(threads.acquire(True, "busy@example.com"))
    stranger = asyncio.create_task(threads.acquire(False))
    rare = asyncio.create_task(threads.acquire(True, "rare@example.com"))
    await asyncio.sleep(0)
    threads.release()
    await asyncio.sleep(0)
    assert rare.done()
    assert not busy.done()
    assert not stranger.done()
    threads.release()
    await asyncio.sleep(0)
    assert busy.done()
    assert not stranger.done()  # known callers before strangers
    threads.release()
    await asyncio.sleep(0)
    assert stranger.done()
    threads.release()
    assert threads.free == 1
    assert not threads.accounts
