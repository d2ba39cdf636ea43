"""/graphql: Strawberry's ASGI view over HTTP (GraphQL-over-HTTP negotiation, JSON bounds,
per-caller admission) and the socket's authentication in connection_init."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from cross_web import (  # what Strawberry's view raises for bad requests
    AsyncHTTPRequestAdapter,
    HTTPException,
)
from graphql import ExecutionResult, OperationType
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLRequestData
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)
from strawberry.types.unset import UNSET, UnsetType

from giftgraph.admission import sockets as admission
from giftgraph.admission.answers import answer_json
from giftgraph.admission.checks import REQUEST_CALLER, preparse
from giftgraph.context import Context, operation_scope
from giftgraph.db.models import Event
from giftgraph.errors import RateLimited, ServiceUnavailable
from giftgraph.events import FAMILY_TOPIC
from giftgraph.live import credentials
from giftgraph.persisted import (
    REFUSED,
    REGISTERING,
    PersistedQueryNotFound,
    Registration,
    scope_of,
)
from giftgraph.schema.extensions import authenticate, forget_traceback, operation_of
from giftgraph.schema.schema import build_schema
from giftgraph.tracing import publishing, socket_trace
from giftgraph.web import streams
from giftgraph.web.headers import graphiql_policy, new_nonce
from giftgraph.web.http import (
    CLEAN_ANSWERS,
    finish,
    is_json_body,
    is_refusal,
    negotiate,
    persisted_refusal,
    rate_limited,
    request_error,
)
from giftgraph.web.sockets import SocketAdapter, TransportWSHandler
from giftgraph.web.state import AppState

log = logging.getLogger("giftgraph")

# GET parameters that name a document: with none of them, GET /graphql is GraphiQL's page.
NAMES_A_DOCUMENT = frozenset(("query", "extensions", "documentId"))

GRAPHIQL_PAGE = Path(__file__).resolve().parent / "graphiql.html"  # local assets only
NONCE = "{{csp-nonce}}"  # in the page: its response's CSP nonce (web/headers.py)


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view with our typed context, GraphQL-over-HTTP negotiation,
    socket authentication in connection_init, and socket metrics."""

    state: AppState

    def __init__(self, state: AppState) -> None:
        settings = state.settings
        super().__init__(
            build_schema(settings, tracing=state.tracing),
            graphql_ide="graphiql",
            # Sockets; multipart subscriptions and graphql-sse over HTTP (web/streams.py).
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,
                                    MULTIPART_SUBSCRIPTION_PROTOCOL, GRAPHQL_SSE_PROTOCOL),
            allowed_origins=settings.cors_origins,
            connection_init_wait_timeout=timedelta(
                seconds=settings.ws_connection_init_timeout_seconds),
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        )
        self.state = state
        self.graphiql_page = GRAPHIQL_PAGE.read_text(encoding="utf-8")
        # Strawberry's handler, or the fast paths' direct operation runner over it.
        self.graphql_transport_ws_handler_class = state.fast.socket_handler(TransportWSHandler)

    websocket_adapter_class = SocketAdapter

    def encode_json(self, data: object) -> str:
        """orjson (several times faster than json.dumps on a large result); text, because
        a WebSocket message must go out as a text frame. Every answer Strawberry sends (an
        HTTP response, a socket's or stream's message) is encoded here or, an HTTP
        response, by `encode_answer`: one over `max_response_bytes` becomes
        QUERY_TOO_COMPLEX (giftgraph.admission.answers)."""
        return self.encode_answer(data).decode()

    def encode_answer(self, data: object) -> bytes:
        """`encode_json`'s bytes (an HTTP response's body)."""
        limit = self.state.settings.max_response_bytes
        encoded, cost, values = answer_json(data, limit, self.state.metrics.refusals)
        self.charge_answer(cost, values)  # what building it cost, refused or not
        clean = CLEAN_ANSWERS.get()
        # Within its bound (refused: the cost is over it), a result without errors.
        if clean is not None and cost <= limit and isinstance(data, dict) and "data" in data \
                and not data.get("errors"):
            clean.append(encoded)
        return encoded

    def create_response(self, response_data: Any,
                        sub_response: Response) -> Response:
        """Strawberry's, with the body as `encode_answer` wrote it: Strawberry's response
        takes `encode_json`'s text and encodes it again (a 52 KB nested read with a few
        names outside ASCII: ~12 µs to decode, ~70 µs to encode again)."""
        response = Response(self.encode_answer(response_data),
                            status_code=sub_response.status_code or 200,
                            media_type="application/json")
        response.headers.raw.extend(sub_response.headers.raw)
        if sub_response.background:
            response.background = sub_response.background
        return response

    def charge_answer(self, size: int, values: int = 0) -> None:
        """`size` bytes of answers to the current request's caller (`answer_bytes`), and
        `values` the executor built (`answer_values`)."""
        caller = REQUEST_CALLER.get()
        if caller is not None:
            self.state.answer_bytes.spend(caller, size)
            if values:
                self.state.answer_values.spend(caller, values)

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

    async def process_result(self, request: Request,
                             result: ExecutionResult) -> Any:  # type: ignore[override]
        """Strawberry's; the errors' tracebacks are let go first (`forget_traceback`: a
        parse error's traceback would keep the whole request alive in a cycle)."""
        for error in result.errors or []:
            forget_traceback(error)
        return await super().process_result(request, result)  # type: ignore[arg-type]

    async def render_graphql_ide(self, request: Request) -> Response:
        """Our GraphiQL page: local assets only (works offline), auth for subscriptions;
        its inline script and style allowed by a nonce of this response's (web/headers.py)."""
        nonce = new_nonce()
        return HTMLResponse(self.graphiql_page.replace(NONCE, nonce), headers={
            "Content-Security-Policy": graphiql_policy(nonce), "Cache-Control": "no-store"})

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
                and not NAMES_A_DOCUMENT.intersection(request.query_params):
            await super().__call__(scope, receive, send)  # GraphiQL
            return
        streaming = streams.accepted(accept)
        at_stream = scope["path"] == streams.STREAM_PATH
        if at_stream or streaming:
            response = await streams.open_stream(self, request, streaming, at_stream)
            await response(scope, receive, send)
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
                # One caller's share: its requests beyond the bound wait here
                # (giftgraph.admission.requests). The body is read in between (bounded
                # in size and time): one still coming holds no slot, so one client's
                # slow bodies can't keep the other requests of its IP, or family, waiting.
                read = request.body if request.method == "POST" else None
                key = in_flight.key(request)
                REQUEST_CALLER.set(key)  # this request's task: a parse ahead is its own
                async with in_flight.turn(key, read) as turn:
                    # Its caller's answers paid for first (admission.answers).
                    await self.state.answer_bytes.paid(key)
                    await self.state.answer_values.paid(key)
                    try:
                        CLEAN_ANSWERS.set([])  # this request's (web/http.py)
                        response = finish(await self.run(request), request, media)
                        refused = is_refusal(response)
                    except REFUSED as exc:  # giftgraph.persisted, before any parsing
                        response = persisted_refusal(exc, media)
                        # An unknown hash is APQ's first step, not a refusal to pace.
                        refused = not isinstance(exc, PersistedQueryNotFound)
                    turn.answered(refused)  # refusals are paced per caller
                    # Sent, and taken by the client, within the turn: an answer its client
                    # does not read stays in flight until it is taken or the connection is
                    # cut (http_send_timeout_seconds), so one caller's unread answers are
                    # at most max_requests_per_caller of them.
                    await response(scope, receive, send)
                    # Its body counted as owed until its client takes it (admission.sockets).
                    await admission.drained(scope, len(getattr(response, "body", b"")))
                    return
            except RateLimited as exc:
                response = rate_limited(exc, media)
            except HTTPException as exc:
                response = self.http_error(exc, media)
            except ClientDisconnect:
                # Gone before its body was in (or cut off by the request timeout,
                # giftgraph.admission.server): no one to answer, nothing to log.
                return
        await response(scope, receive, send)

    async def execute_operation(self, request: Request,
                                *args: Any, **kwargs: Any) -> Any:
        """Strawberry's; a subscription's stream is kept on the request, for the stream's
        end to close it, with the event that lets it make its next result once its last
        is written (web/streams.py)."""
        result = await super().execute_operation(request, *args, **kwargs)
        if not hasattr(result, "aclose"):
            return result
        written = asyncio.Event()
        written.set()
        stream = streams.one_at_a_time(result, written)  # type: ignore[arg-type]
        request.state.subscription = stream
        request.state.written = written
        return stream

    def should_render_graphql_ide(self, request: Any) -> bool:
        """Strawberry's rule, but a GET naming its document by hash alone (APQ, a trusted
        document) is an operation, whatever its Accept."""
        return super().should_render_graphql_ide(request) \
            and not NAMES_A_DOCUMENT.intersection(request.query_params)

    async def parse_http_body(
            self, request: AsyncHTTPRequestAdapter,
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        """Strawberry's, then the document a hash names (APQ, trusted documents:
        giftgraph.persisted) in place of `query`, before anything parses it; a registration
        waits for the operation to reach execution (`RegisterPersisted`)."""
        data = await super().parse_http_body(request)
        if isinstance(data, list):
            return data  # a batch: Strawberry refuses it (batching is off)
        if data.protocol != "http":
            data = await self._streams_only_subscriptions(data)
        document_id: object = None
        if request.method == "GET":
            document_id = request.query_params.get("documentId")
        else:
            body = await request.get_body()  # Starlette keeps the body it read
            if b"documentId" in body:
                parsed = self.parse_json(body)
                document_id = parsed.get("documentId")
        if document_id is None and data.extensions is None and data.query is not None \
                and not self.state.documents.only_trusted:
            return data  # a plain request (a streamed one checked above)
        resolved = await self.state.documents.resolve(
            data.query, data.extensions, document_id, scope_of(REQUEST_CALLER.get()))
        if resolved.register is not None and resolved.query is not None:
            REGISTERING.set(Registration(resolved.register, resolved.query,
                                         self.state.register_document))
        return await self._streams_only_subscriptions(
            dataclasses.replace(data, query=resolved.query))

    async def _streams_only_subscriptions(self,
                                          data: GraphQLRequestData) -> GraphQLRequestData:
        """A streaming transport (multipart, graphql-sse) carries subscriptions only: any
        other operation is a request error before it runs (Strawberry would stream an
        internal error)."""
        if data.protocol == "http" or data.query is None:
            return data
        settings = self.state.settings
        if len(data.query) > settings.max_query_chars:
            return data  # refused by the document bounds, as any request
        # Parsed as the operation's own parse would (the same cache and allowance), and
        # refused here if it would be refused there: once streaming, a refusal has no
        # response left to go in (`streams.open_stream` answers it).
        document = await preparse(data.query, settings.max_query_tokens,
                                  REQUEST_CALLER.get() or "ip:unknown",
                                  getattr(self.schema, "analysis", None), strict=True)
        if document is None:
            return data
        operation = operation_of(document, data.operation_name)
        if operation is not None and operation.operation != OperationType.SUBSCRIPTION:
            raise HTTPException(400, "Only subscriptions are streamed: send queries and "
                                     "mutations with Accept: application/json")
        return data

    def http_error(self, exc: HTTPException, media: str) -> Response:
        """The request error for what Strawberry's view refused."""
        reason = str(exc.reason)
        if "mutations are not allowed when using get" in reason.lower():
            return request_error(405, "Mutations must be sent with POST", media,
                                 headers={"Allow": "POST"})
        if "unsupported content type" in reason.lower():
            return request_error(415, "Send application/json (or use GET for queries)", media)
        return request_error(400 if exc.status_code < 500 else exc.status_code, reason, media)

    async def socket_turn(self, key: str) -> Callable[[], None]:
        """A socket's query or mutation, while it executes: one of its caller's requests in
        flight (`max_requests_per_caller`, with its HTTP requests), taken once its answers
        are paid for (admission.answers); RateLimited after `request_wait_seconds`. Its
        release is returned."""
        release = await self.state.in_flight.hold(key)
        try:
            await self.state.answer_bytes.paid(key)
            await self.state.answer_values.paid(key)
        except BaseException:
            release()
            raise
        return release

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> Context:
        return Context(
            settings=self.state.settings,
            database=self.state.db(),
            request=request,
            response=response,
            authorization=request.headers.get("authorization"),
            live=self.state.live,
            publish=self.publish,
            metrics=self.state.metrics,
            rate_limits=self.state.rate_limits,
            throttle=self.state.throttle,
            fast=self.state.fast.any,
            charge_answer=self.charge_answer,
            operation_turn=self.socket_turn if isinstance(request, WebSocket) else None,
        )

    async def publish(self, events: list[Event]) -> None:
        live, charges = self.state.live, self.state.render_charges
        if live is None:
            return
        if charges is not None:
            # Before any render: each event a family's subscriptions here will render
            # costs it their costs (admission.answers.RenderCharges).
            counts = Counter(e.family_id for e in events if e.topic == FAMILY_TOPIC)
            for family_id, count in counts.items():
                charges.prepay(family_id, count, live.costs.held.get(family_id, 0))
        # events_published counts only what goes out, now or when published again: the hub
        # reports it (`hub.on_published`, wired in create_app).
        with publishing(self.state.tracing, events):
            await live.hub.publish(events)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticate the socket from connection_init; reject (4403) before any operation."""
        params = context.connection_params or {}
        raw = params.get("authorization") or params.get("Authorization")
        token = params.get("token")
        if not isinstance(raw, str) and isinstance(token, str):
            raw = f"Bearer {token}"
        context.authorization = raw if isinstance(raw, str) else None
        async with operation_scope(context.database):
            claims = await authenticate(context, self.state.callers(context.database))
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
            if self.state.tracing is not None:  # its operations' trace (giftgraph.tracing)
                context.request.state.trace = socket_trace(context.request.scope)
            self.state.fast.release_handshake(context.request.scope)
        # The socket is authenticated once, here: its token need not live as long as it.
        # (Its caller is a plain `Caller`, as every authenticated caller is.)
        context.authorization, context.connection_params = None, {}
        unset: UnsetType = UNSET
        return unset
