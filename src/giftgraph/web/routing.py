"""The ASGI app: Starlette, with WebSockets to /graphql past the middleware; and the
static pages."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from giftgraph.accel.switch import FastPaths
from giftgraph.admission import sockets as admission
from giftgraph.admission.throttle import Throttle

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"  # served at /static (vendored GraphiQL, React, graphql-ws)
DASHBOARD_PAGE = STATIC_DIR / "dashboard.html"  # served at /
FAVICON = STATIC_DIR / "favicon.svg"  # served at /favicon.ico


async def dashboard(_: Request) -> Response:
    if not DASHBOARD_PAGE.is_file():
        return PlainTextResponse("Not Found", status_code=404)
    return FileResponse(DASHBOARD_PAGE, media_type="text/html")


async def favicon(_: Request) -> Response:
    return FileResponse(FAVICON, media_type="image/svg+xml")


class App(Starlette):
    """Starlette, but a WebSocket to one of `sockets`' paths goes straight to its app, past
    the middleware and the router: their coroutines (error handling, CORS, metrics,
    routing; all pass-throughs for a WebSocket) would otherwise stay suspended for the
    socket's whole life, ~1 KB of each idle connection. Every WebSocket's uvicorn protocol
    is recorded first (`FastPaths.capture`, with the fast paths on), while `send` is still
    uvicorn's own. Every WebSocket first spends its IP's budget of new sockets
    (`admit_connection`), before the handshake is accepted (an HTTP stream spends the same,
    in web/streams.py); its `send` then counts what it owes its client (`owing`:
    admission.sockets.Owing). So does an HTTP answer of /graphql and /graphql/stream (a
    subscription stream above all), which ends quietly when cut."""

    ANSWERED = frozenset({"/graphql", "/graphql/stream"})  # HTTP answers counted by `owing`

    def __init__(self, *, sockets: dict[str, ASGIApp], throttle: Throttle, fast: FastPaths,
                 owing: admission.Owing | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sockets = sockets
        self.throttle = throttle
        self.fast = fast
        self.owing = owing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            self.fast.capture(scope, send)
            if not await admission.admit_connection(scope, send, self.throttle):
                return
            if self.owing is not None:  # what it owes its client, bounded
                send = self.owing.wrap(scope, send)
            socket_app = None if scope.get("root_path") else self.sockets.get(scope["path"])
            if socket_app is not None:
                scope["app"] = self
                await socket_app(scope, receive, send)
                return
        elif scope["type"] == "http" and self.owing is not None \
                and scope["path"] in self.ANSWERED:
            try:
                await super().__call__(scope, receive, self.owing.wrap(scope, send))
            except admission.SocketCut:
                # Reset already: let uvicorn see the connection gone before this returns
                # (a response it saw unfinished on an open connection, it logs as an error).
                for _ in range(3):
                    await asyncio.sleep(0)
            finally:
                scope.pop(admission.OWED_KEY, None)
            return
        await super().__call__(scope, receive, send)
