"""A subscription over HTTP makes its next result only once its last is written and taken
(web/streams.py: `one_at_a_time`, `Stream`): Strawberry's own stream runs ahead of a client
that does not read, holding a result in its queue and making the next beside the one being
written."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from strawberry.http.streaming import MultipartSubscriptionTransport, merge_stream_with_heartbeat
from uvicorn.protocols.http.flow_control import FlowControl

from giftgraph.admission.server import FLOW_KEY, TRANSPORT_KEY
from giftgraph.admission.sockets import Owing
from giftgraph.web.streams import Handle, Stream, one_at_a_time

TRANSPORT = MultipartSubscriptionTransport()
RESULT = "x" * 100_000


class Transport:
    """A connection's transport whose client reads nothing while it is paused."""

    def __init__(self, flow: Callable[[], FlowControl]) -> None:
        self.holds = 0
        self.aborted = False
        self.flow = flow

    def get_write_buffer_size(self) -> int:
        return self.holds

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_extra_info(self, _: str) -> None:
        return None

    def abort(self) -> None:
        """Reset: uvicorn sees the connection lost and lets a waiting write go."""
        self.aborted = True
        self.flow().resume_writing()


class Client:
    """A stream's source and the connection it is written to: the first result written
    fills the transport (its flow paused) until `take()`."""

    def __init__(self, paced: bool) -> None:
        self.made = 0
        self.transport = Transport(lambda: self.flow)
        self.flow = FlowControl(self.transport)  # type: ignore[arg-type]
        self.results: list[bytes] = []
        self.gone = asyncio.Event()
        self.reading = False  # from `leave()`: it takes everything
        self.written: asyncio.Event | None = asyncio.Event() if paced else None
        if self.written is not None:
            self.written.set()

    async def source(self) -> AsyncGenerator[dict[str, Any], None]:
        while True:
            self.made += 1
            yield {"data": {"n": self.made, "text": RESULT}}

    def response(self) -> StreamingResponse:
        results: AsyncIterator[Any] = self.source()
        if self.written is not None:
            results = one_at_a_time(results, self.written)

        async def encoded() -> AsyncGenerator[str, None]:
            async for value in results:
                yield TRANSPORT.encode_next(value, json.dumps)

        merged = merge_stream_with_heartbeat(
            encoded, lambda: TRANSPORT.heartbeat_message(json.dumps), interval=60,
            send_initial_heartbeat=False)
        return StreamingResponse(merged())

    async def send(self, message: dict[str, Any]) -> None:
        """uvicorn's: it waits for a paused transport to drain, then writes."""
        await self.flow.drain()
        if message["type"] == "http.response.body" and message["body"]:
            self.results.append(message["body"])
            if not self.reading:
                self.transport.holds += len(message["body"])
                self.flow.pause_writing()

    def take(self) -> None:
        self.transport.holds = 0
        self.flow.resume_writing()

    def leave(self) -> None:
        """The client goes away: what remains is taken."""
        self.reading = True
        self.gone.set()
        self.take()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def stream(self) -> tuple[Stream, dict[str, Any]]:
        async def release() -> None: ...

        scope: dict[str, Any] = {"type": "http", FLOW_KEY: self.flow,
                                 TRANSPORT_KEY: self.transport}
        stream = Stream(self.response(), Handle(), TRANSPORT.encode_complete(), release,
                        TRANSPORT.heartbeat_message(json.dumps), self.written)
        return stream, scope


async def settle() -> None:
    await asyncio.sleep(0.05)


async def test_a_stream_makes_its_next_result_only_once_its_client_took_the_last() -> None:
    ahead = Client(paced=False)  # Strawberry's stream alone: how far it runs ahead
    stream, scope = ahead.stream()
    running = asyncio.ensure_future(stream(scope, ahead.receive, ahead.send))
    await settle()
    assert len(ahead.results) == 1
    assert ahead.made >= 3  # one written, one in its queue, one made beside them
    ahead.leave()
    await running

    client = Client(paced=True)
    stream, scope = client.stream()
    running = asyncio.ensure_future(stream(scope, client.receive, client.send))
    await settle()
    assert len(client.results) == 1
    assert client.made == 1  # the next waits for the first to be taken
    client.take()
    await settle()
    assert len(client.results) == 2
    assert client.made == 2
    assert b'"n": 2' in client.results[1]
    client.leave()
    await running
    assert client.results[-1] == TRANSPORT.encode_complete().encode()


async def test_a_result_its_client_has_not_taken_stays_counted_as_owed() -> None:
    """While the transport holds a result, it counts as owed (what the transport holds,
    the text Strawberry's stream keeps and the result it came from), against the process's
    bound too."""
    owing = Owing(per_socket=1_000_000, total=1_000_000)
    client = Client(paced=True)
    stream, scope = client.stream()
    send = owing.wrap(scope, client.send)
    running = asyncio.ensure_future(stream(scope, client.receive, send))
    await settle()
    assert client.made == 1
    assert owing.total > 3 * len(RESULT)  # the transport's copy, the text and its result
    assert send.owed == owing.total
    client.take()
    await settle()
    assert client.made == 2
    client.leave()
    await running
    assert owing.total == 0


async def test_streams_whose_clients_do_not_read_are_cut_past_the_process_bound() -> None:
    """Three unread streams, the process allowed what two hold: past it, the stream owing
    the most is cut (reset) and ends; the others wait, counted, and nothing stays counted
    once their clients leave."""
    owing = Owing(per_socket=400_000, total=2 * 320_000)  # a stream holds ~300 KB
    clients = [Client(paced=True) for _ in range(3)]
    running = []
    for client in clients:
        stream, scope = client.stream()
        running.append(asyncio.ensure_future(
            stream(scope, client.receive, owing.wrap(scope, client.send))))
        await settle()
    await settle()
    cut = [c.transport.aborted for c in clients]
    assert 1 <= sum(cut) <= 2, cut  # the one owing most when a send would pass the bound
    assert [task.done() for task in running] == cut  # a cut stream ends
    assert len(RESULT) < owing.total <= 2 * 320_000
    assert [c.made for c in clients] == [1, 1, 1]  # nothing made ahead meanwhile
    for client in clients:
        client.leave()
    await asyncio.gather(*running, return_exceptions=True)
    assert owing.total == 0
