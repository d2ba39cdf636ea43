"""Sockets that subscribe, get an event and reconnect (resuming with `since`) leave nothing
of themselves behind once closed: under a soak's reconnects the process grew ~1 MB a
minute while each shared render task kept its subscriber's whole socket (accel/render.py)."""

from __future__ import annotations

import asyncio
import collections
import gc

import pytest

from tests.integration import test_live_features
from tests.integration.test_live import WsClient
from tests.integration.test_live_features import Server

live_server = test_live_features.live_server  # the fixture: an app under uvicorn, in-process

EVENTS = "subscription($s: String) { familyEvents(since: $s) { seq kind } }"
PERSON = 'mutation { createPerson(input: {name: "P"}) { id } }'
# What one socket's handler holds: none may outlive it.
PER_SOCKET = {"TransportWSHandler", "WebSocket", "DirectSink", "Credentials", "SocketSlot",
              "Operation", "Wire"}
CYCLES = 12


async def _cycle(srv: Server, token: str, since: str | None) -> str:
    """One socket: subscribed (resuming after `since`), an event, closed by the client."""
    c = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    listening = srv.subscribers() + 1
    await c.subscribe(EVENTS, {"s": since} if since else {})
    await srv.listening(listening)
    await srv.gql(PERSON, token=token)
    msg = await c.receive()
    assert msg["type"] == "next", msg
    await c.ws.close()
    return msg["payload"]["data"]["familyEvents"]["seq"]  # type: ignore[no-any-return]


def _per_socket() -> collections.Counter[str]:
    gc.collect()
    # By class or base class: the fast paths' handler subclasses TransportWSHandler.
    return collections.Counter(name for o in gc.get_objects()
                               if (name := _kind(type(o))) is not None)


def _kind(cls: type) -> str | None:
    if cls.__name__ in PER_SOCKET:
        return cls.__name__
    return next((c.__name__ for c in cls.__mro__[1:] if c.__name__ in PER_SOCKET), None)


async def test_closed_sockets_leave_nothing_behind(live_server: Server) -> None:
    srv = live_server
    token, _ = await srv.signup("reconnects@example.com")
    since = None
    for _ in range(CYCLES):
        since = await _cycle(srv, token, since)
    deadline = asyncio.get_running_loop().time() + 10
    while srv.subscribers() or srv.live.hub.stats()["sockets"]:  # the handlers have ended
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    for _ in range(50):  # a handler may still be unwinding on a loaded machine
        if not (kept := _per_socket()):
            break
        await asyncio.sleep(0.1)
    assert not kept, f"{CYCLES} closed sockets kept: {dict(kept)}"


def _collected() -> int:
    """graphql-core's memoized subfield collections alive now."""
    gc.collect()
    return sum(type(o).__name__ == "CollectedFields" for o in gc.get_objects())


@pytest.mark.accel  # the memo is graphql-core's private one: accel.executor resets it
async def test_a_long_lived_subscription_keeps_nothing_per_event(live_server: Server) -> None:
    """A subscription's per-event executors, and a shared render's plan (live as long as the
    process), used to share graphql-core's `collect_subfields` memo: an entry per event."""
    srv = live_server
    token, _ = await srv.signup("events@example.com")
    stay = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    await stay.subscribe(EVENTS)
    await srv.listening(1)
    since = await _cycle(srv, token, None)  # the plan and its first events
    before = _collected()
    for _ in range(CYCLES):
        since = await _cycle(srv, token, since)
    await asyncio.sleep(0.2)
    after = _collected()
    assert after - before < CYCLES // 2, (before, after)
    await stay.ws.close()


async def test_a_channel_outlives_the_socket_that_opened_it(live_server: Server) -> None:
    """The channel's feed (the hub's task fanning out its events) is started by its first
    subscriber and runs while any other remains: it must not keep that first socket."""
    srv = live_server
    token, _ = await srv.signup("first@example.com")
    first = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    await first.subscribe(EVENTS)
    await srv.listening(1)
    second = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    await second.subscribe(EVENTS)
    await srv.listening(2)
    await srv.gql(PERSON, token=token)
    assert (await first.receive())["type"] == (await second.receive())["type"] == "next"
    await first.ws.close()
    for _ in range(50):
        if srv.subscribers() == 1 and _per_socket()["TransportWSHandler"] == 1:
            break
        await asyncio.sleep(0.1)
    assert _per_socket()["TransportWSHandler"] == 1  # the second socket's alone
    await second.ws.close()
