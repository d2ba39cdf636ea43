"""create_app(settings) -> Starlette: the lifespan owns the database and the live layer."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from cross_web import HTTPException  # what Strawberry's view raises for bad requests
from graphql import ExecutionResult, GraphQLError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from starlette.websockets import WebSocketDisconnected as SendAfterClose
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.exceptions import NonTextMessageReceived, WebSocketDisconnected
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws import handlers as strawberry_ws
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.types.unset import UNSET, UnsetType
from strawberry.utils.aio import aclosing

from giftgraph.admission import sockets as admission
from giftgraph.admission.requests import InFlight
from giftgraph.admission.server import STATE_KEY as SERVER_REFUSALS
from giftgraph.admission.throttle import Throttle
from giftgraph.config import Settings
from giftgraph.context import (
    Context,
    OperationState,
    begin_operation,
    end_operation,
)
from giftgraph.db.embedded import EmbeddedPostgres
from giftgraph.db.engine import Database, create_database
from giftgraph.db.migrate import database_revisions, head_revisions, schema_state, upgrade
from giftgraph.db.models import Event
from giftgraph.db.session import OperationDb
from giftgraph.errors import QueryTooComplex, RateLimited, ServiceUnavailable
from giftgraph.live import Live, credentials
from giftgraph.live.render import DIRECT_SINK, DirectSink
from giftgraph.live.wire import Wire, capture, release_handshake
from giftgraph.observability import Metrics, configure_logging
from giftgraph.ratelimit import RateLimits
from giftgraph.schema.extensions import authenticate, forget_traceback, format_error
from giftgraph.schema.schema import build_schema
from giftgraph.web.http import (
    BodyLimit,
    finish,
    is_json_body,
    negotiate,
    rate_limited,
    request_error,
)

log = logging.getLogger("giftgraph")

WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC_DIR = WEB_DIR / "static"  # served at /static (vendored GraphiQL, React, graphql-ws)
GRAPHIQL_PAGE = WEB_DIR / "graphiql.html"  # GraphiQL using only /static/vendor assets
DASHBOARD_PAGE = STATIC_DIR / "dashboard.html"  # served at /
FAVICON = STATIC_DIR / "favicon.svg"  # served at /favicon.ico


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    rate_limits: RateLimits
    throttle: Throttle
    in_flight: InFlight
    database: Database | None = None
    embedded: EmbeddedPostgres | None = None
    live: Live | None = None
    # Operations open per user over all sockets (`subscriptions_per_user`).
    operations: admission.OpenOperations = field(default_factory=admission.OpenOperations)

    def db(self) -> Database:
        assert self.database is not None, "the app's lifespan has not started"
        return self.database


class SocketAdapter(ASGIWebSocketAdapter):
    """Strawberry's, with the socket admission checks on every message (size, JSON, depth:
    `admission.sockets`), sends and closes that are no error once the socket is closed, and
    on_ws_connect choosing the close code of a rejection (Strawberry always says 4403):
    1013 "try again later" while the database is down, 4429 for too many sockets."""

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object]:
        """Each message, parsed (`admission.sockets.parse_message`); a refused one closes
        the socket (1009 too big, 4400 not JSON or too deep) and ends the stream. Unlike
        Strawberry's, the last message's text (a subscribe's, for the subscription's whole
        life) is not kept while it waits for the next."""
        state = self.view.state  # type: ignore[attr-defined]
        limit, refusals = state.settings.max_socket_message_bytes, state.metrics.refusals
        budget = admission.message_budget(state.settings.socket_message_rate,
                                          state.settings.max_subscriptions_per_connection)
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                wait = budget.take()
                if wait:  # over the socket's rate: this socket is not read meanwhile
                    refusals.count("socket_message_rate")
                    await asyncio.sleep(wait)
                try:
                    message = admission.parse_message(text, limit, refusals)
                except admission.MessageRefused as refused:
                    log.info("socket message refused: %s", refused.reason)
                    await self.close(refused.code, refused.reason)
                    return
                del text
                yield message
        except KeyError as e:
            raise NonTextMessageReceived from e
        except WebSocketDisconnect as e:
            if e.code == admission.TOO_BIG:  # the server refused a frame over ws_max_size
                refusals.count("socket_message_bytes")

    async def send_json(self, message: Mapping[str, object]) -> None:
        """Strawberry's; a send after the socket was closed (by another task: revocation,
        a refused message) is a disconnected socket too, not an error."""
        try:
            await super().send_json(message)
        except SendAfterClose as exc:
            raise WebSocketDisconnected from exc

    async def close(self, code: int, reason: str) -> None:
        override = getattr(self.ws.state, "close_with", None)
        if override is not None:
            code, reason = override
        if self.ws.application_state != WebSocketState.DISCONNECTED:  # closed once
            await self.ws.close(code=code, reason=reason)


def _valid_subscribe_payload(payload: Any) -> bool:
    return (isinstance(payload, dict) and isinstance(payload.get("query"), str)
            and isinstance(payload.get("variables") or {}, dict)
            and isinstance(payload.get("extensions") or {}, dict)
            and isinstance(payload.get("operationName") or "", str))


class _NeverRaised(Exception):
    pass


# What Strawberry raises when an operation closed the socket (a private name: should a
# release drop it, nothing of ours is caught by mistake; tests/unit pin the inlined code).
OperationStreamClosed: type[Exception] = getattr(strawberry_ws, "_OperationStreamClosed",
                                                 _NeverRaised)


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with a direct sink per operation: event subscriptions write
    shared, pre-rendered `next` messages themselves (see giftgraph.live.render).

    Each operation holds a slot of its user's count (`admission.OperationSlot`) while it is
    one of the socket's `operations`: given back when it leaves them (completed, failed,
    cancelled by `complete`), when its task ends, or when the socket shuts down, whichever
    comes first (a slot is given back once)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Each open operation's slot, by id, with the operation that holds it (an id is
        # free for another operation once its own has left `operations`).
        self.user_slots: dict[str, tuple[object, admission.OperationSlot]] = {}

    def _give_back(self, operation_id: str, ended: object | None = None) -> None:
        """Give back the slot held under `operation_id` if its operation is no longer the
        socket's, or is `ended` (its task returned)."""
        entry = self.user_slots.get(operation_id)
        if entry is None:
            return
        operation, slot = entry
        if operation is ended or self.operations.get(operation_id) is not operation:
            del self.user_slots[operation_id]
            slot.release()

    def forget_id(self, id: str) -> None:
        super().forget_id(id)
        self._give_back(id)

    async def cleanup_operation(self, operation_id: str) -> None:
        await super().cleanup_operation(operation_id)
        self._give_back(operation_id)

    def on_request_accepted(self) -> None:
        """The socket is open (accepted with our subprotocol): count it until `shutdown`."""
        if self.context.metrics is not None:
            self.context.metrics.socket_opened()
        super().on_request_accepted()

    async def shutdown(self) -> None:
        # The socket has ended (closed by either side, failed, cancelled): its user's slot
        # and its expiry timer go first. Strawberry's shutdown then waits for every
        # operation's own cleanup, which may wait on the broker or the database (a
        # presence leave is announced): for as long as that took, a slot given back
        # afterwards refused the user's next socket (4429).
        slot = getattr(self.context.request.state, "socket_slot", None)
        if slot is not None:
            slot.release()
        slots, self.user_slots = self.user_slots, {}  # so are its operations' slots
        for _, operation_slot in slots.values():
            operation_slot.release()
        credentials.release(self.context.request)
        try:
            await super().shutdown()
        finally:
            if self.context.metrics is not None:
                self.context.metrics.socket_closed()

    async def handle_ping(self, message: Any) -> None:
        """A ping may re-authenticate the socket (see giftgraph.live.credentials)."""
        if not self.connection_acknowledged:
            await super().handle_ping(message)
            return
        answer = await credentials.renew(self.context, message.get("payload"))
        if isinstance(answer, dict):
            await self.send_message({"type": "pong", "payload": answer})
        elif answer:
            await super().handle_ping(message)

    async def handle_message(self, message: Any) -> None:
        """Messages of the wrong shape close the socket with 4400, as the protocol says
        (Strawberry checks only for missing keys); one whose handling fails, 1011."""
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.handle_invalid_message("Invalid message")
            return
        if message["type"] in ("subscribe", "complete") \
                and not admission.valid_id(message.get("id")):
            await self.handle_invalid_message("Invalid message id")
            return
        if message["type"] == "subscribe" and not _valid_subscribe_payload(message.get("payload")):
            await self.handle_invalid_message("Invalid subscribe payload")
            return
        try:
            await super().handle_message(message)
        except WebSocketDisconnected:
            raise
        except Exception:  # a bug: logged once; the client gets a close code, not a drop
            log.exception("socket message %r failed", message["type"][:32])
            await self.websocket.close(1011, "Internal server error")
            return
        # Strawberry's read loop holds the last message until the next one arrives, for a
        # subscription's whole life if it was the subscribe: what it needed is copied out.
        message.clear()
        if self.connection_acknowledged:  # the init timeout's task ended; drop it
            self.connection_init_timeout_task = None

    async def handle_subscribe(self, message: Any) -> None:
        """Strawberry's, but the operation over the socket's limit or its user's (all of the
        user's sockets) is refused with a code and a traceId (Strawberry's error has
        neither). QUERY_TOO_COMPLEX, as the other limits: waiting does not help
        (RATE_LIMITED's `retryAfter` would), completing one does."""
        if not self.connection_acknowledged or message["id"] in self.operations:
            await super().handle_subscribe(message)  # closes the socket (4401, 4409)
            return
        limit = self.max_subscriptions_per_connection
        if limit is not None and len(self.operations) >= limit:
            self._count_refusal("subscriptions_per_socket")
            await self._refuse(message["id"], limit, len(self.operations), "the socket")
            return
        slot = None
        user = self.context.user
        if user is not None:
            counts = self.view.state.operations  # type: ignore[attr-defined]
            per_user = self.context.settings.max_subscriptions_per_user
            refusals = self.context.metrics.refusals if self.context.metrics else None
            slot = counts.admit(user.id, per_user, refusals)
            if slot is None:
                await self._refuse(message["id"], per_user, counts.count(user.id), "the user")
                return
        try:
            await super().handle_subscribe(message)  # no await before the operation is in
        finally:
            if slot is not None:
                operation = self.operations.get(message["id"])
                if operation is None:
                    slot.release()
                else:
                    self.user_slots[message["id"]] = (operation, slot)

    def _count_refusal(self, bound: str) -> None:
        if self.context.metrics is not None:
            self.context.metrics.refusals.count(bound)

    async def _refuse(self, operation_id: str, limit: int, open_now: int, whose: str) -> None:
        """The operation's `error`: QUERY_TOO_COMPLEX, `open_now` being open already."""
        trace_id = uuid.uuid4().hex
        refusal = QueryTooComplex("Subscription limit reached", limit=limit,
                                  actual=open_now + 1, measure="subscriptions")
        log.info("subscription refused: %d open on %s (traceId=%s)", open_now, whose, trace_id)
        error = format_error(GraphQLError(refusal.message, original_error=refusal), trace_id)
        await self.send_message({"id": operation_id, "type": "error",
                                 "payload": [error.formatted]})

    async def run_operation(self, operation: Any) -> None:
        """Strawberry's, with a direct sink in the operation task's context; a parked event
        subscription (`DirectSink.park`) then runs in this task once Strawberry's stream has
        ended, been closed and been let go (its execution state, ~10 KB per idle
        subscription, is freed); `complete` follows when the park returns."""
        adapter = self.websocket
        assert isinstance(adapter, ASGIWebSocketAdapter)
        sink = DirectSink(operation, adapter.ws.send_text, Wire.of(adapter.ws.scope))
        DIRECT_SINK.set(sink)  # this task's context
        try:
            result_source = await self.schema.stream(
                operation.query, variable_values=operation.variables,
                context_value=self.context, root_value=self.root_value,
                operation_name=operation.operation_name)
            async with aclosing(result_source):
                await self._send_result_stream(operation, result_source)
            del result_source
            if sink.park is not None:
                park, sink.park = sink.park, None
                operation.query = operation.variables = None  # parsed and coerced long ago
                await park()
            await operation.send_operation_message({"id": operation.id, "type": "complete"})
        except OperationStreamClosed:
            return
        except WebSocketDisconnected:  # closed meanwhile: its shutdown cleans up
            self.operations.pop(operation.id, None)
        except GraphQLError as error:
            # Refused while parsing (a syntax error, the token limit): the parse hook's error
            # escapes Strawberry's stream, formatted (FormatErrors); it is the operation's
            # `error` message, as a validation error is.
            await operation.send_initial_errors(
                [format_error(error, getattr(self.context, "trace_id", None))])
        except Exception as error:  # as Strawberry's: log, complete, forget, re-raise
            await self.handle_task_exception(error)
            with suppress(Exception):
                await operation.send_operation_message({"id": operation.id, "type": "complete"})
            self.operations.pop(operation.id, None)
            raise
        finally:  # the task ends: so does the operation's hold on its user's count
            self._give_back(operation.id, ended=operation)


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view with our typed context, GraphQL-over-HTTP negotiation,
    socket authentication in connection_init, and socket metrics."""

    def __init__(self, state: AppState) -> None:
        settings = state.settings
        super().__init__(
            build_schema(settings),
            graphql_ide="graphiql",
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            allowed_origins=settings.cors_origins,
            connection_init_wait_timeout=timedelta(
                seconds=settings.ws_connection_init_timeout_seconds),
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        )
        self.state = state
        self._graphiql_html = GRAPHIQL_PAGE.read_text(encoding="utf-8")

    websocket_adapter_class = SocketAdapter  # type: ignore[assignment]
    graphql_transport_ws_handler_class = TransportWSHandler

    def encode_json(self, data: object) -> str:
        """orjson (several times faster than json.dumps on a large result); text, because
        a WebSocket message must go out as a text frame."""
        return orjson.dumps(data).decode()

    def decode_json(self, data: str | bytes) -> object:
        """orjson: no recursion in Python (the stdlib's raises RecursionError on deep
        nesting), and several times faster."""
        return orjson.loads(data)

    def parse_json(self, data: str | bytes) -> Any:
        """A request body (or GET `variables`/`extensions`) must be a JSON object; orjson
        also refuses invalid UTF-8. Nesting is bounded (`json_depth`), measured on the text
        once it parses: orjson takes up to 1024 levels, and code recursing over the value
        (variable coercion, cache keys) would exceed the interpreter's recursion limit."""
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise HTTPException(400, "Unable to parse request body as JSON") from exc
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        if admission.too_deep(text, self.state.settings.max_json_depth):
            self.state.metrics.refusals.count("json_depth")
            raise HTTPException(400, "JSON nested too deeply")
        if not isinstance(value, dict):
            raise HTTPException(400, "Expected a JSON object")
        return value

    async def process_result(self, request: Request, result: ExecutionResult) -> Any:
        """Strawberry's; the errors' tracebacks are let go first (`forget_traceback`: a
        parse error's traceback would keep the whole request alive in a cycle)."""
        for error in result.errors or []:
            forget_traceback(error)
        return await super().process_result(request, result)

    async def render_graphql_ide(self, request: Request) -> Response:
        """Our GraphiQL page: local assets only (works offline), auth for subscriptions."""
        return HTMLResponse(self._graphiql_html)

    def socket(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Strawberry's WebSocket handling, for `App` to await with no frame of ours in
        between: an idle socket's suspended stack is part of its memory."""
        return super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        accept = request.headers.get("accept", "")
        if request.method == "GET" and "text/html" in accept \
                and "query" not in request.query_params:
            await super().__call__(scope, receive, send)  # GraphiQL
            return
        media = negotiate(accept)
        if media is None:
            response = request_error(406, "Accept application/graphql-response+json or "
                                          "application/json")
        elif request.method == "POST" and not is_json_body(request.headers.get("content-type")):
            # Strawberry takes any content type containing "application/json".
            response = request_error(415, "Send application/json (or use GET for queries)", media)
        else:
            in_flight = self.state.in_flight
            try:
                # One caller's share: its requests beyond the bound wait here, before
                # their body is read (giftgraph.admission.requests).
                async with in_flight.turn(in_flight.key(request)):
                    response = finish(await self.run(request), request, media)
            except RateLimited as exc:
                response = rate_limited(exc, media)
            except HTTPException as exc:
                response = self._request_error(exc, media)
            except ClientDisconnect:
                # Gone before its body was in (or cut off by the request timeout,
                # giftgraph.admission.server): no one to answer, nothing to log.
                return
        await response(scope, receive, send)

    def _request_error(self, exc: HTTPException, media: str) -> Response:
        reason = str(exc.reason)
        if "mutations are not allowed when using get" in reason.lower():
            return request_error(405, "Mutations must be sent with POST", media,
                                 headers={"Allow": "POST"})
        if "unsupported content type" in reason.lower():
            return request_error(415, "Send application/json (or use GET for queries)", media)
        return request_error(400 if exc.status_code < 500 else exc.status_code, reason, media)

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> Context:
        return Context(
            settings=self.state.settings,
            database=self.state.db(),
            request=request,
            response=response,
            authorization=request.headers.get("authorization"),
            live=self.state.live,
            publish=self._publish,
            metrics=self.state.metrics,
            rate_limits=self.state.rate_limits,
            throttle=self.state.throttle,
        )

    async def _publish(self, events: list[Event]) -> None:
        if self.state.live is not None:
            # events_published counts only what goes out, now or when published again: the
            # hub reports it (`hub.on_published`, wired in create_app).
            await self.state.live.hub.publish(events)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticate the socket from connection_init; reject (4403) before any operation."""
        params = context.connection_params or {}
        raw = params.get("authorization") or params.get("Authorization")
        token = params.get("token")
        if not isinstance(raw, str) and isinstance(token, str):
            raw = f"Bearer {token}"
        context.authorization = raw if isinstance(raw, str) else None
        state = OperationState(OperationDb(context.database))
        op = begin_operation(state)
        try:
            claims = await authenticate(context)
        finally:
            await state.db.close()
            end_operation(op)
        if context.user is None:
            if isinstance(context.auth_error, ServiceUnavailable):
                context.request.state.close_with = (1013, "Try again later")
            raise ConnectionRejectionError()
        live = self.state.live
        if live is not None and isinstance(context.request, WebSocket):
            # Counted until the handler's shutdown; deactivating or deleting the user closes
            # it (4403), on any instance.
            slot = admission.admit(live.hub, context.user.id, context.request,
                                   self.state.settings.max_sockets_per_user,
                                   self.state.metrics.refusals)
            if slot is None:
                log.warning("socket refused: user %s has too many open", context.user.id)
                context.request.state.close_with = (4429, "Too many connections")
                raise ConnectionRejectionError()
            context.request.state.socket_slot = slot
            # Revoking its token's refresh chain closes it too (4403), and its token's
            # expiry (4401) unless a ping renews it (giftgraph.live.credentials).
            if claims is not None:
                credentials.hold(context.request, claims)
            release_handshake(context.request.scope)
        # The socket is authenticated once, here: its token need not live as long as it.
        # (Its caller is a plain `Caller`, as every authenticated caller is.)
        context.authorization, context.connection_params = None, {}
        return UNSET


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


async def resolve_database_url(state: AppState) -> str:
    """The configured URL, or the embedded PostgreSQL (started and migrated here)."""
    if state.settings.database_url:
        return state.settings.database_url
    state.embedded = EmbeddedPostgres(state.settings.data_dir)
    url = state.embedded.start()
    await upgrade(url)
    return url


class App(Starlette):
    """Starlette, but a WebSocket to one of `sockets`' paths goes straight to its app, past
    the middleware and the router: their coroutines (error handling, CORS, metrics,
    routing; all pass-throughs for a WebSocket) would otherwise stay suspended for the
    socket's whole life, ~1 KB of each idle connection. Every WebSocket's uvicorn protocol
    is recorded first (`wire.capture`), while `send` is still uvicorn's own. Every
    WebSocket first spends its IP's budget of new sockets (`admit_connection`), before
    the handshake is accepted."""

    def __init__(self, *, sockets: dict[str, ASGIApp], throttle: Throttle,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sockets = sockets
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            capture(scope, send)
            if not await admission.admit_connection(scope, send, self.throttle):
                return
            socket_app = None if scope.get("root_path") else self.sockets.get(scope["path"])
            if socket_app is not None:
                scope["app"] = self
                await socket_app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> Starlette:
    configure_logging(settings)
    metrics, rate_limits = Metrics(), RateLimits(settings)
    state = AppState(settings=settings, metrics=metrics, rate_limits=rate_limits,
                     throttle=Throttle(settings, rate_limits, metrics.refusals),
                     in_flight=InFlight(settings, metrics.refusals))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Any]]:
        url = await resolve_database_url(state)
        state.database = create_database(url, settings)
        state.live = Live.create(settings, url, state.database)
        await state.live.start()
        hub = state.live.hub
        hub.on_fanout = lambda event, count: state.metrics.delivered(event.at, count)
        state.metrics.bind(lambda: hub.connected,
                           lambda: int(getattr(hub.backend, "reconnects", 0)),
                           state.database.engine.pool,
                           lambda: hub.stats()["subscribers"])
        hub.on_backlog = state.metrics.events_in_backlog.inc
        state.metrics.bind_publisher(hub)
        try:
            # The lifespan state reaches uvicorn's protocol instances too: the connection
            # bounds (giftgraph.admission.server) count their refusals here.
            yield {SERVER_REFUSALS: state.metrics.refusals}
        finally:
            await state.live.stop()
            await state.database.dispose()
            state.throttle.hashing.close()
            if state.embedded is not None:
                state.embedded.stop()

    head = schema_state(head_revisions())  # this code's head revision, from its scripts

    async def health(_: Request) -> Response:
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
                log.warning("health check: database unreachable", exc_info=True)
            except Exception:  # any failure means "not connected"; details go to the log
                log.warning("health check: database unreachable", exc_info=True)
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

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def dashboard(_: Request) -> Response:
        if not DASHBOARD_PAGE.is_file():
            return PlainTextResponse("Not Found", status_code=404)
        return FileResponse(DASHBOARD_PAGE, media_type="text/html")

    async def favicon(_: Request) -> Response:
        return FileResponse(FAVICON, media_type="image/svg+xml")

    graphql = GraphQLApp(state)
    app = App(
        sockets={"/graphql": graphql.socket},
        throttle=state.throttle,
        routes=[
            Route("/", dashboard, methods=["GET"]),
            Route("/favicon.ico", favicon, methods=["GET"]),
            Route("/health", health),
            Route("/metrics", metrics),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[
            Middleware(HttpMetrics, metrics=state.metrics),
            Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
            Middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                       allow_methods=["GET", "POST"],
                       allow_headers=["authorization", "content-type"]),
        ],
        lifespan=lifespan,
    )
    app.state.giftgraph = state
    return app
