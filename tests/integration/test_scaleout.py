"""Scale-out: two uvicorn instances share the test database and a redis or postgres broadcaster.

An event committed through one instance reaches subscribers on the other; a broker outage
loses nothing (subscriptions catch up from the Event table once the broker is back, each
event exactly once and in seq order) and `/health` reports the broadcaster's state.

Redis cases run against a private `redis-server` on a free port (never the machine's shared
one). Without `redis-server` they are skipped, unless GIFTGRAPH_REQUIRE_REDIS=1 (CI), where
they fail instead. The postgres outage terminates the `giftgraph-listen` connections and,
for as long as the outage lasts, refuses new connections to the test database
(ALLOW_CONNECTIONS false): otherwise the backends reconnect within milliseconds and the
mutations below could not be made while the broker is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import _dsn
from tests.integration.test_live import (
    EVENT_FIELDS,
    WsClient,
    new_item,
    set_status,
    signup,
)
from tests.support import (
    RedisServer,
    free_port,
    redis_binary,
    service_env,
    start_service,
    stop,
    wait_healthy,
)

pytestmark = pytest.mark.timeout(60)

LIST_EVENTS = (
    "subscription($l: ID!, $s: String) "
    f"{{ listEvents(listId: $l, since: $s) {{ {EVENT_FIELDS} }} }}"
)
FAMILY_EVENTS = f"subscription {{ familyEvents {{ {EVENT_FIELDS} }} }}"
DELIVERY_SECONDS = 1.0  # cross-instance delivery budget, from sending the mutation


# Processes -----------------------------------------------------------------------------


@contextlib.contextmanager
def instances(database_url: str, broadcast_url: str, count: int = 2) -> Iterator[list[str]]:
    """`count` uvicorn processes on free ports, sharing the database and the broadcaster."""
    env = service_env(database_url, GIFTGRAPH_BROADCAST_URL=broadcast_url)
    procs: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    try:
        for _ in range(count):
            port = free_port()
            procs.append(start_service(port, env))
            bases.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        for proc, base in zip(procs, bases, strict=True):
            wait_healthy(base, proc, deadline)
        yield bases
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            stop(proc)


class Broker(Protocol):
    url: str

    async def down(self) -> None:
        """Begin an outage of the broadcaster as the instances see it."""

    async def up(self) -> None:
        """End the outage."""


class RedisBroker:
    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.url = server.url

    async def down(self) -> None:
        await asyncio.to_thread(self.server.stop)

    async def up(self) -> None:
        await asyncio.to_thread(self.server.start)


class PostgresBroker:
    """LISTEN/NOTIFY on the application's own database (`postgres://`)."""

    url = "postgres://"

    def __init__(self, server_url: str, database_url: str) -> None:
        self.admin_dsn = _dsn(server_url)
        self.database = make_url(database_url).database
        self.terminated = 0

    async def _admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.admin_dsn, timeout=10)

    async def down(self) -> None:
        conn = await self._admin()
        try:
            await conn.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS false')
            self.terminated = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'giftgraph-listen' AND datname = $1",
                self.database)
        finally:
            await conn.close()

    async def up(self) -> None:
        conn = await self._admin()
        try:
            await conn.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS true')
        finally:
            await conn.close()


@pytest.fixture(params=["redis", "postgres"])
async def broker(request: pytest.FixtureRequest, server_url: str,
                 database_url: str) -> AsyncIterator[Broker]:
    if request.param == "redis":
        server = RedisServer(redis_binary(), free_port())
        try:
            server.start()
            yield RedisBroker(server)
        finally:
            server.stop()
    else:
        pg = PostgresBroker(server_url, database_url)
        try:
            yield pg
        finally:
            await pg.up()  # never leave the session's database refusing connections


# Clients -------------------------------------------------------------------------------


