"""The WebSocket side of /graphql: Strawberry's adapter and graphql-transport-ws handler
with the socket's admission checks, per-user operation counts, re-authentication by ping
and GiftGraph's error codes."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextvars import ContextVar
from typing import Any

from graphql import GraphQLError
from starlette.websockets import WebSocketDisconnect, WebSocketState
from starlette.websockets import WebSocketDisconnected as SendAfterClose
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import NonTextMessageReceived, WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)

from giftgraph.admission import sockets as admission
from giftgraph.admission.checks import REQUEST_CALLER, caller_key
from giftgraph.context import Context
from giftgraph.errors import QueryTooComplex, RateLimited
from giftgraph.live import credentials
from giftgraph.persisted import (
    REFUSED,
    REGISTERING,
    BadPersistedQuery,
    Registration,
    scope_of,
)
from giftgraph.schema.extensions import format_error
from giftgraph.web.reauth import renew

log = logging.getLogger("giftgraph")

READ_AHEAD = 16  # messages a waiting read loop reads ahead, at most (SocketAdapter)

# The operation whose task this is (Strawberry runs each in its own task).
RUNNING: ContextVar[Any] = ContextVar("giftgraph_running_operation", default=None)


class SocketAdapter(ASGIWebSocketAdapter):
    """Strawberry's, with the socket admission checks on every message (size, JSON, depth:
    `admission.sockets`), sends and closes that are no error once the socket is closed, and
    on_ws_connect choosing the close code of a rejection (Strawberry always says 4403):
    1013 "try again later" while the database is down, 4429 for too many sockets.

    A wait of the read loop (its family's turn to start an operation, its answers paid
    for: `TransportWSHandler.handle_subscribe`) ends as soon as its client leaves
    (`watching`, `watch`): meanwhile the socket's messages are read ahead, kept for
    `iter_json` in order, up to `READ_AHEAD` of them and one message's bytes
    (`max_socket_message_bytes`); past those it is read no more until the wait ends.
    Else a socket whose client had gone was held, with its subscriptions and its user's
    slot, until its family's debt was paid (a socket and 18 subscriptions 10-20 s after
    their clients had gone, adversary 2026-11-28), and reading one message ahead only, a
    client that sent a second subscribe before leaving was held 14 s (2026-11-29)."""

    _ahead: asyncio.Future[Any] | None = None  # the next message, being read ahead
    _kept: collections.deque[dict[str, Any]] | None = None  # read ahead, not yet taken
    _kept_bytes = 0
    _waiter: asyncio.Task[Any] | None = None  # the read loop's task while it `watching`
    _gone = False

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
                text = await self._receive_text()
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
        finally:
            if self._ahead is not None:
                self._ahead.cancel()

    async def _receive_text(self) -> str:
        """Starlette's `receive_text`, the messages read ahead first (`watch`)."""
        if self._kept:
            message = self._kept.popleft()
            self._kept_bytes -= _size(message)
        else:
            ahead, self._ahead = self._ahead, None
            if ahead is None:
                return await self.ws.receive_text()
            message = await ahead
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        return str(message["text"])  # KeyError: not text, as Starlette's

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        """The block's waits that call `watch` first (`before_wait`) end with
        WebSocketDisconnected as soon as the client leaves."""
        self._waiter, self._gone = asyncio.current_task(), False
        try:
            yield
        except asyncio.CancelledError:
            if self._gone and self._waiter is not None and self._waiter.uncancel() == 0:
                raise WebSocketDisconnected from None
            raise
        finally:
            self._waiter = None

    async def watch(self) -> None:
        """Before a wait in `watching`: the socket read ahead, the wait cancelled when its
        client leaves (WebSocketDisconnected at once if it has already)."""
        ahead = self._ahead
        if ahead is None:
            self._read_on()
        elif ahead.done():  # arrived while nothing watched
            if _leaving(ahead):
                raise WebSocketDisconnected
            self._keep(ahead)

    def _read_on(self) -> None:
        """Read the next message ahead, unless as many as may be kept are."""
        limit = self.view.state.settings.max_socket_message_bytes  # type: ignore[attr-defined]
        if self._kept is not None and (len(self._kept) >= READ_AHEAD
                                       or self._kept_bytes >= limit):
            return
        ahead = self._ahead = asyncio.ensure_future(self.ws.receive())
        ahead.add_done_callback(self._arrived)

    def _arrived(self, ahead: asyncio.Future[Any]) -> None:
        if ahead is not self._ahead or self._waiter is None:
            return  # not watched now: the loop takes it where it is
        if _leaving(ahead):
            self._gone = True
            self._waiter.cancel()
            return
        self._keep(ahead)

    def _keep(self, ahead: asyncio.Future[Any]) -> None:
        """A message read ahead, kept for the loop; and read on."""
        message = ahead.result()
        if self._kept is None:
            self._kept = collections.deque()
        self._kept.append(message)
        self._kept_bytes += _size(message)
        self._ahead = None
        self._read_on()

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
            try:
                await self.ws.close(code=code, reason=reason)
            except WebSocketDisconnect as exc:  # the client has gone (or the socket was cut)
                raise WebSocketDisconnected from exc


