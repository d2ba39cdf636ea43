"""Sockets that subscribe, get an event and reconnect (resuming with `since`) leave nothing
of themselves behind once closed: under a soak's reconnects the process grew ~1 MB a
minute while each shared render task kept its subscriber's whole socket (live/render.py)."""

from __future__ import annotations

import asyncio
import collections
import gc

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
    return collections.Counter(name for o in gc.get_objects()
                               if (name := type(o).__name__) in PER_SOCKET)


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
    await asyncio.sleep(0.2)
    kept = _per_socket()
    assert not kept, f"{CYCLES} closed sockets kept: {dict(kept)}"