async def next_event(client: WsClient, op: str, field: str, within: float) -> dict[str, Any]:
    """The next `next` payload of operation `op`; TimeoutError after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no event on operation {op} within {within} s")
        msg = await client.receive(timeout=remaining)
        if msg["type"] == "ping":
            await client.ws.send(json.dumps({"type": "pong"}))
            continue
        if msg["type"] == "pong":
            continue
        assert msg["type"] == "next", msg
        assert msg["id"] == op, msg
        assert not msg["payload"].get("errors"), msg
        return msg["payload"]["data"][field]  # type: ignore[no-any-return]


async def assert_silent(client: WsClient, within: float) -> None:
    """Nothing but protocol pings arrives within `within` seconds."""
    deadline = time.monotonic() + within
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            msg = await client.receive(timeout=remaining)
        except TimeoutError:
            return
        assert msg["type"] in ("ping", "pong"), f"unexpected message: {msg}"


async def mutate_and_receive(base: str, token: str, item: str, status: str, client: WsClient,
                             op: str) -> dict[str, Any]:
    """Set the item's status through `base`; the event must reach `client` within 1 s."""
    started = time.monotonic()
    set_status(base, token, item, status)
    remaining = DELIVERY_SECONDS - (time.monotonic() - started)
    assert remaining > 0, f"the mutation alone took {time.monotonic() - started:.2f} s"
    try:
        event = await next_event(client, op, "listEvents", remaining)
    except TimeoutError:
        pytest.fail(f"{status} event not delivered within {DELIVERY_SECONDS} s")
    assert event["kind"] == "STATUS_CHANGED", event
    assert event["node"] == {"id": item, "status": status}, event
    return event


async def wait_health(base: str, broadcast: str, status_code: int,
                      within: float) -> dict[str, Any]:
    """Poll `/health` until it reports `broadcast` with `status_code`."""
    deadline = time.monotonic() + within
    last: Any = None
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            try:
                r = await http.get(f"{base}/health")
                last = (r.status_code, r.json())
                if r.status_code == status_code and last[1].get("broadcast") == broadcast:
                    return last[1]  # type: ignore[no-any-return]
            except httpx.HTTPError as exc:
                last = repr(exc)
            assert time.monotonic() < deadline, \
                f"{base}/health never reported broadcast={broadcast} ({status_code}): {last}"
            await asyncio.sleep(0.1)


def _email(who: str) -> str:
    return f"{who}-{uuid.uuid4().hex[:8]}@scaleout.example.com"


async def _connect(base: str, token: str, clients: list[WsClient]) -> WsClient:
    client = await WsClient.connect(base, {"authorization": f"Bearer {token}"})
    clients.append(client)
    return client


async def _close_all(clients: list[WsClient]) -> None:
    for client in clients:
        with contextlib.suppress(Exception):  # already closed, or the server is gone
            await asyncio.wait_for(client.ws.close(), 2)


# Tests ---------------------------------------------------------------------------------


async def test_events_reach_subscribers_on_the_other_instance(broker: Broker,
                                                              database_url: str) -> None:
    with instances(database_url, broker.url) as (a, b):
        alice = signup(a, _email("alice"))
        mallory = signup(b, _email("mallory"))
        gl, item = new_item(a, alice)
        clients: list[WsClient] = []
        try:
            on_b = await _connect(b, alice, clients)
            op_b = await on_b.subscribe(LIST_EVENTS, {"l": gl})
            on_a = await _connect(a, alice, clients)
            op_a = await on_a.subscribe(LIST_EVENTS, {"l": gl})
            spy = await _connect(b, mallory, clients)  # another family, on B
            await spy.subscribe(FAMILY_EVENTS)
            await asyncio.sleep(0.5)  # every subscription is listening

            # A -> B
            event = await mutate_and_receive(a, alice, item, "SELECTED", on_b, op_b)
            assert event["topic"] == f"list:{gl}"
            assert (await next_event(on_a, op_a, "listEvents", 2))["seq"] == event["seq"]
            # B -> A
            back = await mutate_and_receive(b, alice, item, "PURCHASED", on_a, op_a)
            assert int(back["seq"]) > int(event["seq"])
            assert (await next_event(on_b, op_b, "listEvents", 2))["seq"] == back["seq"]

            await assert_silent(spy, 1.0)  # another family hears nothing
            await assert_silent(on_b, 0.2)  # and nobody hears anything twice
            await assert_silent(on_a, 0.2)
        finally:
            await _close_all(clients)


