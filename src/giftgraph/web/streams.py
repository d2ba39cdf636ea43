"""Subscriptions over plain HTTP: the multipart protocol Apollo Client speaks
(`POST /graphql`, `Accept: multipart/mixed;subscriptionSpec="1.0"`) and graphql-sse's
distinct connections mode (`POST /graphql/stream`, `Accept: text/event-stream`), both
Strawberry's transports.

A stream is held to what holds a socket: it spends one of its client IP's new sockets
(`socket_connect_rate`) before anything else is done for it (refused: 429, `Retry-After`,
RATE_LIMITED, counted under that bound), it is authenticated once (`Authorization:
Bearer`), counts as one of its user's sockets (`max_sockets_per_user`) and as one of its
user's operations (`max_subscriptions_per_user`), and ends, as a socket closes, when its
token expires or its refresh chain (or its user) is revoked (`Handle`, which the hub and
giftgraph.live.credentials see as a socket)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import orjson
from cross_web import HTTPException
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from strawberry.http.streaming import MultipartSubscriptionTransport, SSETransport

from giftgraph.admission import sockets as admission
from giftgraph.admission.checks import REQUEST_CALLER, caller_key
from giftgraph.context import operation_scope
from giftgraph.errors import RateLimited, ServiceUnavailable
from giftgraph.live import credentials
from giftgraph.persisted import REFUSED
from giftgraph.schema.extensions import authenticate, format_error
from giftgraph.web.http import (
    JSON,
    error_body,
    finish,
    is_json_body,
    media_type,
    persisted_refusal,
    request_error,
)

log = logging.getLogger("giftgraph")

STREAM_PATH = "/graphql/stream"
MULTIPART = "multipart/mixed"
EVENT_STREAM = "text/event-stream"


def accepted(accept: str) -> set[str]:
    """The streaming media types an Accept header names (multipart only with
    `subscriptionSpec`, as Strawberry's transport requires)."""
    found = set()
    for part in accept.split(","):
        media = media_type(part)
        if media == EVENT_STREAM:
            found.add(EVENT_STREAM)
        elif media == MULTIPART and "subscriptionspec" in part.lower():
            found.add(MULTIPART)
    return found


class Handle:
    """An HTTP stream as the hub (`register_socket`, revocation) and
    giftgraph.live.credentials (expiry) see a socket: `close` ends it."""

    def __init__(self) -> None:
        self.scope: dict[str, Any] = {}
        self.closed = asyncio.Event()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed.set()


async def _watch(receive: Receive, handle: Handle) -> None:
    """Close `handle` when the client goes away (its body was read: what comes next is
    the disconnect), not at the next heartbeat's failed write."""
    while (await receive())["type"] != "http.disconnect":
        pass
    await handle.close()


async def until_closed(source: AsyncIterable[Any], handle: Handle, end: str,
                       release: Callable[[], Awaitable[None]],
                       receive: Receive) -> AsyncIterator[Any]:
    """`body`'s chunks until it ends, the client leaves or `handle` is closed (then `end`,
    the transport's completion, and the body is closed); `release` once, whichever comes
    first, even when the stream is cancelled (it is shielded: a cancelled task's awaits
    would fail at once, and the slots stay held)."""
    body = aiter(source)
    closed = asyncio.ensure_future(handle.closed.wait())
    watch = asyncio.ensure_future(_watch(receive, handle))
    try:
        while True:
            step = asyncio.ensure_future(anext(body))
            await asyncio.wait((step, closed), return_when=asyncio.FIRST_COMPLETED)
            if step.done() and not closed.done():  # a source always ready ends too
                try:
                    chunk = step.result()
                except StopAsyncIteration:
                    return
                yield chunk
                continue
            step.cancel()
            with contextlib.suppress(BaseException):
                await step
            yield end
            return
    finally:
        closed.cancel()
        watch.cancel()
        with anyio.CancelScope(shield=True):
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            await release()


async def one_at_a_time(source: AsyncIterator[Any],
                         written: asyncio.Event) -> AsyncGenerator[Any, None]:
    """`source`'s results, each asked for only once `written` is set (`Stream`: the last
    one is written and taken, or counted as owed while it waits: admission.sockets). Else
    Strawberry's stream runs ahead of a client that does not read: a result in its queue
    and the next one made beside the one being written, three copies of each uncounted
    (68 unread streams of ~4 MB live results took the process to ~1.2 GB, adversary
    2026-11-28)."""
    try:
        while True:
            await written.wait()
            written.clear()
            try:
                result = await anext(source)
            except StopAsyncIteration:
                return
            yield result
            del result
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


class Stream:
    """A subscription's streamed response, sent by us alone: the only reader of `receive`
    is `_watch`. (Starlette's `StreamingResponse`, under a server of ASGI spec < 2.4 such as
    uvicorn, reads it too, to cancel its stream at the disconnect: two readers racing for
    one message, and a cancelled stream whose slots were given back, if at all, only at
    the next heartbeat's failed write.) Once a result is written and its client has taken
    it (or, while it waits, counted as owed: `admission.drained`), `written` lets the
    subscription make its next one (`one_at_a_time`); the last result stays counted as
    owed until the next (`OwedSend.keep`: Strawberry's stream holds it meanwhile, and a
    live query waits for its caller's answer bytes before its next: 400 read streams each
    pinning a stale ~4 MB live result took the process to 1.8 GB, adversary 2026-11-28).
    `heartbeat` is the transport's heartbeat, which is no result."""

    def __init__(self, response: StreamingResponse, handle: Handle, end: str,
                 release: Callable[[], Awaitable[None]], heartbeat: str = "",
                 written: asyncio.Event | None = None) -> None:
        self.response = response
        self.handle = handle
        self.end = end
        self.release = release
        self.heartbeat = heartbeat
        self.written = written

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self.response
        chunks = until_closed(response.body_iterator, self.handle, self.end, self.release,
                              receive)
        written, heartbeat = self.written, self.heartbeat
        owed = scope.get(admission.OWED_KEY)
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": response.raw_headers})
            async for chunk in chunks:
                result = written is not None and chunk != heartbeat
                if result and owed is not None:
                    # Until its next part, Strawberry's stream keeps this text and the
                    # result it was made from: counted as about twice the text.
                    owed.keep(2 * sys.getsizeof(chunk))
                data = chunk if isinstance(chunk, bytes | memoryview) \
                    else chunk.encode(response.charset)
                await send({"type": "http.response.body", "body": data, "more_body": True})
                del data
                if result:
                    await admission.drained(scope)
                    written.set()  # type: ignore[union-attr]
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # ASGI 2.4: a write to a client that has gone
            pass
        finally:
            if owed is not None:
                owed.keep(0)
            await chunks.aclose()  # type: ignore[attr-defined]


def refused_while_parsing(error: GraphQLError) -> Response:
    """A formatted parse-time refusal as the request's error: 400, or 429 with
    `Retry-After` for RATE_LIMITED."""
    extensions = error.extensions or {}
    headers = None
    status = 400
    if extensions.get("code") == "RATE_LIMITED":
        status, headers = 429, {"Retry-After": str(int(extensions.get("retryAfter", 1)))}
    return Response(orjson.dumps({"errors": [error.formatted]}), status_code=status,
                    media_type=JSON, headers=headers)


def refused_connection(exc: RateLimited) -> Response:
    """A stream refused by its IP's budget of new sockets, before it was authenticated:
    429 with `Retry-After` (what a graphql-sse or multipart client sees of a refused
    request; a WebSocket's refusal is its handshake's 403) and RATE_LIMITED."""
    retry = int((exc.extensions or {}).get("retryAfter", 1))
    return Response(error_body("Too many new connections, retry later", "RATE_LIMITED",
                               retryAfter=retry),
                    status_code=429, media_type=JSON, headers={"Retry-After": str(retry)})


async def open_stream(view: Any, request: Request, streaming: set[str],
                      at_stream: bool) -> Response | Stream:
    """A subscription over HTTP for `view` (the GraphQLApp): multipart at /graphql,
    graphql-sse at /graphql/stream, each only there; authenticated and admitted as a
    socket is, then streamed until it ends, its client leaves or its credentials do."""
    wanted = EVENT_STREAM if at_stream else MULTIPART
    if request.method != "POST" or streaming != {wanted}:
        where = ("POST /graphql/stream with Accept: text/event-stream" if at_stream else
                 "POST /graphql/stream for text/event-stream (graphql-sse); multipart "
                 "subscriptions are POST /graphql")
        return request_error(406 if request.method == "POST" else 405, f"Use {where}")
    if not is_json_body(request.headers.get("content-type")):
        return request_error(415, "Send application/json")
    # A new socket of its IP's, before its token is read or its body parsed: opening and
    # closing streams costs what opening and closing sockets does (admission.sockets).
    try:
        await admission.spend_connection(admission.client_ip(request.scope),
                                         view.state.throttle)
    except RateLimited as exc:
        return refused_connection(exc)
    context = await view.get_context(request, Response())
    async with operation_scope(context.database):
        claims = await authenticate(context)
    user = context.user
    if user is None:
        code = "SERVICE_UNAVAILABLE" if isinstance(context.auth_error, ServiceUnavailable) \
            else "UNAUTHENTICATED"
        return Response(error_body("Authenticate with Authorization: Bearer", code),
                        status_code=503 if code == "SERVICE_UNAVAILABLE" else 401,
                        media_type="application/json")
    context.connection_params = {}  # authenticated here, once, as a socket is
    REQUEST_CALLER.set(caller_key(context))  # its parse ahead is charged to its family
    settings, refusals = view.state.settings, view.state.metrics.refusals
    live = view.state.live
    handle = Handle()
    socket_slot = admission.admit(live.hub, user.id, handle,  # type: ignore[arg-type]
                                  settings.max_sockets_per_user, refusals) \
        if live is not None else None
    if live is not None and socket_slot is None:
        return request_error(429, "Too many connections")
    await view.state.operations.start_turn(user.family_id, settings, refusals)
    slot = view.state.operations.admit(user.id, settings.max_subscriptions_per_user,
                                       refusals)

    def give_back() -> None:
        if slot is not None:
            slot.release()
        if socket_slot is not None:
            socket_slot.release()
        credentials.release(handle)

    async def release() -> None:
        """The stream has ended: its slots, and the subscription itself (closed now, not
        whenever the collector gets to it: it holds a hub subscription)."""
        give_back()
        subscription = getattr(request.state, "subscription", None)
        if subscription is not None:
            request.state.subscription = None
            # Strawberry's heartbeat merge may still be stepping it, cancelled: a
            # moment later it is free to close.
            for _ in range(100):
                try:
                    await subscription.aclose()
                    break
                except RuntimeError:  # "asynchronous generator is already running"
                    await asyncio.sleep(0.02)
                except Exception:
                    log.warning("closing an HTTP subscription failed", exc_info=True)
                    break

    if slot is None:
        give_back()
        return Response(error_body("Subscription limit reached", "QUERY_TOO_COMPLEX",
                                   limit=settings.max_subscriptions_per_user,
                                   measure="subscriptions"),
                        media_type="application/json")
    if claims is not None:
        credentials.hold(handle, claims)  # type: ignore[arg-type]
    try:
        response = await view.run(request, context=context)
    except HTTPException as exc:
        await release()
        refused: Response = view.http_error(exc, JSON)
        return refused
    except REFUSED as exc:
        await release()
        return persisted_refusal(exc, JSON)
    except GraphQLError as error:
        # Refused while parsing (a syntax error, the token limit, the analysis
        # allowance): the parse hook's error escapes Strawberry's stream, as it does a
        # socket's (accel.sockets), and is the request's error, before any stream.
        await release()
        return refused_while_parsing(format_error(error, context.trace_id))
    except BaseException:
        give_back()
        raise
    if not isinstance(response, StreamingResponse):  # refused before it streamed
        await release()
        return finish(response, request, JSON)
    # The transport's own completion, when the stream is ended here (expiry, revocation).
    transport = SSETransport() if at_stream else MultipartSubscriptionTransport()
    end = transport.encode_complete()
    heartbeat = transport.heartbeat_message(view.encode_json_string)
    # A proxy passes each part on as it comes (nginx reads this header; SSE's has it).
    response.headers["X-Accel-Buffering"] = "no"
    response.headers.setdefault("Cache-Control", "no-cache, no-transform")
    return Stream(response, handle, end, release, heartbeat,
                  getattr(request.state, "written", None))
