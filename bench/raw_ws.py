"""The fan-out baseline for W2: a bare Starlette WebSocket broadcast, no GraphQL, no broker.

WS /ws: a client is registered until it disconnects. POST /broadcast: the request body is
sent as one text message to every client, one after the other; the reply is the count.
Run: python -m uvicorn --factory bench.raw_ws:create
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


def create() -> Starlette:
    clients: set[WebSocket] = set()

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        clients.add(websocket)
        try:
            while True:
                await websocket.receive_bytes()
        except (WebSocketDisconnect, KeyError, RuntimeError):
            pass  # KeyError/RuntimeError: a text frame or a closed socket; either way, done
        finally:
            clients.discard(websocket)

    async def broadcast(request: Request) -> Response:
        text = (await request.body()).decode()
        sent = 0
        for client in list(clients):
            try:
                await client.send_text(text)
                sent += 1
            except (WebSocketDisconnect, RuntimeError, OSError):
                clients.discard(client)
        return JSONResponse({"sent": sent})

    async def count(_: Request) -> Response:
        return JSONResponse({"clients": len(clients)})

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "healthy"})

    return Starlette(routes=[WebSocketRoute("/ws", ws), Route("/broadcast", broadcast,
                                                              methods=["POST"]),
                             Route("/count", count), Route("/health", health)])
