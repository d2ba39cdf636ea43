"""`SendWatch` (admission.server): a full buffer must shrink by MIN_PROGRESS_BYTES in each
timeout, else the connection is reset; any progress at all kept a trickle reader's
connection (2 KB every 20 s of a 3.7 MB answer: ~10 hours)."""

from __future__ import annotations

import asyncio
from typing import Any

from giftgraph.admission import server


class Transport:
    def __init__(self, sizes: list[int]) -> None:
        self.sizes, self.aborted = sizes, False

    def get_write_buffer_size(self) -> int:
        return self.sizes.pop(0) if len(self.sizes) > 1 else self.sizes[0]

    def get_extra_info(self, name: str) -> Any:
        return object() if name == "socket" else None

    def abort(self) -> None:
        self.aborted = True


async def _watched(sizes: list[int], checks: int) -> Transport:
    transport = Transport(sizes)
    watch = server.SendWatch(transport, asyncio.get_running_loop(), 0.01, {})
    watch.paused()
    await asyncio.sleep(0.02 * checks + 0.05)
    return transport


async def test_a_trickle_reader_is_cut() -> None:
    mb = 1 << 20
    assert (await _watched([4 * mb, 4 * mb - 2048, 4 * mb - 4096], 3)).aborted


async def test_a_reader_taking_enough_each_time_is_not() -> None:
    mb = 1 << 20
    sizes = [4 * mb - k * 100_000 for k in range(8)] + [0]
    assert not (await _watched(sizes, 8)).aborted


async def test_a_drained_buffer_ends_the_watch() -> None:
    assert not (await _watched([1 << 20, 0], 3)).aborted
