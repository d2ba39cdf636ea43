"""Replay of `since`: in keyset pages (bounded memory), refused past `max_replay_events`,
then live with no gap and no duplicate; against a uvicorn server in this process."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from giftgraph.live import streams
from tests.conftest import make_settings
from tests.integration.test_live import WsClient
from tests.integration.test_live_features import Server, running
from tests.support import text_frame, ws_upgrade

EVENTS = "subscription($s: String) { familyEvents(since: $s) { seq kind } }"


@asynccontextmanager
async def serving(database_url: str, **overrides: Any) -> AsyncIterator[Server]:
    async with running(make_settings(database_url, **overrides)) as srv:
        yield srv


@contextmanager
def replay_statements(app: Any) -> Iterator[list[str]]:
    """Every statement that reads events after a seq: through SQLAlchemy's engine, and
    those run on asyncpg directly (`statement_hooks`)."""
    database = app.state.giftgraph.db()
    engine = database.engine.sync_engine
    seen: list[str] = []

    def reads_the_log(statement: str) -> None:
        if "FROM events" in statement and "events.seq >" in statement:
            seen.append(statement)

    def before(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        reads_the_log(statement)

    event.listen(engine, "before_cursor_execute", before)
    database.statement_hooks.append(reads_the_log)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)
        database.statement_hooks.remove(reads_the_log)


@contextmanager
def page_sizes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The page size (`LIMIT`) each statement of a replay asks for."""
    sizes: list[int] = []
    fetch = streams.fetch

    async def spy(database: Any, prepared: Any, params: Any) -> Any:
        sizes.append(params["page"])
        return await fetch(database, prepared, params)

    monkeypatch.setattr(streams, "fetch", spy)
    yield sizes


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


async def left(srv: Server) -> None:
    """Until the hub holds no subscription and no channel."""
    for _ in range(250):
        if srv.subscribers() == 0 and not srv.live.hub.feeds:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(srv.live.hub.stats())


def refusals(text: str) -> float:
    prefix = 'giftgraph_admission_refused_total{bound="replay_events"} '
    return next(float(line[len(prefix):]) for line in text.splitlines()
                if line.startswith(prefix))


@asynccontextmanager
async def not_reading(srv: Server, token: str, query: str, replays: int) -> AsyncIterator[None]:
    """A socket that reads nothing after connection_ack, with `replays` subscriptions of
    `query` since 0 (small receive buffer: its replays soon wait on it to drain)."""
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", int(srv.base.rsplit(":", 1)[1])))
        await loop.sock_sendall(sock, ws_upgrade())
        answer = b""
        while b"\r\n\r\n" not in answer:  # the 101, then the socket's messages
            answer += await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        await loop.sock_sendall(sock, text_frame(json.dumps(
            {"type": "connection_init", "payload": {"token": token}})))
        while b"connection_ack" not in answer:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
            assert chunk, answer
            answer += chunk
        for k in range(replays):
            await loop.sock_sendall(sock, text_frame(json.dumps(
                {"id": str(k), "type": "subscribe",
                 "payload": {"query": query, "variables": {"s": "0"}}})))
        yield


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
        with replay_statements(srv.app) as statements, page_sizes(monkeypatch) as sizes:
            await client.subscribe(EVENTS, {"s": str(first)})
            replayed = await received(client, 17)
        await changes(srv, token, 1)
        [live] = await received(client, 1)
        with pytest.raises(TimeoutError):
            await client.receive(timeout=0.3)
        await client.ws.close()

    seqs = [first, *replayed, live]
    assert seqs == sorted(set(seqs)), seqs
    # 17 events: 4 + 4 + 4 + 4 + 1, the first page read by the since's admission probe
    assert len(statements) == 5, statements
    assert ["OFFSET" in s for s in statements] == [True, False, False, False, False]
    assert sizes == [4] * 5  # LIMIT 4: one page at most
    assert not [s for s in statements if "LIMIT" not in s], statements  # nothing unbounded


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
        assert len(statements) == 1  # only the probe ran
        assert "OFFSET" in statements[0]
        assert refusals((await srv.http.get("/metrics")).text) == before + 1
        await left(srv)  # the refused subscription listens no more

        with replay_statements(srv.app) as statements:
            await client.subscribe(EVENTS, {"s": str(seqs[2])})  # exactly 5 after it: replayed
            assert await received(client, 5) == seqs[3:]
        assert len(statements) == 1, statements  # admitted and replayed in one statement
        await client.ws.close()


