"""A message the broker refuses for its content holds up nothing behind it.

PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more; Redis refuses (and drops the
connection of) a PUBLISH over its `proto-max-bulk-len` (512 MB by default, 1 MB at least).
An event is measured in the bytes its backend sends (after the backend's own encoding and
escaping), sent by reference when large, and sent by reference (or dropped: logged and
counted) when the backend refuses it all the same; only a broker that is away makes messages
wait, in order. Two uvicorn instances share the test database and the broker (as in
test_scaleout): every mutation goes through A, every subscriber is on B.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from sqlalchemy.engine import make_url

from giftgraph.app import create_app
from giftgraph.live.backends import PG_NOTIFY_LIMIT, REDIS_MESSAGE_LIMIT, Refused
from giftgraph.live.hub import Hub
from giftgraph.live.publishing import Outgoing
from tests.conftest import _dsn, make_settings
from tests.integration.test_live import WsClient, listening, new_item, post, signup
from tests.integration.test_scaleout import (
    LIST_EVENTS,
    Broker,
    _close_all,
    _connect,
    _email,
    assert_silent,
    broker,  # noqa: F401 - the fixture, parametrized over redis and postgres
    instances,
    mutate_and_receive,
    next_event,
)
from tests.support import RedisServer, free_port, redis_binary

pytestmark = pytest.mark.timeout(90)

PERSON_EVENTS = ("subscription { familyEvents { seq kind entityType"
                 " node { id ... on Person { notes } } } }")
# Under 7,000 characters as the hub encodes the event, over 8,000 bytes as NOTIFY sends it:
# "€" is 3 bytes in UTF-8; '"' is escaped twice (in the event, then in NOTIFY's envelope).
NOTES = {"euro": "€" * 2600, "quote": '"' * 2600}


async def metric_values(base: str) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        text = (await http.get("/metrics")).text
    return {name: float(value) for name, value, *_ in
            (line.split() for line in text.splitlines() if line and not line.startswith("#"))}


@pytest.mark.parametrize("notes", list(NOTES.values()), ids=list(NOTES))
async def test_an_event_too_large_for_the_broker_holds_up_no_other_family(
        broker: Broker, database_url: str, notes: str) -> None:  # noqa: F811
    with instances(database_url, broker.url) as (a, b):
        alice = signup(a, _email("alice"))
        person = post(a, 'mutation { createPerson(input: {name: "Gran"}) { id } }',
                      token=alice)["data"]["createPerson"]["id"]
        mallory = signup(a, _email("mallory"))
        gl, item = new_item(a, mallory)
        clients: list[WsClient] = []
        try:
            family = await _connect(b, alice, clients)
            f_op = await family.subscribe(PERSON_EVENTS)
            watcher = await _connect(b, mallory, clients)
            w_op = await watcher.subscribe(LIST_EVENTS, {"l": gl})
            await listening(b, 2)

            r = post(a, "mutation($id: ID!, $n: String!) { updatePerson(id: $id,"
                     " input: {notes: $n}) { id } }", {"id": person, "n": notes}, alice)
            assert "errors" not in r, r
            # Another family's events, published after it by the same instance, go out at once.
            await mutate_and_receive(a, mallory, item, "SELECTED", watcher, w_op)
            await mutate_and_receive(a, mallory, item, "PURCHASED", watcher, w_op)
            # The large event reaches its own subscriber, whole (it went by reference).
            event = await next_event(family, f_op, "familyEvents", 5)
            assert event["entityType"] == "Person", event
            assert event["node"] == {"id": person, "notes": notes}
            await assert_silent(family, 0.3)

            values = await metric_values(a)
            assert values["giftgraph_events_publish_backlog"] == 0
            assert values.get('giftgraph_events_publish_dropped_total{reason="refused"}',
                              0) == 0
            async with httpx.AsyncClient(timeout=5) as http:
                health = await http.get(f"{a}/health")
            assert health.status_code == 200, health.text
            assert health.json()["broadcast"] == "connected"
        finally:
            await _close_all(clients)


# The hub on the real backends ------------------------------------------------------------


@contextlib.asynccontextmanager
async def hub_on(url: str, database_url: str) -> AsyncIterator[Hub]:
    hub = Hub(url, database_url)
    await hub.connect()
    try:
        yield hub
    finally:
        await hub.disconnect()


async def received(sub: Any, count: int) -> list[Any]:
    return [await asyncio.wait_for(sub.get(), 5) for _ in range(count)]


async def test_a_message_refused_for_its_content_is_dropped_and_holds_up_nothing(
        broker: Broker, database_url: str) -> None:  # noqa: F811
    async with hub_on(broker.url, database_url) as hub, hub.listen("gg:test") as sub:
        dropped: list[tuple[str, int]] = []
        hub.on_dropped = lambda reason, count: dropped.append((reason, count))
        too_large = orjson.dumps({"n": "x" * hub.backend.max_payload}).decode()
        sent = await hub._send([Outgoing("gg:test", too_large, False),
                                Outgoing("gg:test", '{"n": 1}', False)])
        assert sent == 1
        assert await received(sub, 1) == [{"n": 1}]
        assert dropped == [("refused", 1)]
        assert not hub.pending
        assert hub.publish_refused == 1
        assert hub.stuck  # a message was dropped just now


async def test_an_event_refused_for_its_content_goes_by_reference_in_order(
        broker: Broker, database_url: str) -> None:  # noqa: F811
    async with hub_on(broker.url, database_url) as hub, hub.listen("gg:test") as sub:
        too_large = orjson.dumps({"n": "€" * hub.backend.max_payload}).decode()
        ref = orjson.dumps({"thin": True, "seq": 7, "prev": None}).decode()
        sent = await hub._send([Outgoing("gg:test", too_large, True, ref),
                                Outgoing("gg:test", '{"n": 2}', True)])
        assert sent == 2
        assert await received(sub, 2) == [{"thin": True, "seq": 7, "prev": None}, {"n": 2}]
        assert not hub.pending
        assert hub.publish_dropped == 0
        assert not hub.stuck


async def test_postgres_takes_a_notify_of_its_limit_and_refuses_one_byte_more(
        database_url: str) -> None:
    async with hub_on("postgres://", database_url) as hub, hub.listen("gg:t") as sub:
        backend: Any = hub.backend
        pad = PG_NOTIFY_LIMIT - backend.payload_size("gg:t", orjson.dumps({"p": ""}).decode())
        largest = orjson.dumps({"p": "é" * (pad // 2) + "x" * (pad % 2)}).decode()
        assert backend.payload_size("gg:t", largest) == PG_NOTIFY_LIMIT
        await backend.publish("gg:t", largest)
        assert (await received(sub, 1))[0]["p"].startswith("é")
        larger = orjson.dumps({"p": "é" * (pad // 2) + "x" * (pad % 2 + 1)}).decode()
        with pytest.raises(Refused):  # measured here, not sent
            await backend.publish("gg:t", larger)
        backend.max_payload = 10 * PG_NOTIFY_LIMIT  # sent: PostgreSQL refuses it itself
        with pytest.raises(Refused, match="payload string too long"):
            await backend.publish("gg:t", larger)
        await backend.publish("gg:t", '{"after": 1}')  # and the connection goes on
        assert await received(sub, 1) == [{"after": 1}]


async def test_redis_limit_is_under_any_servers_and_its_refusals_are_refusals(
        database_url: str) -> None:
    server = RedisServer(redis_binary(), free_port())
    server.start()
    try:
        async with hub_on(server.url, database_url) as hub, hub.listen("gg:t") as sub:
            backend: Any = hub.backend
            # The smallest bulk length a Redis server can be configured to accept.
            await backend._client.config_set("proto-max-bulk-len", "1mb")
            largest = orjson.dumps({"p": "x" * (REDIS_MESSAGE_LIMIT - 8)}).decode()
            assert backend.payload_size("gg:t", largest) == REDIS_MESSAGE_LIMIT
            await backend.publish("gg:t", largest)
            assert len((await received(sub, 1))[0]["p"]) == REDIS_MESSAGE_LIMIT - 8
            with pytest.raises(Refused):  # measured here, not sent
                await backend.publish("gg:t", largest + " ")
            with pytest.raises(Refused):
                await backend.publish("gg:t", "\ud800")  # not encodable: a lone surrogate
            backend.max_payload = 2 * 1024 * 1024  # sent: Redis refuses it itself
            with pytest.raises(Refused, match="Protocol error"):
                await backend.publish("gg:t", "x" * (1024 * 1024 + 1))
            await backend.publish("gg:t", '{"after": 1}')  # and the next one goes out
            assert await received(sub, 1) == [{"after": 1}]
    finally:
        server.stop()


# Health and metrics ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def notify_refused(server_url: str, database_url: str) -> AsyncIterator[None]:
    """The NOTIFY pool can't reach the database (its connections ended, new ones refused)
    while the LISTEN connection stays up: the backend is connected, yet nothing goes out."""
    admin = await asyncpg.connect(_dsn(server_url), timeout=10)
    name = make_url(database_url).database
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                             " WHERE application_name = 'giftgraph-notify' AND datname = $1",
                             name)
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


async def until(check: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.05)


async def test_a_publisher_that_cannot_publish_shows_as_stuck(server_url: str,
                                                               database_url: str) -> None:
    app = create_app(make_settings(database_url, broadcast_url="postgres://"))
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        hub = app.state.giftgraph.live.hub
        hub.stuck_after = 0.5

        async def state() -> tuple[int, str, dict[str, float]]:
            health = await http.get("/health")
            text = (await http.get("/metrics")).text
            values = {name: float(value) for name, value, *_ in
                      (line.split() for line in text.splitlines()
                       if line and not line.startswith("#"))}
            return health.status_code, health.json()["broadcast"], values

        assert (await state())[:2] == (200, "connected")  # the app's own pool holds a connection
        async with notify_refused(server_url, database_url):
            await hub.revoke_user(uuid.uuid4())  # can't go out: kept
            code, broadcast, values = await state()
            assert (code, broadcast) == (200, "connected")  # not yet
            assert values["giftgraph_events_publish_backlog"] == 1

            async def stuck() -> bool:
                return (await state())[:2] == (503, "stuck")

            await until(stuck, 5)
            assert (await state())[2]["giftgraph_events_publish_backlog_seconds"] >= 0.5

        async def drained() -> bool:
            return (await state())[:2] == (200, "connected")

        await until(drained, 10)
        assert (await state())[2]["giftgraph_events_publish_backlog"] == 0


async def test_a_publish_the_broker_does_not_answer_shows_as_stuck(database_url: str) -> None:
    """A broker that stops answering (SIGSTOP) keeps nothing pending, but holds every
    publish: that is no progress too."""
    server = RedisServer(redis_binary(), free_port())
    server.start()
    try:
        async with hub_on(server.url, database_url) as hub:
            hub.stuck_after = 0.5
            server.freeze()
            try:
                task = asyncio.create_task(hub.revoke_user(uuid.uuid4()))
                await asyncio.sleep(1.0)
                assert not task.done()  # still waiting for the broker's answer
                assert not hub.pending
                assert hub.stuck
                assert hub.backlog_seconds >= 0.5
            finally:
                server.thaw()
            await asyncio.wait_for(task, 15)

            async def moving() -> bool:
                return not hub.stuck

            await until(moving, 10)
    finally:
        server.stop()
