"""The password-hashing threads run at a lower priority than the event loop's thread
(giftgraph.admission.throttle)."""

from __future__ import annotations

import os
import threading

import pytest

from giftgraph.admission.throttle import Hashing
from giftgraph.config import Settings


def priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no per-thread priority here")
@pytest.mark.parametrize("niceness", [0, 5])
async def test_a_hash_runs_below_the_loop(niceness: int) -> None:
    settings = Settings(_env_file=None, hash_thread_niceness=niceness)
    hashing = Hashing(settings)
    try:
        loop = priority()
        assert await hashing.run(priority, "ip:1") == min(19, loop + niceness)
        assert priority() == loop  # the loop's own thread is left alone
    finally:
        hashing.close()
