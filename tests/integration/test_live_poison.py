"""One bad item on a live queue holds up nothing behind it: a channel's fan-out, a presence
room, a family's dashboard feed, the presence heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy.engine import make_url

from giftgraph.db import models as m
from giftgraph.ids import decode_id
from giftgraph.live.backends import RECONNECTED
from giftgraph.live.hub import CONTROL, Hub
from giftgraph.live.presence import PresenceTracker
from giftgraph.live.publishing import channel, encode_event
from giftgraph.live.subscriber import RESYNC, Direct
from tests.conftest import GQL, Account, _dsn
from tests.support import RedisServer, free_port, redis_binary


@contextlib.asynccontextmanager
async def memory_hub() -> AsyncIterator[Hub]:
    hub = Hub("memory://", "postgresql://unused")
    await hub.connect()
    try:
        yield hub
    finally:
        await hub.disconnect()


def event(seq: int) -> m.Event:
    row = m.Event(seq=seq, family_id=uuid.uuid4(), topic="family", kind=m.EventKind.UPDATED,
                  entity_type="Person", entity_id=uuid.uuid4(), actor_id=None,
                  at=datetime.now(UTC), payload={})
    row.prev_seq = None
    return row


MALFORMED = [
    "[1]", "5", '"text"', "null",  # not an object: every subscriber would fail on it
    '{"thin": true, "seq": "7"}',  # a reference without a seq
    orjson.dumps({**orjson.loads(encode_event(event(3))), "entity_id": 5}).decode(),
    orjson.dumps({**orjson.loads(encode_event(event(3))), "seq": "3"}).decode(),
]


async def test_malformed_messages_on_a_channel_are_dropped_and_hold_up_nothing() -> None:
    async with memory_hub() as hub, hub.listen("gg:f:t") as sub:
        for message in MALFORMED:
            await hub.broadcast.publish("gg:f:t", message)
        await hub.broadcast.publish("gg:f:t", '{"n": 1}')
        assert await asyncio.wait_for(sub.get(), 2) == {"n": 1}
        assert not sub.items


async def test_a_failing_subscriber_holds_up_neither_the_others_nor_its_channel() -> None:
    """An exception while delivering to one subscriber (here its socket's write): that
    subscriber resyncs (catches up from the Event table); the others get everything."""
    def broken(row: m.Event, message: Any) -> bool:
        raise RuntimeError("a broken socket")

    async def prepare(row: m.Event) -> bytes:
        return b"message"

    async def until(sub: Any, last: Any) -> list[Any]:
        got = [await asyncio.wait_for(sub.get(), 2)]
        while got[-1] != last:
            got.append(await asyncio.wait_for(sub.get(), 2))
        return got

    async with memory_hub() as hub, hub.listen("gg:f:t") as failing, \
            hub.listen("gg:f:t") as other:
        failing.direct = Direct(prepare, broken)
        for message in (encode_event(event(1)), '{"n": 2}'):  # fanned out one by one...
            await hub.broadcast.publish("gg:f:t", message)
            await asyncio.sleep(0.05)
        failing.direct = Direct(prepare, broken)
        await hub.broadcast.publish("gg:f:t", encode_event(event(3)))  # ...and together
        await hub.broadcast.publish("gg:f:t", '{"n": 4}')
        got = await until(other, {"n": 4})
        assert [i.seq if isinstance(i, m.Event) else i for i in got] == [1, {"n": 2}, 3,
                                                                          {"n": 4}]
        got = await until(failing, {"n": 4})
        assert got[0] is RESYNC, got
        assert {"n": 2} in got, got


async def test_a_malformed_presence_message_is_not_the_end_of_the_room() -> None:
    family, viewer = uuid.uuid4(), uuid.uuid4()
    async with memory_hub() as hub:
        presence = PresenceTracker(hub, heartbeat=5, ttl=15)
        try:
            async with presence.join(family, "list:x", uuid.uuid4()) as viewers:
                await asyncio.wait_for(viewers.get(), 2)  # ourselves
                name = channel(family, "presence:list:x")
                for users in ([5], "abc", [None], ["not a uuid"]):
                    await hub.broadcast.publish(name, orjson.dumps(
                        {"presence": "elsewhere", "users": users, "ttl": 15}).decode())
                await hub.broadcast.publish(name, orjson.dumps(
                    {"presence": "elsewhere", "users": [str(viewer)], "ttl": 15}).decode())
                while viewer not in await asyncio.wait_for(viewers.get(), 2):
                    pass
        finally:
            await presence.close()


async def test_presence_expires_on_time_while_the_broker_does_not_answer(
        database_url: str) -> None:
    """Another instance's viewers expire after their ttl even while every heartbeat waits
    for a broker that stopped answering (SIGSTOP): the round of heartbeats no longer holds
    up the expiry, nor one room's heartbeat the others'."""
    server = RedisServer(redis_binary(), free_port())
    server.start()
    family, viewer = uuid.uuid4(), uuid.uuid4()
    hub = Hub(server.url, database_url)
    await hub.connect()
    presence = PresenceTracker(hub, heartbeat=0.2, ttl=1.0)
    try:
        async with presence.join(family, "list:a", uuid.uuid4()) as viewers, \
                presence.join(family, "list:b", uuid.uuid4()):
            await hub.broadcast.publish(channel(family, "presence:list:a"), orjson.dumps(
                {"presence": "elsewhere", "users": [str(viewer)], "ttl": 1.0}).decode())
            while viewer not in await asyncio.wait_for(viewers.get(), 2):
                pass
            server.freeze()
            seen_at = time.monotonic()
            while viewer in await asyncio.wait_for(viewers.get(), 4):
                pass
            assert time.monotonic() - seen_at < 4
            server.thaw()
    finally:
        server.thaw()
        await presence.close()
        await hub.disconnect()
        server.stop()


@contextlib.asynccontextmanager
async def database_refused(server_url: str, database_url: str) -> AsyncIterator[None]:
    """Every connection to the test database ended, new ones refused, inside."""
    admin = await asyncpg.connect(_dsn(server_url), timeout=10)
    name = make_url(database_url).database
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                             " WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


async def test_a_failed_dashboard_snapshot_is_not_the_end_of_the_familys_feed(
        app: Any, gql: GQL, alice: Account, server_url: str, database_url: str) -> None:
    live = app.state.giftgraph.live
    me = await alice.client("{ me { family { id } } }")
    family = decode_id(me.data["me"]["family"]["id"], "Family")
    async with live.dashboards.watch(family) as (first, mailbox):
        feed = live.dashboards.feeds[family]
        async with database_refused(server_url, database_url):
            computed = live.dashboards.computations
            await live.hub.broadcast.publish(channel(family, "family"), '{"nudge": 1}')
            await asyncio.sleep(1.0)  # the snapshot fails (more than once)
            assert live.dashboards.computations == computed
        assert feed.task is not None
        assert not feed.task.done(), feed.task
        # The feed goes on: the next change is in a later snapshot.
        r = await alice.client('mutation { createPerson(input: {name: "Gran"}) { id } }')
        assert not r.errors, r.errors
        person = decode_id(r.data["createPerson"]["id"], "Person")
        deadline = time.monotonic() + 20  # backoff reaches 5 s; a loaded machine
        while True:
            snap = await asyncio.wait_for(mailbox.get(), max(0.1, deadline - time.monotonic()))
            assert snap.version > first.version
            # Each part of a snapshot is a future its first reader set.
            if person in {p.person_id for p in await snap.dashboard.parts["people"]}:
                break


async def test_a_malformed_control_message_is_not_the_end_of_the_control_loop() -> None:
    """The control loop (revocations, resyncs after a broker reconnect) goes on after a
    revocation it can't read and a resync callback that fails."""
    async with memory_hub() as hub, hub.listen("gg:f:t") as sub:
        def failing_callback() -> None:
            raise RuntimeError("a callback's bug")

        hub.on_resync.append(failing_callback)
        for message in ('{"revoke": 5}', '{"revoke": null}', "[1]"):
            await hub.broadcast.publish(CONTROL, message)
        await hub.broadcast.publish(RECONNECTED, "")  # resync: the callback fails
        assert await asyncio.wait_for(sub.get(), 2) is RESYNC
        await hub.broadcast.publish(RECONNECTED, "")  # the loop is still there
        assert await asyncio.wait_for(sub.get(), 2) is RESYNC


async def test_a_shared_scope_holds_no_connection_between_its_reads(app: Any,
                                                                    alice: Account) -> None:
    """An event's shared scope is held while its subscribers are written to, a stalled one's
    for ever: its reads give their connection back at once, so that sockets that stop
    reading cannot take the pool from everyone else's requests."""
    from giftgraph.context import _OPERATION

    state = app.state.giftgraph
    pool = state.database.engine.pool
    me = (await alice.client("{ me { id family { id } } }")).data["me"]
    user, family = decode_id(me["id"], "User"), decode_id(me["family"]["id"], "Family")
    before = pool.checkedout()
    async with state.live.scopes.use(("event", family, 1), family):
        operation = _OPERATION.get()
        assert operation is not None
        row = await operation.loaders.user.load(user)
        assert row is not None
        assert row.email == alice.email
        assert pool.checkedout() == before  # back in the pool while the scope is held
        other = await operation.loaders.family.load(family)  # the next read takes one again
        assert other is not None
        assert pool.checkedout() == before
