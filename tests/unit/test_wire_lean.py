"""`Inbox` and `Flag`: the lean stand-ins for the asyncio.Queue and asyncio.Event that
uvicorn's sansio WebSocket protocol keeps per socket (`LeanWebSocketProtocol`)."""

from __future__ import annotations

import asyncio

import pytest

from giftgraph.live.wire import Flag, Inbox


async def test_inbox_is_first_in_first_out_and_wakes_its_reader() -> None:
    inbox = Inbox()
    inbox.put_nowait({"type": "websocket.connect"})
    assert not inbox.empty()
    assert inbox.qsize() == 1
    assert await inbox.get() == {"type": "websocket.connect"}
    assert inbox.empty()

    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()  # waits: nothing has arrived
    inbox.put_nowait("a")
    inbox.put_nowait("b")
    assert await reader == "a"
    assert await inbox.get() == "b"


async def test_inbox_refuses_a_second_reader_and_survives_a_cancelled_one() -> None:
    inbox = Inbox()
    first = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already waiting"):
        await inbox.get()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    # The cancelled reader left nothing behind: the next one gets the next message.
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("after")
    assert await asyncio.wait_for(second, 1) == "after"


async def test_flag_is_set_until_cleared_and_releases_every_waiter() -> None:
    flag = Flag()
    assert flag.is_set()
    assert await asyncio.wait_for(flag.wait(), 1) is True  # set: no waiting

    flag.clear()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    cancelled = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not any(w.done() for w in [*waiters, cancelled])
    cancelled.cancel()
    await asyncio.sleep(0)
    assert len(flag._waiters or ()) == 3  # the cancelled one left at once
    flag.set()  # the others are all released
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True] * 3
    assert cancelled.cancelled()
    assert flag.is_set()
