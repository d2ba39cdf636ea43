"""A wait in a socket's read loop ends when its client leaves (web/sockets.SocketAdapter:
`watching`, `watch`), and a message read ahead meanwhile is the loop's next."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.websockets import WebSocket
from strawberry.http.exceptions import WebSocketDisconnected

from giftgraph.web.sockets import READ_AHEAD, SocketAdapter


async def accepted() -> tuple[SocketAdapter, asyncio.Queue[dict[str, Any]]]:
    """An adapter over a real Starlette WebSocket whose client is `queue`."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    queue.put_nowait({"type": "websocket.connect"})

    async def send(_: Any) -> None:
        pass

    ws = WebSocket({"type": "websocket", "path": "/graphql", "headers": []},
                   queue.get, send)
    await ws.accept()
    settings = SimpleNamespace(max_socket_message_bytes=65536, socket_message_rate=1000,
                               max_subscriptions_per_connection=100)
    view = SimpleNamespace(state=SimpleNamespace(settings=settings,
                                                 metrics=SimpleNamespace(refusals=None)))
    return SocketAdapter(view, ws, ws), queue


def waiting(adapter: SocketAdapter, until: asyncio.Event) -> asyncio.Task[None]:
    """The read loop's wait in `watching`, as a pace waits: `before_wait` (`watch`) first,
    then the wait itself, until `until` is set."""

    async def wait() -> None:
        async with adapter.watching():
            await adapter.watch()
            await until.wait()

    return asyncio.ensure_future(wait())


async def test_a_wait_ends_when_the_client_leaves() -> None:
    adapter, client = await accepted()
    never = asyncio.Event()

    task = waiting(adapter, never)
    await asyncio.sleep(0.01)
    assert not task.done()  # it waits
    client.put_nowait({"type": "websocket.disconnect", "code": 1001})
    with pytest.raises(WebSocketDisconnected):
        await asyncio.wait_for(task, 1)


async def test_a_message_read_ahead_is_the_loops_next_and_the_wait_goes_on() -> None:
    adapter, client = await accepted()
    done = asyncio.Event()
    messages = adapter.iter_json()
    client.put_nowait({"type": "websocket.receive", "text": '{"type": "subscribe"}'})
    assert await anext(messages) == {"type": "subscribe"}

    task = waiting(adapter, done)
    await asyncio.sleep(0.01)
    client.put_nowait({"type": "websocket.receive", "text": '{"type": "ping"}'})
    await asyncio.sleep(0.01)
    assert not task.done()  # a message is no leaving: the wait goes on
    done.set()
    await asyncio.wait_for(task, 1)
    assert await anext(messages) == {"type": "ping"}  # kept for the loop
    client.put_nowait({"type": "websocket.receive", "text": json.dumps({"type": "pong"})})
    assert await anext(messages) == {"type": "pong"}
    client.put_nowait({"type": "websocket.disconnect", "code": 1000})
    with pytest.raises(StopAsyncIteration):
        await anext(messages)


async def test_messages_before_the_leaving_are_read_past_and_kept_in_order() -> None:
    """A client that sends more while the loop waits, then leaves: the wait ends at the
    leaving (reading one message ahead only, such a socket was held 14 s, adversary
    2026-11-29), and the messages before it are the loop's next, in order."""
    adapter, client = await accepted()
    messages = adapter.iter_json()
    never = asyncio.Event()

    task = waiting(adapter, never)
    for n in range(3):
        client.put_nowait({"type": "websocket.receive", "text": json.dumps({"n": n})})
    client.put_nowait({"type": "websocket.disconnect", "code": 1001})
    with pytest.raises(WebSocketDisconnected):
        await asyncio.wait_for(task, 1)
    assert [await anext(messages) for _ in range(3)] == [{"n": 0}, {"n": 1}, {"n": 2}]
    with pytest.raises(StopAsyncIteration):
        await anext(messages)


async def test_no_more_is_read_ahead_than_its_bound() -> None:
    adapter, client = await accepted()
    never = asyncio.Event()

    task = waiting(adapter, never)
    for n in range(READ_AHEAD + 5):
        client.put_nowait({"type": "websocket.receive", "text": json.dumps({"n": n})})
    await asyncio.sleep(0.05)
    assert client.qsize() == 5  # the rest wait where they were: unread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_wait_cancelled_from_outside_stays_cancelled() -> None:
    adapter, _ = await accepted()
    never = asyncio.Event()

    task = waiting(adapter, never)
    await asyncio.sleep(0.01)
    task.cancel()  # the socket's own end (shutdown), not its client's leaving
    with pytest.raises(asyncio.CancelledError):
        await task
