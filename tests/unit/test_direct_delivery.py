"""The hub's direct delivery to a caught-up subscriber never skips or reorders an event."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from giftgraph.db import models as m
from giftgraph.live.hub import RESYNC, Direct, Subscription


def event(seq: int, prev: int) -> m.Event:
    row = m.Event(seq=seq, family_id=uuid.uuid4(), topic="family", kind=m.EventKind.UPDATED,
                  entity_type="Person", entity_id=uuid.uuid4(), actor_id=None,
                  at=datetime.now(UTC), payload={})
    row.prev_seq = prev
    return row


def direct(gate: asyncio.Event, socket_takes_it: bool, written: list[int]) -> Direct:
    async def prepare(row: m.Event) -> bytes:
        await gate.wait()  # as the shared render does for the first subscriber
        return b"message"

    def write(row: m.Event, message: Any) -> bool:
        if socket_takes_it:
            written.append(row.seq)
        return socket_takes_it

    return Direct(prepare, write)


async def test_caught_up_subscriber_is_written_directly() -> None:
    sub, gate, written = Subscription(10), asyncio.Event(), []
    sub.last = 5
    sub.direct = direct(gate, True, written)
    gate.set()
    assert await sub.accept(event(6, 5)) is True
    assert (written, sub.last, list(sub.items)) == ([6], 6, [])
    assert await sub.accept(event(6, 5)) is False  # a duplicate: dropped
    assert written == [6]


async def test_resync_during_prepare_then_busy_socket_queues_the_event_in_order() -> None:
    """A broker reconnect while the message is being prepared, and then a socket that can't
    take the frame: the subscriber must replay from seq 5 (not 6) and then see 6 queued, so
    event 6 reaches it exactly once and in order."""
    sub, gate, written = Subscription(10), asyncio.Event(), []
    sub.last = 5
    sub.direct = direct(gate, False, written)
    accepting = asyncio.create_task(sub.accept(event(6, 5)))
    await asyncio.sleep(0)  # preparing
    sub.offer(RESYNC)
    gate.set()
    assert await accepting is False
    assert sub.last == 5  # not claimed: the replay after 5 includes 6
    assert [i if i is RESYNC else i.seq for i in sub.items] == [RESYNC, 6]
    assert written == []


async def test_resync_during_prepare_queues_even_when_the_socket_could_take_it() -> None:
    sub, gate, written = Subscription(10), asyncio.Event(), []
    sub.last = 5
    sub.direct = direct(gate, True, written)
    accepting = asyncio.create_task(sub.accept(event(6, 5)))
    await asyncio.sleep(0)
    sub.offer(RESYNC)  # the stream will replay: writing 6 now would put it before 5's kin
    gate.set()
    assert await accepting is False
    assert written == []
    assert sub.last == 5
    assert [i if i is RESYNC else i.seq for i in sub.items] == [RESYNC, 6]


async def test_a_gap_is_never_delivered_directly() -> None:
    sub, gate, written = Subscription(10), asyncio.Event(), []
    sub.last = 5
    sub.direct = direct(gate, True, written)
    gate.set()
    assert await sub.accept(event(8, 7)) is False  # 7 has not reached us yet
    assert written == []
    assert [i.seq for i in sub.items] == [8]
