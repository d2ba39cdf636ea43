"""The dashboard's one-slot mailbox: the newest snapshot, once, waiting while there is none."""

from __future__ import annotations

import asyncio

from giftgraph.live.dashboard import Latest, Snapshot


async def test_latest_skips_to_the_newest_and_waits_for_the_next() -> None:
    box = Latest()
    box.put(Snapshot(1, "one"))
    box.put(Snapshot(2, "two"))
    assert (await box.get()).version == 2
    waiting = asyncio.ensure_future(box.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    box.put(Snapshot(3, "three"))
    assert (await asyncio.wait_for(waiting, 1)).version == 3
    cancelled = asyncio.ensure_future(box.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    box.put(Snapshot(4, "four"))  # a cancelled reader leaves nothing behind
    assert (await asyncio.wait_for(box.get(), 1)).version == 4