async def test_a_since_past_the_newest_event_is_refused_and_listens_no_more(
        database_url: str) -> None:
    """A since past the family's newest event is refused by the replay's one statement
    (which listened first): the subscription leaves its channel, the socket goes on, and
    a since of the newest event then replays nothing and continues live."""
    async with serving(database_url) as srv:
        token, _ = await srv.signup("past-newest@example.com")
        await changes(srv, token, 3)
        client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
        with replay_statements(srv.app) as statements:
            op = await client.subscribe(EVENTS, {"s": "1000"})
            error_message, complete = await client.receive(), await client.receive()
        assert error_message["id"] == op, error_message
        [error] = error_message["payload"]["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
        assert error["extensions"]["fields"] == {
            "since": "no such event: refetch, then subscribe without since"}
        assert complete == {"id": op, "type": "complete"}
        assert len(statements) == 1, statements
        await left(srv)

        newest = max(int(e["node"]["seq"]) for e in (await srv.gql(
            "{ events(first: 100) { edges { node { seq } } } }", token=token))["events"]["edges"])
        await client.subscribe(EVENTS, {"s": str(newest)})
        await srv.listening(1)
        await changes(srv, token, 1)
        [live] = await received(client, 1)  # nothing replayed, then the live event
        assert live > newest
        with pytest.raises(TimeoutError):
            await client.receive(timeout=0.3)
        await client.ws.close()


async def test_a_socket_that_stops_reading_holds_one_replayed_page_not_one_per_subscription(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replays on one socket take turns, a page at a time (read and sent): while the
    socket does not read, its other replaying subscriptions wait without a page of the
    log in hand (each held its own before: 100 subscriptions, 100 pages)."""
    monkeypatch.setattr(streams, "REPLAY_PAGE", 2, raising=False)
    held: weakref.WeakSet[Any] = weakref.WeakSet()  # the pages read and not yet let go

    class Page(list):  # type: ignore[type-arg]
        __hash__ = object.__hash__  # type: ignore[assignment]  # in a WeakSet, by identity

    def spying(page: Any) -> Any:
        async def spy(*args: Any) -> Any:
            rows = Page(await page(*args))
            held.add(rows)
            return rows
        return spy

    # every page: the first (read with the since's admission) and the next ones
    monkeypatch.setattr(streams, "_first_page", spying(streams._first_page))
    monkeypatch.setattr(streams, "_page", spying(streams._page))
    async with serving(database_url) as srv:
        token, _ = await srv.signup("stalled-replays@example.com")
        for _ in range(150):  # ~5 KB each: 20 replays of these (15 MB) fill any buffer
            await srv.gql('mutation { createPerson(input: {name: "P", notes: "%s"}) { id } }'
                          % ("n" * 5000), token=token)
        query = ("subscription($s: String) { familyEvents(since: $s) { seq node { id "
                 "... on Person { notes } } } }")
        async with not_reading(srv, token, query, 20):
            await asyncio.sleep(3)  # the socket's buffers fill; the replays wait
            gc.collect()
            assert len(held) == 1, len(held)


async def test_a_users_replays_take_one_turn_across_sockets_while_others_replay(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """All of one user's replays, on all their sockets, read the log a page at a time
    (never two of their pages at once), while another user's replay reads alongside; and
    no user's turn is kept once their replays end."""
    monkeypatch.setattr(streams, "REPLAY_PAGE", 2, raising=False)
    reading: dict[Any, int] = {}  # family id -> pages being read now
    most: dict[Any, int] = {}  # family id -> most pages read at once
    overlapped: list[bool] = []  # whether the two users' pages were ever read at once

    def spying(page: Any) -> Any:
        async def spy(first: Any, family_id: Any, *args: Any) -> Any:
            reading[family_id] = reading.get(family_id, 0) + 1
            most[family_id] = max(most.get(family_id, 0), reading[family_id])
            overlapped.append(sum(1 for n in reading.values() if n) > 1)
            try:
                await asyncio.sleep(0.01)  # a read that takes a while: others could come in
                return await page(first, family_id, *args)
            finally:
                reading[family_id] -= 1
        return spy

    # every page: the first (read with the since's admission) and the next ones
    monkeypatch.setattr(streams, "_first_page", spying(streams._first_page))
    monkeypatch.setattr(streams, "_page", spying(streams._page))
    async with serving(database_url) as srv:
        busy, _ = await srv.signup("busy-replays@example.com")
        other, _ = await srv.signup("other-replays@example.com")
        await changes(srv, busy, 12)
        await changes(srv, other, 12)
        sockets = [await WsClient.connect(srv.base, {"authorization": f"Bearer {t}"})
                   for t in (busy, busy, other)]
        for client in sockets:
            for _ in range(2):
                await client.subscribe(EVENTS, {"s": "0"})
        for client in sockets:  # each of its two replays: every event once
            seqs = await received(client, 24)
            assert len(set(seqs)) == 12, seqs
            assert all(seqs.count(seq) == 2 for seq in seqs), seqs
        turns = srv.app.state.giftgraph.live.hub.replay_turns
        for client in sockets:
            await client.ws.close()
        for _ in range(100):  # the handlers end after the close
            if not len(turns):
                break
            await asyncio.sleep(0.05)
        assert len(turns) == 0

    assert len(most) == 2, most
    assert sorted(most.values()) == [1, 1], most  # one page at a time per user
    assert any(overlapped), "the other user's replay waited for the busy user's"


async def test_users_whose_sockets_do_not_read_leave_the_replay_reads_to_others(
        database_url: str) -> None:
    """The bound on replay page reads over all users (half the pool: one here) is held for
    a page's statement only, never while its page waits on a socket: two users whose
    sockets stopped reading mid-replay keep their own turns, and a third user's replay
    still reads and arrives."""
    async with serving(database_url, db_pool_size=2) as srv:
        stalled = []
        for k in range(2):
            token, _ = await srv.signup(f"stalled-reader-{k}@example.com")
            for _ in range(150):  # ~5 KB each: 5 replays of these fill any buffer
                await srv.gql('mutation { createPerson(input: {name: "P", notes: "%s"}) '
                              '{ id } }' % ("n" * 5000), token=token)
            stalled.append(token)
        reader, _ = await srv.signup("replaying-reader@example.com")
        await changes(srv, reader, 3)
        query = ("subscription($s: String) { familyEvents(since: $s) { seq node { id "
                 "... on Person { notes } } } }")
        async with not_reading(srv, stalled[0], query, 5), \
                not_reading(srv, stalled[1], query, 5):
            await asyncio.sleep(2)  # their replays' sends wait on their sockets
            client = await WsClient.connect(srv.base, {"authorization": f"Bearer {reader}"})
            await client.subscribe(EVENTS, {"s": "0"})
            async with asyncio.timeout(5):
                seqs = await received(client, 3)
            assert seqs == sorted(seqs)
            assert len(set(seqs)) == 3


async def test_a_familys_members_replays_take_one_turn_not_one_per_member(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replay turns bound a family, not each of its users: an ADMIN registers members at
    the mutation budget's pace (120 a minute), so per-user turns let one family (one
    signUp) replay as many pages at once as it has members. 100 members each replaying
    a 10,000-event log since 0 took another family's event delivery from 13 ms to 134 ms
    p50 (query 6 to 23 ms); one turn per family kept it at 14 ms. Here: three members of
    one family replay on sockets of their own, and never read two pages at once."""
    monkeypatch.setattr(streams, "REPLAY_PAGE", 2, raising=False)
    reading = 0
    most = 0
    page = streams._page

    async def spy(*args: Any) -> Any:
        nonlocal reading, most
        reading += 1
        most = max(most, reading)
        try:
            await asyncio.sleep(0.01)  # a page read that takes a while: others could come in
            return await page(*args)
        finally:
            reading -= 1

    monkeypatch.setattr(streams, "_page", spy)
    async with serving(database_url) as srv:
        admin, _ = await srv.signup("many-members@example.com")
        tokens = [admin]
        for k in range(2):
            email = f"member-{k}@many-members.example.com"
            await srv.gql("mutation($i: RegisterUserInput!) { registerUser(input: $i) { id } }",
                          {"i": {"email": email, "password": "long password",
                                 "displayName": "M"}}, admin)
            data = await srv.gql("mutation($e: String!, $p: String!) { login(email: $e, "
                                 "password: $p) { accessToken } }",
                                 {"e": email, "p": "long password"})
            tokens.append(data["login"]["accessToken"])
        await changes(srv, admin, 12)
        sockets = [await WsClient.connect(srv.base, {"authorization": f"Bearer {t}"})
                   for t in tokens]
        for client in sockets:
            await client.subscribe(EVENTS, {"s": "0"})
        for client in sockets:  # 2 registrations and 12 changes, each once
            seqs = await received(client, 14)
            assert seqs == sorted(set(seqs)), seqs
        for client in sockets:
            await client.ws.close()

    assert most == 1, f"{most} of one family's replay pages read at once"


async def test_a_new_lists_own_event_is_on_its_topic_and_replayed(database_url: str) -> None:
    """createList's ADDED event names the list it made: `listEvents(since: "0")` replays
    it first (its topic was built before the row had an id: `list:` of
    "GiftList:None", shared by every new list of the family and heard by none)."""
    async with serving(database_url) as srv:
        token, _ = await srv.signup("new-list-topic@example.com")
        made = await srv.gql('mutation { createList(input: {name: "L", kind: WISHLIST}) '
                             '{ id } }', token=token)
        list_id = made["createList"]["id"]
        await srv.gql('mutation { createList(input: {name: "M", kind: WISHLIST}) { id } }',
                      token=token)
        client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
        await client.subscribe("subscription($l: ID!, $s: String) { listEvents(listId: $l, "
                               "since: $s) { kind node { id } } }", {"l": list_id, "s": "0"})
        msg = await client.receive()
        assert msg["type"] == "next", msg
        assert msg["payload"]["data"]["listEvents"] == {"kind": "ADDED", "node": {"id": list_id}}
        await client.ws.close()
