"""The bound on concurrent password hashing (giftgraph.admission.throttle.Hashing)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from giftgraph.admission.throttle import Hashing
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
