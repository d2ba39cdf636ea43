"""create_app(settings) -> Starlette: the lifespan owns the database and the broadcaster."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from giftgraph.config import Settings
from giftgraph.context import Context, OperationState, begin_operation, end_operation
from giftgraph.db.embedded import EmbeddedPostgres
from giftgraph.db.engine import Database, create_database
from giftgraph.db.migrate import upgrade
from giftgraph.db.session import OperationDb
from giftgraph.live import Live
from giftgraph.schema.extensions import authenticate
from giftgraph.schema.schema import build_schema

log = logging.getLogger("giftgraph")


@dataclass
class AppState:
    settings: Settings
    database: Database | None = None
    embedded: EmbeddedPostgres | None = None
    live: Live | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def db(self) -> Database:
        assert self.database is not None, "the app's lifespan has not started"
        return self.database


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view with our typed context."""

    def __init__(self, state: AppState) -> None:
        settings = state.settings
        super().__init__(
            build_schema(),
            graphql_ide="graphiql",
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            allowed_origins=settings.cors_origins,
            connection_init_wait_timeout=timedelta(
                seconds=settings.ws_connection_init_timeout_seconds),
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        )
        self.state = state

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> Context:
        live = self.state.live
        return Context(
            settings=self.state.settings,
            database=self.state.db(),
            request=request,
            response=response,
            authorization=request.headers.get("authorization"),
            live=live,
            publish=live.hub.publish if live is not None else None,
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | None | dict[str, object]:
        """Authenticate the socket from connection_init; reject (4403) before any operation."""
        params = context.connection_params or {}
        raw = params.get("authorization") or params.get("Authorization")
        token = params.get("token")
        if not isinstance(raw, str) and isinstance(token, str):
            raw = f"Bearer {token}"
        context.authorization = raw if isinstance(raw, str) else None
        state = OperationState(OperationDb(context.database.sessions))
        op = begin_operation(state)
        try:
            await authenticate(context)
        finally:
            await state.db.close()
            end_operation(op)
        if context.user is None:
            raise ConnectionRejectionError()
        if self.state.live is not None and isinstance(context.request, WebSocket):
            # Deactivating or deleting the user closes this socket (4403), on any instance.
            self.state.live.hub.register_socket(context.user.id, context.request)
        return UNSET


async def resolve_database_url(state: AppState) -> str:
    """The configured URL, or the embedded PostgreSQL (started and migrated here)."""
    if state.settings.database_url:
        return state.settings.database_url
    state.embedded = EmbeddedPostgres(state.settings.data_dir)
    url = state.embedded.start()
    await upgrade(url)
    return url


def create_app(settings: Settings) -> Starlette:
    state = AppState(settings=settings)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        url = await resolve_database_url(state)
        state.database = create_database(url, settings)
        state.live = Live.create(settings, url, state.database.sessions)
        await state.live.start()
        try:
            yield
        finally:
            await state.live.stop()
            await state.database.dispose()
            if state.embedded is not None:
                state.embedded.stop()

    async def health(_: Request) -> Response:
        db_ok = False
        try:
            async with state.db().engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            db_ok = True
        except Exception:  # any failure means "not connected"; details go to the log
            log.warning("health check: database unreachable", exc_info=True)
        body = {
            "status": "healthy" if db_ok else "unhealthy",
            "db": "connected" if db_ok else "disconnected",
            "broadcast": "connected" if state.live and state.live.hub.connected
            else "disconnected",
        }
        healthy = db_ok and body["broadcast"] == "connected"
        body["status"] = "healthy" if healthy else "unhealthy"
        return JSONResponse(body, status_code=200 if healthy else 503)

    graphql = GraphQLApp(state)
    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
        ],
        middleware=[
            Middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                       allow_methods=["GET", "POST"],
                       allow_headers=["authorization", "content-type"]),
        ],
        lifespan=lifespan,
    )
    app.state.giftgraph = state
    return app
