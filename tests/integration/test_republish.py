"""What an instance could not publish while its broker link was down goes out once it is back.

Two uvicorn instances share the test database and a private `redis-server`: A reaches it
directly, E through a TCP relay that the tests cut (every connection dropped, new ones
refused) and restore. Committed through E while its link is down, an event still reaches
A's subscriber and a revocation still closes the user's socket on A (4403) once the link
returns, with nothing else happening; E's `giftgraph_events_published_total` counts only
what went out. Skipped without `redis-server`, unless GIFTGRAPH_REQUIRE_REDIS=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.integration.test_live import WsClient, listening, new_item, post, set_status, signup
from tests.integration.test_scaleout import (
    LIST_EVENTS,
    _close_all,
    _connect,
    _email,
    assert_silent,
    instances,
    next_event,
    wait_health,
)
from tests.support import RedisServer, free_port, redis_binary

pytestmark = pytest.mark.timeout(90)

AFTER_RESTORE_SECONDS = 5.0  # the kept messages reach the other instance within this


class Relay:
    """A TCP relay to 127.0.0.1:`target` on a fixed port (threads: the tests' own HTTP calls
    block the event loop). `cut` drops every connection and refuses new ones; `restore`
    accepts again on the same port."""

    def __init__(self, target: int) -> None:
        self.target, self.port = target, free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)  # the accept loop notices a cut within this
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                client.close()
                continue
            for conn in (client, upstream):
                conn.settimeout(None)
            with self._lock:
                self._conns |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for conn in (src, dst):  # one side ended: end the other as well
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relayed() -> Iterator[tuple[RedisServer, Relay]]:
    server = RedisServer(redis_binary(), free_port())
    relay = Relay(server.port)
    try:
        server.start()
        relay.restore()
        yield server, relay
    finally:
        relay.cut()
        server.stop()


@contextlib.contextmanager
def a_and_e(database_url: str, server: RedisServer, relay: Relay) -> Iterator[tuple[str, str]]:
    """Instance A on Redis directly, instance E through the relay."""
    with instances(database_url, server.url, count=1) as (a,), \
            instances(database_url, relay.url, count=1) as (e,):
        yield a, e


@contextlib.asynccontextmanager
async def link_down(relay: Relay, e: str) -> Iterator[None]:  # type: ignore[misc]
    """E's broker link is cut (and E knows it) inside; restored on the way out."""
    relay.cut()
    try:
        await wait_health(e, "disconnected", 503, within=10)
        yield
    finally:
        relay.restore()


async def published_total(base: str) -> tuple[float, float]:
    """`giftgraph_events_published_total` and `giftgraph_events_publish_failures` now."""
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        text = (await http.get("/metrics")).text
    values = dict(line.split()[:2] for line in text.splitlines()
                  if line and not line.startswith("#"))
    return (float(values["giftgraph_events_published_total"]),
            float(values.get("giftgraph_events_publish_failures", "nan")))


async def close_code(client: WsClient, within: float) -> int | None:
    """The code the server closes `client` with (anything it sends first is skipped);
    TimeoutError if it is still open after `within` seconds."""
    deadline = time.monotonic() + within
    try:
        while True:
            await asyncio.wait_for(client.ws.recv(), max(0.0, deadline - time.monotonic()))
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


@dataclass
class Watch:
    token: str
    item: str
    client: WsClient
    op: str


@contextlib.asynccontextmanager
async def watching_a_list(a: str, via: str) -> AsyncIterator[Watch]:
    """A new family's list with an item (made through `via`), watched on instance `a`."""
    token = signup(via, _email("alice"))
    gl, item = new_item(via, token)
    clients: list[WsClient] = []
    try:
        client = await _connect(a, token, clients)
        op = await client.subscribe(LIST_EVENTS, {"l": gl})
        await listening(a, 1)
        yield Watch(token, item, client, op)
    finally:
        await _close_all(clients)


async def test_event_committed_while_link_down_reaches_other_instance(
        relayed: tuple[RedisServer, Relay], database_url: str) -> None:
    server, relay = relayed
    with a_and_e(database_url, server, relay) as (a, e):
        async with watching_a_list(a, via=a) as w:
            async with link_down(relay, e):
                set_status(e, w.token, w.item, "SELECTED")  # committed; E can't publish it
                await assert_silent(w.client, 0.5)
            # No other event: the kept one goes out once E's link is back.
            try:
                event = await next_event(w.client, w.op, "listEvents", AFTER_RESTORE_SECONDS)
            except TimeoutError:
                pytest.fail("the event committed through E never reached A's subscriber")
            assert event["kind"] == "STATUS_CHANGED", event
            assert event["node"] == {"id": w.item, "status": "SELECTED"}, event
            await assert_silent(w.client, 0.5)  # once


async def test_user_deactivated_while_link_down_loses_socket_on_other_instance(
        relayed: tuple[RedisServer, Relay], database_url: str) -> None:
    server, relay = relayed
    with a_and_e(database_url, server, relay) as (a, e):
        admin = signup(a, _email("boss"))
        kid_email = _email("kid")
        kid_id = post(a, "mutation($i: RegisterUserInput!) { registerUser(input: $i) { id } }",
                      {"i": {"email": kid_email, "password": "long password",
                             "displayName": "Kid"}}, admin)["data"]["registerUser"]["id"]
        kid = post(a, "mutation($e: String!) { login(email: $e, password: \"long password\")"
                   " { accessToken } }", {"e": kid_email})["data"]["login"]["accessToken"]
        clients: list[WsClient] = []
        try:
            on_a = await _connect(a, kid, clients)
            await on_a.subscribe("subscription { familyEvents { seq } }")
            await listening(a, 1)
            async with link_down(relay, e):
                r = post(e, "mutation($id: ID!) { updateUser(id: $id, input: {isActive: false})"
                         " { id } }", {"id": kid_id}, admin)
                assert "errors" not in r, r
                await asyncio.sleep(0.5)
                assert on_a.ws.close_code is None, "closed before E could tell A"
            try:
                code = await close_code(on_a, AFTER_RESTORE_SECONDS)
            except TimeoutError:
                pytest.fail("the deactivated user's socket on A is still open")
            assert code == 4403
        finally:
            await _close_all(clients)


async def test_published_metric_counts_only_what_went_out(
        relayed: tuple[RedisServer, Relay], database_url: str) -> None:
    server, relay = relayed
    with a_and_e(database_url, server, relay) as (a, e):
        async with watching_a_list(a, via=e) as w:
            before, failures_before = await published_total(e)
            async with link_down(relay, e):
                set_status(e, w.token, w.item, "SELECTED")
                during, failures = await published_total(e)
                assert during == before, "an event the broker refused counted as published"
                refused = failures - failures_before  # the mutation's events (one a topic)
                assert refused >= 1
            await next_event(w.client, w.op, "listEvents", AFTER_RESTORE_SECONDS)
            after, failures_after = await published_total(e)
            assert after == before + refused, "each event published again is counted, once"
            assert failures_after == failures
