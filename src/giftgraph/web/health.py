"""/health and /metrics, and the HTTP request metrics middleware."""

from __future__ import annotations

import hmac
import logging
import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from giftgraph.db.migrate import database_revisions, schema_state
from giftgraph.db.session import log_outage, unavailable
from giftgraph.observability import Metrics
from giftgraph.web.state import AppState

log = logging.getLogger("giftgraph")


async def health(state: AppState, head: str) -> Response:
    """`status`, `db`, `schema` and `broadcast`; 503 unless healthy. `broadcast` is `connected`,
    `disconnected`, or `stuck`: connected, but this instance's publishing has made no
    progress for `Hub.stuck_after` seconds (kept messages not going out, or a publish
    waiting that long for the broker's answer), or it dropped a message that recently:
    its events do not reach other instances live (`Hub.stuck`)."""
    db_ok = False
    schema = "unknown"
    for attempt in (1, 2):
        try:
            async with state.db().engine.connect() as conn:
                # Its statements are the liveness check too. Not at this code's head
                # revision (e.g. an external database never migrated): every write
                # would fail, so unhealthy.
                schema = schema_state(await database_revisions(conn))
            db_ok = True
        except DBAPIError as exc:
            # A pooled connection the server dropped within the pool's idle window
            # (db_ping_after_idle_seconds): the pool has been renewed; ask once more.
            if attempt == 1 and exc.connection_invalidated:
                continue
            _unreachable(exc)
        except Exception as exc:  # any failure means "not connected"; details go to the log
            _unreachable(exc)
        break
    hub = state.live.hub if state.live is not None else None
    broadcast = "disconnected" if hub is None or not hub.connected else \
        "stuck" if hub.stuck else "connected"
    healthy = db_ok and schema == head and broadcast == "connected"
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "db": "connected" if db_ok else "disconnected",
        "schema": schema,
        "broadcast": broadcast,
    }
    return JSONResponse(body, status_code=200 if healthy else 503)


def _unreachable(exc: Exception) -> None:
    """A database that is down or silent: `log_outage`'s sparse line (a probe polling /health
    through an outage logged ~80 lines of traceback a call); the whole of anything else."""
    if unavailable(exc):
        log_outage(log, "the health check", exc)
    else:
        log.warning("health check: database unreachable", exc_info=exc)


def metrics(state: AppState, request: Request) -> Response:
    """The process's Prometheus metrics: for the bearer of `metrics_token` when one is set;
    without one, in development and test only. They count every family's requests, events
    and errors, so an open page would let anyone measure the others' activity."""
    token = state.settings.metrics_token
    if token is None and state.settings.is_production:
        return PlainTextResponse("Set GIFTGRAPH_METRICS_TOKEN to serve /metrics in production",
                                 status_code=403)
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(),
                                                                 token.encode()):
            return PlainTextResponse("A bearer token is required", status_code=401,
                                     headers={"www-authenticate": 'Bearer realm="metrics"'})
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class HttpMetrics:
    """Counts requests and their duration by path (known paths only: bounded labels)."""

    PATHS = frozenset({"/graphql", "/health", "/metrics", "/"})

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in self.PATHS else "other"
        status = 0
        gone = False  # the client disconnected (no response to it: 499, as nginx logs it)
        started = time.perf_counter()

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def watch() -> Message:
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        try:
            await self.app(scope, watch, record)
        finally:
            label = str(status) if status else "499" if gone else "500"
            self.metrics.requests.labels(scope["method"], path, label).inc()
            self.metrics.request_seconds.labels(path).observe(time.perf_counter() - started)
