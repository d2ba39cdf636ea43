"""Replay of `since`: in keyset pages (bounded memory), refused past `max_replay_events`,
then live with no gap and no duplicate; against a uvicorn server in this process."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import uvicorn
from sqlalchemy import event

from giftgraph.app import create_app
from giftgraph.live import streams
from giftgraph.live.wire import WS_PROTOCOL
from tests.conftest import make_settings
from tests.integration.test_live import WsClient
from tests.integration.test_live_features import Server

EVENTS = "subscription($s: String) { familyEvents(since: $s) { seq kind } }"


@asynccontextmanager
async def serving(database_url: str, **overrides: Any) -> AsyncIterator[Server]:
    settings = make_settings(database_url, **overrides)
    app = create_app(settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on",
                                           ws=WS_PROTOCOL))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        assert not task.done(), "server did not start"
        await asyncio.sleep(0.05)
    srv = Server(f"http://127.0.0.1:{port}", app)
    try:
        yield srv
    finally:
        await srv.http.aclose()
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@contextmanager
def replay_statements(app: Any) -> Iterator[list[tuple[str, Any]]]:
    """(statement, parameters) of every statement that reads events after a seq."""
    engine = app.state.giftgraph.db().engine.sync_engine
    seen: list[tuple[str, Any]] = []

    def before(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM events" in statement and "events.seq >" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


async def changes(srv: Server, token: str, n: int) -> None:
    """`n` changes, each one event on the `family` topic."""
    for i in range(n):
        await srv.gql('mutation($n: String!) { createPerson(input: {name: $n}) { id } }',
                      {"n": f"P{i}"}, token)


async def received(client: WsClient, n: int) -> list[int]:
    seqs = []
    for _ in range(n):
        msg = await client.receive()
        assert msg["type"] == "next", msg
        seqs.append(int(msg["payload"]["data"]["familyEvents"]["seq"]))
    return seqs


def refusals(text: str) -> float:
    prefix = 'giftgraph_admission_refused_total{bound="replay_events"} '
    return next(float(line[len(prefix):]) for line in text.splitlines()
                if line.startswith(prefix))


async def test_replay_reads_the_log_in_pages_of_bounded_size(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replay never holds more than one page: every statement that reads the log after a
    seq asks for at most REPLAY_PAGE rows, page after page, and the replay is still
    complete, in order, and followed by live events with no gap and no duplicate."""
    monkeypatch.setattr(streams, "REPLAY_PAGE", 4, raising=False)
    async with serving(database_url) as srv:
        token, _ = await srv.signup("pages@example.com")
        await changes(srv, token, 1)
        client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
        await client.subscribe(EVENTS)
        await srv.listening(1)
        await changes(srv, token, 1)
        [first] = await received(client, 1)
        await client.ws.close()
        await changes(srv, token, 17)  # missed while away

        client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
        with replay_statements(srv.app) as statements:
            await client.subscribe(EVENTS, {"s": str(first)})
            replayed = await received(client, 17)
        await changes(srv, token, 1)
        [live] = await received(client, 1)
        with pytest.raises(TimeoutError):
            await client.receive(timeout=0.3)
        await client.ws.close()

    seqs = [first, *replayed, live]
    assert seqs == sorted(set(seqs)), seqs
    pages = [(s, p) for s, p in statements if "LIMIT" in s and "OFFSET" not in s]
    assert len(pages) == 5, statements  # 17 events: 4 + 4 + 4 + 4 + 1
    assert all(list(p)[-1] == 4 for _, p in pages), pages  # LIMIT 4: one page at most
    assert not [s for s, _ in statements if "LIMIT" not in s], statements  # nothing unbounded


async def test_since_further_back_than_the_bound_is_refused_before_any_replay(
        database_url: str) -> None:
    async with serving(database_url, max_replay_events=5) as srv:
        token, _ = await srv.signup("far-back@example.com")
        await changes(srv, token, 8)
        client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
        data = await srv.gql("{ events(first: 8) { edges { node { seq } } } }", token=token)
        seqs = sorted(int(e["node"]["seq"]) for e in data["events"]["edges"])
        before = refusals((await srv.http.get("/metrics")).text)

        with replay_statements(srv.app) as statements:
            op = await client.subscribe(EVENTS, {"s": str(seqs[1])})  # 6 events after it
            error_message, complete = await client.receive(), await client.receive()
        assert error_message["id"] == op, error_message
        [error] = error_message["payload"]["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
        assert error["extensions"]["fields"] == {
            "since": "too far back: refetch, then subscribe without since"}
        assert complete == {"id": op, "type": "complete"}
        assert [s for s, _ in statements if "OFFSET" not in s] == []  # only the probe ran
        assert refusals((await srv.http.get("/metrics")).text) == before + 1

        await client.subscribe(EVENTS, {"s": str(seqs[2])})  # exactly 5 after it: replayed
        assert await received(client, 5) == seqs[3:]
        await client.ws.close()
