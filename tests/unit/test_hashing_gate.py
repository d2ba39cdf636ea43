"""The bound on concurrent password hashing (giftgraph.admission.throttle.Hashing)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from giftgraph.admission.throttle import Hashing, Threads
from giftgraph.config import Settings
from giftgraph.errors import RateLimited


def _hashing(limit: int, wait: float) -> Hashing:
    return Hashing(Settings(_env_file=None, max_concurrent_hashes=limit,  # type: ignore[call-arg]
                            hash_wait_seconds=wait))


async def test_a_cancelled_caller_keeps_its_slot_until_its_thread_has_finished() -> None:
    """The client left, but argon2 still runs in the thread: the slot is not free yet."""
    hashing = _hashing(1, 0.5)
    started, gate = threading.Event(), threading.Event()

    def work() -> str:
        started.set()
        gate.wait(10)
        return "hashed"

    try:
        caller = asyncio.create_task(hashing.run(work))
        assert await asyncio.to_thread(started.wait, 10)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        with pytest.raises(RateLimited) as refused:
            await hashing.run(lambda: "never run")
        assert refused.value.extensions["retryAfter"] == 1
        assert hashing.refused == 1
        gate.set()
        assert await hashing.run(lambda: "next") == "next"
    finally:
        gate.set()
        hashing.close()


async def test_work_runs_in_the_hashing_threads_at_most_limit_at_once() -> None:
    hashing = _hashing(2, 5)
    running = peak = 0
    lock = threading.Lock()
    both = threading.Barrier(2, timeout=10)

    def work() -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        both.wait()  # two at once do run (the pool is not one thread)
        with lock:
            running -= 1
        return threading.current_thread().name

    try:
        names = await asyncio.gather(*(hashing.run(work) for _ in range(6)))
    finally:
        hashing.close()
    assert peak == 2
    assert all(name.startswith("giftgraph-hash") for name in names)


async def test_one_caller_has_one_hash_at_a_time_and_others_go_past_it() -> None:
    """A caller's burst (an ADMIN's registerUser, 120 a minute) waits for its own turn,
    one hash at a time, and is refused after `hash_wait_seconds`; another caller's hash
    takes a free thread at once instead of queueing behind the whole burst."""
    hashing = _hashing(2, 0.5)
    release = threading.Event()
    started: list[str] = []

    def work(name: str) -> Callable[[], str]:
        def run() -> str:
            started.append(name)
            release.wait(10)
            return name
        return run

    try:
        burst = [asyncio.create_task(hashing.turn("family:a").run(work(f"a{i}")))
                 for i in range(5)]
        await asyncio.sleep(0.1)
        assert started == ["a0"]  # the burst's others wait for a0, not for a thread
        victim = asyncio.create_task(hashing.turn("ip:192.0.2.9").run(work("victim")))
        await asyncio.sleep(0.1)
        assert started == ["a0", "victim"]  # the second thread was free for it
        refused = await asyncio.gather(*burst[1:], return_exceptions=True)
        assert all(isinstance(r, RateLimited) for r in refused)  # waited their turn 0.5 s
        assert hashing.refused == 4
        release.set()
        assert await burst[0] == "a0"
        assert await victim == "victim"
        assert hashing.keys == {}  # no caller left behind
        assert await hashing.turn("family:a").run(lambda: "again") == "again"
    finally:
        release.set()
        hashing.close()


async def test_a_known_caller_gets_the_next_free_thread_before_earlier_others() -> None:
    threads = Threads(1)
    await threads.acquire(known=False)
    order: list[str] = []

    async def wait(name: str, known: bool) -> None:
        await threads.acquire(known)
        order.append(name)

    first = asyncio.create_task(wait("other", known=False))
    await asyncio.sleep(0)
    second = asyncio.create_task(wait("known", known=True))
    await asyncio.sleep(0)
    threads.release()
    await second
    assert order == ["known"]
    threads.release()
    await first
    assert order == ["known", "other"]


async def test_a_waiter_cancelled_as_a_thread_is_freed_leaves_it_free() -> None:
    """Cancelled (its wait timed out), then passed over by a release before its own
    handler ran: the thread stays free, and nothing fails."""
    threads = Threads(1)
    await threads.acquire(known=False)
    waiter = asyncio.create_task(threads.acquire(known=False))
    await asyncio.sleep(0)
    waiter.cancel()
    threads.release()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert threads.free == 1
    await asyncio.wait_for(threads.acquire(known=True), 1)