async def test_broker_outage_loses_nothing_and_repeats_nothing(broker: Broker,
                                                               database_url: str) -> None:
    during = ["PURCHASED", "RECEIVED", "PURCHASED"]
    with instances(database_url, broker.url) as (a, b):
        alice = signup(a, _email("alice"))
        gl, item = new_item(a, alice)
        clients: list[WsClient] = []
        try:
            watcher = await _connect(b, alice, clients)
            w_op = await watcher.subscribe(LIST_EVENTS, {"l": gl})
            early = await _connect(b, alice, clients)  # leaves before the outage
            e_op = await early.subscribe(LIST_EVENTS, {"l": gl})
            await asyncio.sleep(0.5)

            first = await mutate_and_receive(a, alice, item, "SELECTED", watcher, w_op)
            assert (await next_event(early, e_op, "listEvents", 2))["seq"] == first["seq"]
            await early.ws.close()

            await broker.down()
            try:
                if isinstance(broker, PostgresBroker):
                    assert broker.terminated >= 2, "both instances LISTEN"
                health = await wait_health(b, "disconnected", 503, within=5)
                assert health["status"] == "unhealthy"
                for status in during:  # committed while B cannot hear anything
                    set_status(a, alice, item, status)
            finally:
                await broker.up()

            await wait_health(b, "connected", 200, within=15)
            await wait_health(a, "connected", 200, within=15)
            # B's subscription did not hang: it catches up from the Event table...
            missed = [await next_event(watcher, w_op, "listEvents", 10) for _ in during]
            # ...and then continues live.
            live = await mutate_and_receive(a, alice, item, "RECEIVED", watcher, w_op)

            # A client that left before the outage resumes with `since` and misses nothing.
            resumed = await _connect(b, alice, clients)
            r_op = await resumed.subscribe(LIST_EVENTS, {"l": gl, "s": first["seq"]})
            replayed = [await next_event(resumed, r_op, "listEvents", 5)
                        for _ in range(len(during) + 1)]
            await asyncio.sleep(0.3)  # the resumed subscription is listening
            last = await mutate_and_receive(a, alice, item, "PURCHASED", resumed, r_op)
            assert (await next_event(watcher, w_op, "listEvents", 2))["seq"] == last["seq"]
            await assert_silent(watcher, 0.5)
            await assert_silent(resumed, 0.1)

            expected = ["SELECTED", *during, "RECEIVED", "PURCHASED"]
            for name, events in (("watcher", [first, *missed, live, last]),
                                 ("resumed", [first, *replayed, last])):
                seqs = [int(e["seq"]) for e in events]
                assert all(x < y for x, y in itertools.pairwise(seqs)), (name, seqs)
                assert [e["node"]["status"] for e in events] == expected, (name, events)
                assert all(e["kind"] == "STATUS_CHANGED" for e in events), (name, events)
            # Every delivered event is exactly the stored one: none lost, none invented.
            conn = await asyncpg.connect(_dsn(database_url), timeout=10)
            try:
                stored = [r["seq"] for r in await conn.fetch(
                    "SELECT seq FROM events WHERE topic = $1 AND seq >= $2 ORDER BY seq",
                    f"list:{gl}", int(first["seq"]))]
            finally:
                await conn.close()
            assert [int(e["seq"]) for e in [first, *missed, live, last]] == stored
        finally:
            await _close_all(clients)


async def test_serve_with_workers_shares_events_between_them(database_url: str) -> None:
    """`giftgraph serve --workers 2` with the default `memory://` broadcaster: each worker
    is a process, so it goes over the database (LISTEN/NOTIFY) instead, and an event
    committed through one worker reaches the sockets of both (12 sockets: all on one worker
    would be a 1-in-2,048 chance)."""
    import shutil
    import sys

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in service_env(database_url).items()
           if k not in ("GIFTGRAPH_BROADCAST_URL", "GIFTGRAPH_RATE_LIMIT_STORAGE_URL")}
    command = shutil.which("giftgraph", path=str(Path(sys.executable).parent)) or "giftgraph"
    proc = subprocess.Popen(  # noqa: S603, ASYNC220 - our own console script, fixed args
        [command, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    clients: list[WsClient] = []
    try:
        wait_healthy(base, proc, time.monotonic() + 40)
        token = signup(base, _email("workers"))
        gl, item = new_item(base, token)
        ops = []
        for _ in range(12):
            client = await _connect(base, token, clients)
            ops.append(await client.subscribe(LIST_EVENTS, {"l": gl, "s": "0"}))
        # The replay of the list's events so far (the list made, its item added): after
        # them, each subscription is live.
        for client, op in zip(clients, ops, strict=True):
            replayed = [await next_event(client, op, "listEvents", 10) for _ in range(2)]
            assert [(e["kind"], e["entityType"]) for e in replayed] == [
                ("ADDED", "GiftList"), ("ADDED", "ListItem")], replayed
        set_status(base, token, item, "SELECTED")
        for client, op in zip(clients, ops, strict=True):
            event = await next_event(client, op, "listEvents", 5)
            assert event["kind"] == "STATUS_CHANGED", event
            assert event["node"]["status"] == "SELECTED"
    finally:
        await _close_all(clients)
        stop(proc)
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert "LISTEN/NOTIFY" in output
    assert "rate limits are counted by each worker" in output
