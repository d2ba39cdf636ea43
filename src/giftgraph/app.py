"""create_app(settings) -> Starlette: the wiring. The lifespan owns the database and the
live layer; `giftgraph.accel.switch.install` decides the fast paths once, here.

Where a request goes: `web.routing.App` (WebSockets to /graphql straight to the view) →
`web.view.GraphQLApp` (HTTP) or `web.sockets` (graphql-transport-ws) → the schema
(`schema.schema`) → resolvers → db. /health and /metrics: `web.health`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from giftgraph.accel import switch as accel
from giftgraph.admission.answers import AnswerPace, RenderCharges
from giftgraph.admission.requests import InFlight
from giftgraph.admission.server import STATE_KEY as SERVER_REFUSALS
from giftgraph.admission.sockets import Owing
from giftgraph.admission.throttle import Throttle
from giftgraph.config import Settings
from giftgraph.db.embedded import EmbeddedPostgres
from giftgraph.db.engine import create_database
from giftgraph.db.migrate import head_revisions, schema_state, upgrade
from giftgraph.live.layer import Live
from giftgraph.observability import Metrics, configure_logging
from giftgraph.persisted import Documents, load_manifest
from giftgraph.ratelimit import RateLimits
from giftgraph.tracing import Tracing, trace_fan_out
from giftgraph.tracing import configure as configure_tracing
from giftgraph.web import health
from giftgraph.web.headers import SecurityHeaders
from giftgraph.web.http import BodyLimit
from giftgraph.web.routing import STATIC_DIR, App, dashboard, favicon
from giftgraph.web.state import AppState
from giftgraph.web.view import GraphQLApp


async def resolve_database_url(state: AppState) -> str:
    """The configured URL, or the embedded PostgreSQL (started and migrated here)."""
    if state.settings.database_url:
        return state.settings.database_url
    state.embedded = EmbeddedPostgres(state.settings.data_dir)
    url = state.embedded.start()
    await upgrade(url)
    return url


def traced(app: ASGIApp, tracing: Tracing) -> ASGIApp:
    """OpenTelemetry's ASGI middleware around `app` (a Starlette middleware factory)."""
    return tracing.wrap(app)


def create_app(settings: Settings, tracing: Tracing | None = None) -> Starlette:
    """The app for `settings`; traced by `tracing`, else as the OTEL_* variables say
    (giftgraph.tracing: off when unset, and then nothing is wrapped)."""
    configure_logging(settings)
    own_tracing = tracing is None
    tracing = tracing if tracing is not None else configure_tracing()
    metrics, rate_limits = Metrics(), RateLimits(settings)
    state = AppState(settings=settings, fast=accel.install(settings), metrics=metrics,
                     rate_limits=rate_limits,
                     throttle=Throttle(settings, rate_limits, metrics.refusals),
                     in_flight=InFlight(settings, metrics.refusals),
                     answer_bytes=AnswerPace("answer_bytes", settings.answer_bytes_rate,
                                              settings.answer_bytes_burst,
                                              settings.request_wait_seconds,
                                              metrics.refusals),
                     answer_values=AnswerPace("answer_values", settings.answer_values_rate,
                                              settings.answer_values_burst,
                                              settings.request_wait_seconds,
                                              metrics.refusals),
                     documents=Documents(
                         load_manifest(settings.trusted_documents)
                         if settings.trusted_documents else None,
                         only_trusted=settings.trusted_documents_only,
                         most=settings.max_persisted_documents),
                     tracing=tracing)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Any]]:
        url = await resolve_database_url(state)
        state.database = create_database(url, settings)
        watchdog = state.database.watch()
        if watchdog is not None:
            state.metrics.db_connections_cut.set_function(lambda: float(watchdog.cut))
        state.documents.sessions = state.database.sessions  # APQ registrations, shared
        if tracing is not None:
            tracing.instrument_engine(state.database.engine.sync_engine)
            if state.database.lane_engine is not None:
                tracing.instrument_engine(state.database.lane_engine.sync_engine)
            state.database.direct_statements = False  # a span per statement
        state.live = Live.create(settings, url, state.database)
        state.live.renderer.charge = state.render_charges = RenderCharges(
            state.answer_bytes, state.answer_values)
        await state.live.start()
        hub = state.live.hub
        state.fast.install_hub(hub)
        if tracing is not None:
            trace_fan_out(tracing, hub)
        hub.on_fanout = lambda event, count: state.metrics.delivered(event.at, count)
        state.metrics.bind(lambda: hub.connected,
                           lambda: int(getattr(hub.backend, "reconnects", 0)),
                           state.database.engine.pool,
                           lambda: hub.stats()["subscribers"])
        hub.on_backlog = state.metrics.events_in_backlog.inc
        state.metrics.bind_publisher(hub)
        unwatch_gc = state.metrics.watch_gc()
        probe = asyncio.create_task(state.metrics.probe_loop(), name="loop lag probe")
        state.metrics.bind_live_queries(state.live.queries)
        try:
            # The lifespan state reaches uvicorn's protocol instances too: the connection
            # bounds (giftgraph.admission.server) count their refusals here.
            yield {SERVER_REFUSALS: state.metrics.refusals}
        finally:
            probe.cancel()
            unwatch_gc()
            await state.live.stop()
            await state.database.dispose()
            if watchdog is not None:  # last: shutting down waits on the database too
                await watchdog.stop()
            state.throttle.hashing.close()
            if state.embedded is not None:
                state.embedded.stop()
            if tracing is not None and own_tracing:
                tracing.shutdown()  # the last spans go out

    head = schema_state(head_revisions())  # this code's head revision, from its scripts

    async def health_page(_: Request) -> Response:
        return await health.health(state, head)

    async def metrics_page(request: Request) -> Response:
        return health.metrics(state, request)

    graphql = GraphQLApp(state)
    app = App(
        sockets={"/graphql": graphql.socket},
        throttle=state.throttle,
        fast=state.fast,
        owing=Owing.of(settings, state.metrics.refusals),
        routes=[
            Route("/", dashboard, methods=["GET"]),
            Route("/favicon.ico", favicon, methods=["GET"]),
            Route("/health", health_page),
            Route("/metrics", metrics_page),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            Route("/graphql/stream", graphql, methods=["GET", "POST"]),  # graphql-sse
            WebSocketRoute("/graphql", graphql),
            Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[
            # Outermost: a span per request (a W3C traceparent continues its trace).
            *([Middleware(traced, tracing=tracing)] if tracing is not None else []),
            Middleware(SecurityHeaders),  # CSP, nosniff, framing, referrer (web/headers.py)
            Middleware(health.HttpMetrics, metrics=state.metrics),
            Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
            Middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                       allow_methods=["GET", "POST"],
                       allow_headers=["authorization", "content-type"]),
        ],
        lifespan=lifespan,
    )
    app.state.giftgraph = state
    return app