def _size(message: dict[str, Any]) -> int:
    return len(message.get("text") or message.get("bytes") or "")


def _leaving(ahead: asyncio.Future[Any]) -> bool:
    """Whether a message read ahead says the client has gone (or could not be read)."""
    return ahead.cancelled() or ahead.exception() is not None \
        or ahead.result()["type"] == "websocket.disconnect"


def _valid_subscribe_payload(payload: Any) -> bool:
    # `query` may be left out when a hash names the document (giftgraph.persisted).
    return (isinstance(payload, dict) and isinstance(payload.get("query"), str | None)
            and isinstance(payload.get("variables") or {}, dict)
            and isinstance(payload.get("extensions") or {}, dict)
            and isinstance(payload.get("operationName") or "", str))


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler, with the socket's admission bounds,
    re-authentication by ping, and a refused parse as the operation's `error`. The fast
    paths (giftgraph.accel.sockets) subclass it to run event subscriptions directly.

    Each operation holds a slot of its user's count (`admission.OperationSlot`) while it is
    one of the socket's `operations`: given back when it leaves them (completed, failed,
    cancelled by `complete`), when its task ends, or when the socket shuts down, whichever
    comes first (a slot is given back once)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Each open operation's slot, by id, with the operation that holds it (an id is
        # free for another operation once its own has left `operations`).
        self.user_slots: dict[str, tuple[object, admission.OperationSlot]] = {}

    def give_back(self, operation_id: str, ended: object | None = None) -> None:
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
        self.give_back(id)

    async def cleanup_operation(self, operation_id: str) -> None:
        await super().cleanup_operation(operation_id)
        self.give_back(operation_id)

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
        answer = await renew(self.context, message.get("payload"))
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
            await super().handle_message(message)  # type: ignore[arg-type]
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
        payload = message["payload"]
        state = self.view.state  # type: ignore[attr-defined]
        user = self.context.user
        if user is not None:
            # The family's turn to start an operation first: what follows (a persisted
            # document's lookup, a parse) is paced by it. Unknown hashes looked up before
            # it ran 600 statements a second for one family (adversary, 2026-11-26).
            refusals = self.context.metrics.refusals if self.context.metrics else None
            # And its answers paid for (admission.answers): the operation's task, made
            # from this one, charges its answers to the family (the view's JSON encoder).
            caller = caller_key(self.context)
            REQUEST_CALLER.set(caller)
            adapter: SocketAdapter = self.websocket  # type: ignore[assignment]
            async with adapter.watching():  # a socket simply waits, unless its client goes
                await state.operations.start_turn(user.family_id, self.context.settings,
                                                  refusals, adapter.watch)
                while True:  # (its next messages are read later)
                    try:
                        await state.answer_bytes.paid(caller, adapter.watch)
                        await state.answer_values.paid(caller, adapter.watch)
                        break
                    except RateLimited:
                        continue
        try:  # the document a hash names (APQ, trusted documents), before anything parses it
            resolved = await state.documents.resolve(
                payload.get("query"), payload.get("extensions"), payload.get("documentId"),
                scope_of(caller_key(self.context)))
        except REFUSED as refused:
            await self._send_error(message["id"], refused)
            return
        if resolved.query is None:
            await self._send_error(message["id"], BadPersistedQuery("No GraphQL query found"))
            return
        payload["query"] = resolved.query
        registering = None
        if resolved.register is not None:
            registering = REGISTERING.set(Registration(resolved.register, resolved.query,
                                                       state.register_document))
        try:
            await self._subscribe_within_limits(message)
        finally:
            if registering is not None:  # the operation's task has its own copy
                REGISTERING.reset(registering)

    async def _subscribe_within_limits(self, message: Any) -> None:
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

    async def _send_error(self, operation_id: str, refused: Exception) -> None:
        """The operation's `error`, with its code and a traceId (a document not found,
        not allowed, or a hash that does not match)."""
        trace_id = uuid.uuid4().hex
        message = getattr(refused, "message", str(refused))
        error = format_error(GraphQLError(message, original_error=refused), trace_id)
        await self.send_message({"id": operation_id, "type": "error",
                                 "payload": [error.formatted]})

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
        """Strawberry's; an operation refused while parsing gets its `error` message
        (`handle_task_exception`), and the operation's hold on its user's count ends with
        its task."""
        token = RUNNING.set(operation)
        try:
            await super().run_operation(operation)
        except (GraphQLError, WebSocketDisconnected):
            pass  # answered (or the socket is gone): nothing more to report
        finally:
            RUNNING.reset(token)
            self.give_back(operation.id, ended=operation)

    async def handle_task_exception(self, error: Exception) -> None:
        """A parse hook's refusal escapes Strawberry's stream, formatted (FormatErrors): it
        is the operation's `error` message, as a validation error is. A socket closed
        meanwhile is no error (its shutdown cleans up)."""
        operation = RUNNING.get()
        if isinstance(error, WebSocketDisconnected):
            return
        if isinstance(error, GraphQLError) and operation is not None:
            await operation.send_initial_errors(
                [format_error(error, getattr(self.context, "trace_id", None))])
            return
        await super().handle_task_exception(error)
