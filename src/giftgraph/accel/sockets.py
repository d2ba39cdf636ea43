"""Event subscriptions written to their socket directly: the socket handler's operation
runner with a `DirectSink` in each operation task's context, and the parking of an event
subscription once Strawberry's stream has ended.

`direct_operations(handler_class)` makes the handler class; `shape_ok` checks the
Strawberry internals it inlines (`BaseGraphQLTransportWSHandler._send_result_stream`, its
module's `_OperationStreamClosed`, the `Operation` fields it reads) before
`giftgraph.accel.switch.install` uses it. Without it, Strawberry's own `run_operation` runs every
operation and event subscriptions yield their events (plain delivery).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import GraphQLError
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws import handlers as strawberry_ws
from strawberry.utils.aio import aclosing

from giftgraph.accel.source import source_of
from giftgraph.accel.wire import Wire
from giftgraph.schema.extensions import format_error

log = logging.getLogger("giftgraph.accel")

OPERATION_FIELDS = ("completed", "task", "id", "query", "variables", "operation_name")


class _NeverRaised(Exception):
    pass


# What Strawberry raises when an operation closed the socket (a private name: should a
# release drop it, nothing of ours is caught by mistake; `shape_ok` then turns this off).
OperationStreamClosed: type[Exception] = getattr(strawberry_ws, "_OperationStreamClosed",
                                                 _NeverRaised)


def shape_ok() -> bool:
    """Whether Strawberry's graphql-transport-ws handler still has what `run_operation`
    below inlines. False: logged, and Strawberry's own runs every operation."""
    handler = strawberry_ws.BaseGraphQLTransportWSHandler
    missing = [name for name in ("_send_result_stream", "run_operation", "handle_task_exception")
               if not callable(getattr(handler, name, None))]
    if getattr(strawberry_ws, "_OperationStreamClosed", None) is not OperationStreamClosed \
            or OperationStreamClosed is _NeverRaised:
        missing.append("_OperationStreamClosed")
    slots = set(getattr(strawberry_ws.Operation, "__slots__", ()))
    missing += [f for f in OPERATION_FIELDS if f not in slots]
    if not hasattr(ASGIWebSocketAdapter, "__init__") \
            or "self.ws" not in source_of(ASGIWebSocketAdapter.__init__):
        missing.append("ASGIWebSocketAdapter.ws")
    if missing:
        log.warning("accel: Strawberry's socket handler changed shape (missing %s); "
                    "direct delivery is off", ", ".join(missing))
        return False
    return True


@dataclass(slots=True)
class DirectSink:
    """The graphql-transport-ws operation a subscription resolver may write to directly:
    pre-framed onto the connection's transport when it can take it (`wire`), else through
    the ASGI `send_text`."""

    operation: Any  # strawberry's graphql_transport_ws Operation
    send_text: Callable[[str], Awaitable[None]]
    wire: Wire | None = None
    # Set by an event subscription's resolver instead of yielding: the rest of the
    # subscription, run by the socket handler once Strawberry's execution (its extension
    # hooks, graphql-core's context, the resolver's generators) has ended and been freed.
    park: Callable[[], Awaitable[None]] | None = None
    # Set by `stop`: the operation was dropped (the client sent `complete`).
    stopped: bool = False

    @property
    def closed(self) -> bool:
        """Completed, or being cancelled (the client sent `complete`: Strawberry has
        dropped the operation and cancelled its task, which has not run since)."""
        task = self.operation.task
        return self.stopped or bool(self.operation.completed) or task is None \
            or task.cancelling() > 0

    def stop(self) -> None:
        """The operation is being dropped (`DirectOperations.cleanup_operation`): nothing
        more is written for it, by the fan-out's loop either (`Wire.stopped`)."""
        self.stopped = True
        if self.wire is not None:
            self.wire.stopped = True

    def prefix(self) -> bytes:
        return b'{"id":' + orjson.dumps(self.operation.id) + b',"type":"next","payload":'


ACK = {"type": "connection_ack"}
ACK_TEXT = orjson.dumps(ACK)

DIRECT_SINK: ContextVar[DirectSink | None] = ContextVar("giftgraph_direct_sink", default=None)



def direct_operations(base: type[Any]) -> type[Any]:
    """`base` (our graphql-transport-ws handler), running each operation with a
    `DirectSink` in its task's context."""

    class DirectOperations(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.sinks: dict[str, DirectSink] = {}  # each running operation's, by its id

        async def cleanup_operation(self, operation_id: str) -> None:
            """Strawberry's (the client's `complete`, or the socket's end: the operation is
            dropped and its task cancelled), after its sink is stopped: the fan-out writes
            to a socket without asking the operation's task (`Wire.put`)."""
            sink = self.sinks.get(operation_id)
            if sink is not None:
                sink.stop()
            await super().cleanup_operation(operation_id)

        async def send_message(self, message: Any) -> None:
            """A `connection_ack` without payload goes out pre-framed, straight onto the
            transport (every socket of a reconnect herd gets one); everything else, and an
            ack the wire can't take now, as Strawberry sends it."""
            if message == ACK:
                adapter = self.websocket
                assert isinstance(adapter, ASGIWebSocketAdapter)
                wire = Wire.of(adapter.ws.scope)
                if wire is not None and wire.write_text(ACK_TEXT):
                    return
            await super().send_message(message)

        async def run_operation(self, operation: Any) -> None:
            """Strawberry's, with a direct sink in the operation task's context; a parked
            event subscription (`DirectSink.park`) then runs in this task once Strawberry's
            stream has ended, been closed and been let go (its execution state, ~10 KB per
            idle subscription, is freed); `complete` follows when the park returns."""
            adapter = self.websocket
            assert isinstance(adapter, ASGIWebSocketAdapter)
            sink = DirectSink(operation, adapter.ws.send_text, Wire.of(adapter.ws.scope))
            DIRECT_SINK.set(sink)  # this task's context
            self.sinks[operation.id] = sink
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
                    operation.query = operation.variables = None  # parsed and coerced
                    await park()
                await operation.send_operation_message({"id": operation.id,
                                                        "type": "complete"})
            except OperationStreamClosed:
                return
            except WebSocketDisconnected:  # closed meanwhile: its shutdown cleans up
                self.operations.pop(operation.id, None)
            except GraphQLError as error:
                # Refused while parsing (a syntax error, the token limit): the parse hook's
                # error escapes Strawberry's stream, formatted (FormatErrors); it is the
                # operation's `error` message, as a validation error is.
                await operation.send_initial_errors(
                    [format_error(error, getattr(self.context, "trace_id", None))])
            except Exception as error:  # as Strawberry's: log, complete, forget, re-raise
                await self.handle_task_exception(error)
                with suppress(Exception):
                    await operation.send_operation_message({"id": operation.id,
                                                            "type": "complete"})
                self.operations.pop(operation.id, None)
                raise
            finally:  # the task ends: so does the operation's hold on its user's count
                if self.sinks.get(operation.id) is sink:
                    del self.sinks[operation.id]
                self.give_back(operation.id, ended=operation)

    DirectOperations.__name__ = DirectOperations.__qualname__ = f"Direct{base.__name__}"
    return DirectOperations
