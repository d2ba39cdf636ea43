"""Fan-out: a thousand concurrent subscribers of one list all receive one change."""

from __future__ import annotations

import asyncio
import json
import time

import websockets

from tests.integration.test_live import PROTOCOL, new_item, set_status, signup

SUBSCRIBERS = 1000
# One user opens every socket here; the per-user cap is raised for this test only.


async def test_thousand_subscribers_all_receive_the_event(server: str) -> None:
    token = signup(server, "fanout@example.com")
    gl, item = new_item(server, token)
    url = server.replace("http", "ws") + "/graphql"
    init = json.dumps({"type": "connection_init", "payload": {"token": token}})
    sub = json.dumps({"id": "1", "type": "subscribe", "payload": {
        "query": "subscription($l: ID!) { listEvents(listId: $l) { seq kind } }",
        "variables": {"l": gl}}})

    async def open_one() -> websockets.ClientConnection:
        ws = await websockets.connect(url, subprotocols=[PROTOCOL],  # type: ignore[list-item]
                                      open_timeout=30, ping_interval=None)
        await ws.send(init)
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(sub)
        return ws

    sockets: list[websockets.ClientConnection] = []
    try:
        for start in range(0, SUBSCRIBERS, 100):  # connect in waves of 100
            sockets += await asyncio.gather(*(open_one() for _ in range(start, start + 100)))
        await asyncio.sleep(1.0)  # every subscription is listening
        sent = time.monotonic()
        await asyncio.to_thread(set_status, server, token, item, "SELECTED")

        async def first_event(ws: websockets.ClientConnection) -> float:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 20))
            assert msg["type"] == "next", msg
            assert msg["payload"]["data"]["listEvents"]["kind"] == "STATUS_CHANGED"
            return time.monotonic() - sent

        latencies = sorted(await asyncio.gather(*(first_event(ws) for ws in sockets)))
        assert len(latencies) == SUBSCRIBERS
        print(f"\n{SUBSCRIBERS} subscribers: p50 {latencies[len(latencies) // 2]:.3f}s "
              f"max {latencies[-1]:.3f}s")
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
