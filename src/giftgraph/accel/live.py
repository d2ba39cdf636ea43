"""Live queries written to their socket directly: a live subscription on the direct socket
handler (giftgraph.accel.sockets) parks, as an event subscription does
(giftgraph.accel.delivery): its resolver ends, Strawberry's execution state is freed, and
the socket handler runs the rest, writing each result as the same bytes for every
subscriber of the live query between a head and a tail of its response key
(`LiveFrame.parts`), framed onto the connection when it can take it (giftgraph.accel.wire),
else through the ASGI send.

Without the direct handler (GIFTGRAPH_ACCEL=false, multipart, graphql-sse) the resolver
yields each `LiveFrame` and Strawberry sends it (giftgraph.schema.execution).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from graphql import GraphQLError

from giftgraph.accel.delivery import send_or_wait
from giftgraph.accel.sockets import DIRECT_SINK, DirectSink
from giftgraph.context import Context
from giftgraph.live.frames import LiveFrame
from giftgraph.schema.extensions import format_error

Send = Callable[[LiveFrame], Awaitable[None]]


def park_live(ctx: Context, serve: Callable[[Send], Awaitable[None]]) -> bool:
    """Park this live subscription if it runs on the direct socket handler: `serve(send)`
    then runs once Strawberry's stream has ended, and `send` writes each frame. False: the
    resolver yields its frames itself."""
    sink = DIRECT_SINK.get()
    if sink is None:
        return False
    writer = LiveWriter(sink, ctx.charge_answer)

    async def run() -> None:
        try:
            await serve(writer.send)
        except Exception as exc:  # as Strawberry ends a subscription whose source failed
            await writer.fail(ctx, exc)

    sink.park = run
    return True


class LiveWriter:
    """Writes a parked live subscription's frames to its socket, each charged to its
    caller's answers (`charge`: `answer_bytes`), as the plain path's JSON encoder charges
    every message it writes."""

    __slots__ = ("charge", "prefix", "sink")

    def __init__(self, sink: DirectSink,
                 charge: Callable[[int, int], None] | None = None) -> None:
        self.sink = sink
        self.prefix = sink.prefix()
        self.charge = charge

    async def send(self, frame: LiveFrame) -> None:
        sink = self.sink
        if sink.closed:
            return
        head, body, tail = frame.parts()
        if self.charge is not None:
            self.charge(len(head) + len(body) + len(tail), 0)
        wire = sink.wire
        head, tail = self.prefix + head, tail + b"}"
        if wire is None or not wire.write_text(head, body, tail):
            await send_or_wait(sink, head + body + tail)

    async def fail(self, ctx: Context, exc: Exception) -> None:
        """The subscription ends with a `next` carrying the error, formatted (the socket
        handler then sends `complete`)."""
        error = format_error(exc if isinstance(exc, GraphQLError)
                             else GraphQLError(str(exc), original_error=exc), ctx.trace_id)
        code = (error.extensions or {}).get("code")
        if ctx.metrics is not None and isinstance(code, str):
            ctx.metrics.errors.labels(code).inc()
        if not self.sink.closed:
            await send_or_wait(self.sink, self.prefix + orjson.dumps(
                {"data": None, "errors": [error.formatted]}) + b"}")
