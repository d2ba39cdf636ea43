"""The floor for W5 (`giftgraph bench tenants`): the same sockets and events, no GraphQL.

WS /ws?family=K&subs=N: a socket of family K, registered until it disconnects; each
published event is sent to it N times (one per subscription it would hold). POST
/publish?family=K: the body's JSON gets a `seq` (per family) and `at` (now) and goes to
every socket of family K. No authentication, no database, no broker: what delivering the
same events to the same sockets costs at the least in Python on this machine.
Run: python -m uvicorn --factory bench.tenants_floor:create
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


def create() -> Starlette:
    families: dict[str, dict[WebSocket, int]] = defaultdict(dict)
    seqs: dict[str, int] = defaultdict(int)
    count = 0

    async def ws(websocket: WebSocket) -> None:
        nonlocal count
        family = websocket.query_params.get("family", "")
        subs = int(websocket.query_params.get("subs", "1"))
        await websocket.accept()
        families[family][websocket] = subs
        count += 1
        try:
            while True:
                await websocket.receive_bytes()
        except (WebSocketDisconnect, KeyError, RuntimeError):
            pass  # a text frame or a closed socket: either way, done
        finally:
            families[family].pop(websocket, None)
            count -= 1

    async def publish(request: Request) -> Response:
        family = request.query_params["family"]
        seqs[family] += 1
        body = orjson.loads(await request.body())
        body.update(seq=seqs[family], at=datetime.now(UTC).isoformat())
        text = orjson.dumps(body).decode()
        sent = 0
        for client, subs in list(families[family].items()):
            for _ in range(subs):
                try:
                    await client.send_text(text)
                    sent += 1
                except (WebSocketDisconnect, RuntimeError, OSError):
                    families[family].pop(client, None)
                    break
        return JSONResponse({"sent": sent, "seq": seqs[family]})

    async def clients(_: Request) -> Response:
        return JSONResponse({"clients": count})

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "healthy"})

    return Starlette(routes=[WebSocketRoute("/ws", ws),
                             Route("/publish", publish, methods=["POST"]),
                             Route("/count", clients), Route("/health", health)])
