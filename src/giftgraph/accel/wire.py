"""Pre-framed WebSocket writes for the event fan-out.

One event goes to thousands of sockets as the same `next` payload (only the operation id
differs). Through the ASGI interface each socket costs a chain of awaits: Starlette's state
checks, uvicorn's `send`, a websockets `Frame` object and its serialization. Here the frame
header and the message's parts are put together in one join and written to the socket's
transport: the same bytes the protocol library would write (a final, unmasked,
uncompressed text frame). Gorilla's `PreparedMessage` and uWebSockets' `publish` do the
same. What is left per socket is mostly the `send` system call itself.

It is used only where it is exactly equivalent: uvicorn's websockets-sansio protocol
(its default), an open connection with no extension negotiated (no permessage-deflate)
and no close sent. A socket whose buffer is over `HIGH_WATER` (a client that is not
reading) is not written here: the caller falls back to the awaited ASGI send, in that
subscriber's own task, so one slow client never stalls the others' fan-out.

`capture` (called by the app before any middleware) records the protocol behind each
WebSocket's ASGI `send`; `Wire.of(scope)` finds it again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from starlette.types import Scope, Send

from giftgraph.accel.source import source_of
from giftgraph.admission import server
from giftgraph.live.inbox import Inbox

log = logging.getLogger("giftgraph.accel")

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.protocol import State
except ImportError:  # pragma: no cover - another server, or no websockets: ASGI sends only
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]
    State = None  # type: ignore[assignment,misc]

SCOPE_KEY = "giftgraph.wire"
# What this module reads and writes of uvicorn's websockets-sansio protocol, and of its
# websockets connection: checked once (`shape_ok`) before anything here is used.
PROTOCOL_FIELDS = ("transport", "conn", "close_sent", "writable", "queue", "handshake_complete",
                   "request", "response", "curr_msg_data_type", "frames", "logger", "client")
PROTOCOL_METHODS = ("send_receive_event_to_app", "handle_parser_exception")
CONNECTION_FIELDS = ("state", "extensions")
HIGH_WATER = 256 * 1024  # bytes buffered for one socket before it counts as not reading


def header(n: int) -> bytes:
    """The header of a final, unmasked text frame (RFC 6455 5.2) of `n` payload bytes."""
    if n < 126:
        return b"\x81" + n.to_bytes(1, "big")
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big")
    return b"\x81\x7f" + n.to_bytes(8, "big")


written = 0  # messages pre-framed onto a transport, this process (stats, tests)
# The frame last put together and what it was made of (head, body, tail, frame), and the
# same for a backlog's frames: the fan-out writes one event's message to every subscriber
# whose operation has the same id (all but a few), so it is framed once per event rather
# than once per socket. Each is one tuple, replaced whole: a reader never sees parts of two.
_last: tuple[bytes, bytes, bytes, bytes] = (b"", b"", b"", header(0))  # the empty message
_last_many: tuple[list[bytes], bytes, bytes, bytes] = ([], b"", b"", b"")


def frame(head: bytes, body: bytes, tail: bytes) -> bytes:
    """The text frame of `head + body + tail`, made once for a run of equal messages: `body`
    (an event's shared payload) is compared by identity, which holding it makes safe."""
    global _last
    last = _last
    if body is last[1] and head == last[0] and tail == last[2]:
        return last[3]
    data = b"".join((header(len(head) + len(body) + len(tail)), head, body, tail))
    _last = (head, body, tail, data)
    return data


def frames(head: bytes, bodies: list[bytes], tail: bytes) -> bytes:
    """`frame` of each of `bodies`, joined; made once for a run of equal backlogs."""
    global _last_many
    last = _last_many
    # List equality compares each pair by identity first (in C): the fan-out's bodies are
    # the very objects framed last; equal content (if not the same objects) frames alike.
    if bodies == last[0] and head == last[1] and tail == last[2]:
        return last[3]
    data = b"".join([frame(head, body, tail) for body in bodies])
    _last_many = (list(bodies), head, tail, data)
    return data


class Wire:
    """Direct writes to one uvicorn websockets-sansio connection."""

    # The protocol's transport and websockets connection, read once (they are the
    # connection's for its whole life): a write reads them per socket of every fan-out.
    __slots__ = ("_conn", "_flag", "_protocol", "_transport", "stopped")

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        self._conn = protocol.conn
        # The lean protocol's writable `Flag`, read as an attribute; None for uvicorn's
        # own protocol (an asyncio.Event, asked `is_set()`).
        self._flag = protocol.writable if type(protocol.writable) is Flag else None
        # Set when the operation this wire writes for is over (`DirectSink.stop`): `put`
        # and `put_many` write nothing more.
        self.stopped = False

    @classmethod
    def of(cls, scope: Scope) -> Wire | None:
        """The accepted connection's wire, or None: not uvicorn's sansio protocol, or an
        extension (permessage-deflate) negotiated, whose frames must be compressed (the
        extensions are settled by the handshake: the writes need not ask again)."""
        protocol = scope.get(SCOPE_KEY)
        if protocol is None or protocol.conn.extensions:
            return None
        return cls(protocol)

    def _can_take(self) -> bool:
        """Open, not closing, writable, and its buffer not over `HIGH_WATER`."""
        protocol, transport, flag = self._protocol, self._transport, self._flag
        return not (protocol.close_sent or self._conn.state is not State.OPEN
                    or transport.is_closing()
                    or not (flag._set if flag is not None else protocol.writable.is_set())
                    or transport.get_write_buffer_size() > HIGH_WATER)

    def write_text(self, head: bytes, body: bytes = b"", tail: bytes = b"") -> bool:
        """Write one text message, `head + body + tail` (the fan-out's: a per-operation
        head, the shared payload and a brace), as one frame (`frame`); or return False
        (nothing written) when this connection can't take it here: closing, or its buffer
        is full."""
        # The fan-out's path, once per socket per event: `_can_take` and `frame`'s reuse
        # of the last frame are written out here (two calls fewer per delivery).
        global written
        protocol, transport, flag = self._protocol, self._transport, self._flag
        if (protocol.close_sent or self._conn.state is not State.OPEN
                or transport.is_closing()
                or not (flag._set if flag is not None else protocol.writable.is_set())
                or transport.get_write_buffer_size() > HIGH_WATER):
            return False
        last = _last
        transport.write(last[3] if body is last[1] and head == last[0] and tail == last[2]
                        else frame(head, body, tail))
        written += 1
        return True

    def put(self, head: bytes, body: bytes) -> bool:
        """`write_text(head, body, b"}")` for the fan-out's loop over a channel's caught-up
        subscribers (`accel.delivery.write_caught_up`), asking only what lives on this
        wire, its protocol and its transport: whether its operation is over (`stopped`,
        not the operation's task), its close sent, its transport closing or paused, its
        buffer over `HIGH_WATER`. Not the websockets connection's `state`: uvicorn's
        protocol leaves OPEN only in callbacks that also set `close_sent` or close the
        transport (a close received, sent, a parser error, the ping timeout, shutdown),
        so no fan-out runs between the two. (Written out here, not a shared helper: the
        fan-out's path, once per socket per event.)"""
        global written
        protocol, transport, flag = self._protocol, self._transport, self._flag
        if (self.stopped or protocol.close_sent or transport.is_closing()
                or not (flag._set if flag is not None else protocol.writable.is_set())
                or transport.get_write_buffer_size() > HIGH_WATER):
            return False
        last = _last
        transport.write(last[3] if body is last[1] and head == last[0] and last[2] == b"}"
                        else frame(head, body, b"}"))
        written += 1
        return True

    def put_many(self, head: bytes, bodies: list[bytes]) -> bool:
        """`put` of each of `bodies`, in order, in one write (one system call), asking what
        `put` asks; the frames made once for a run of equal backlogs (`frames`' reuse,
        written out here as `put` writes out `frame`'s)."""
        global written
        protocol, transport, flag = self._protocol, self._transport, self._flag
        if (self.stopped or protocol.close_sent or transport.is_closing()
                or not (flag._set if flag is not None else protocol.writable.is_set())
                or transport.get_write_buffer_size() > HIGH_WATER):
            return False
        last = _last_many
        transport.write(last[3] if bodies == last[0] and head == last[1] and last[2] == b"}"
                        else frames(head, bodies, b"}"))
        written += len(bodies)
        return True

    def write_texts(self, head: bytes, bodies: list[bytes], tail: bytes = b"") -> bool:
        """`write_text(head, body, tail)` for each of `bodies`, in order, in one write (one
        system call)."""
        global written
        if not self._can_take():
            return False
        self._transport.write(frames(head, bodies, tail))
        written += len(bodies)
        return True


def release_scope_headers(scope: Scope) -> None:
    """The plain part of `release_handshake`: the scope's own list of headers, emptied."""
    headers = scope.get("headers")
    if isinstance(headers, list):
        headers.clear()


def release_handshake(scope: Scope) -> None:
    """Let go of the handshake once the socket is accepted and authenticated (a few KB per
    socket), as uWebSockets frees its upgrade request: read what you need of
    the request's headers while connecting (`get_context`, `on_ws_connect`); afterwards
    `scope["headers"]` is empty.

    uvicorn's sansio protocol keeps the handshake's request and response for the
    connection's whole life, though it reads them only until the response is sent (only
    once it has been). The request object itself stays referenced by the websockets
    parser's frame (a local of its suspended generator), so its headers are emptied in
    place; so is the scope's list, which Starlette's `WebSocket.headers` reads."""
    release_scope_headers(scope)
    protocol = scope.get(SCOPE_KEY)
    if protocol is not None and protocol.handshake_complete:
        if protocol.request is not None:
            protocol.request.headers.clear()
        protocol.request = protocol.response = None


class Flag:
    """What uvicorn's protocol uses of its `writable` asyncio.Event (`set`, `clear`,
    `is_set`, `wait`), without the Event's deque of waiters (~0.8 KB) while nobody waits:
    the transport is writable almost always."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if not self._set:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            finally:  # cancelled: gone now, not at the next set()
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)
        return True


def _utf8(parts: list[bytes]) -> bool:
    """Whether a message's frames (`parts`) are valid UTF-8; ASCII is checked without
    decoding."""
    data = b"".join(parts)
    if data.isascii():
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def assigned_attributes(cls: type[Any]) -> tuple[str, ...]:
    """The instance attributes `cls`'s code assigns (`self.x = ...`, read from its source),
    but none that is also a name of the class (a method, a property): what a subclass may
    keep in `__slots__`. An attribute left out (its source unreadable, a new one assigned
    some other way) still works: it goes to the instance's `__dict__`."""
    source = source_of(cls)
    if not source:
        return ()
    names = set(re.findall(r"self\.(\w+)\s*(?::[^=\n]+)?=(?!=)", source))
    return tuple(sorted(n for n in names if not hasattr(cls, n)))


if WebSocketsSansIOProtocol is not None:

    class LeanWebSocketProtocol(server.WebSocketProtocol):
        """uvicorn's websockets-sansio protocol with its send timeout (admission's
        `WebSocketProtocol`), and with `Inbox` and `Flag` for its receive
        queue and its writable event: the same behaviour, ~4 KB less per open socket; and a
        text message that is not UTF-8 closed (1007) as uvicorn closes it, but logged in one
        line rather than with a traceback, which a client could have written per message.
        The size cap is uvicorn's `ws_max_size`, which this protocol's parser enforces
        (an oversized frame is refused from its header: close 1009).
        `giftgraph serve` runs uvicorn with it (`WS_PROTOCOL`).

        Its attributes are slots: uvicorn's protocol sets 37, past the 30 an instance
        dictionary shares its keys for, and that dictionary alone was ~1.6 KB a socket."""

        __slots__ = assigned_attributes(WebSocketsSansIOProtocol)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.queue = Inbox()  # type: ignore[assignment]
            self.writable = Flag()  # type: ignore[assignment]

        def send_receive_event_to_app(self) -> None:
            if self.curr_msg_data_type == "text" and not self.close_sent \
                    and not _utf8(self.frames):
                self.frames = []
                self.logger.info("%s:%s - WebSocket text message is not UTF-8: closed 1007",
                                 *(self.client or ("?", "?")))
                self.conn.send_close(1007, "Invalid UTF-8")
                self.handle_parser_exception()  # uvicorn's own close after a bad frame
                return
            super().send_receive_event_to_app()

    WS_PROTOCOL = f"{__name__}:LeanWebSocketProtocol"
else:  # pragma: no cover - no websockets library: uvicorn picks what it has
    WS_PROTOCOL = "auto"


def shape_ok() -> bool:
    """Whether uvicorn's websockets-sansio protocol still has every field and method this
    module uses (its fields are assigned in its `__init__`, read from its source), and
    websockets' connection state is still `State.OPEN`. False: logged, and the plain ASGI
    sends and uvicorn's own protocol serve every socket."""
    if WebSocketsSansIOProtocol is None or State is None:
        log.warning("accel: uvicorn's websockets-sansio protocol is not importable; "
                    "direct socket writes are off")
        return False
    source = source_of(WebSocketsSansIOProtocol)
    missing = [f for f in PROTOCOL_FIELDS if f"self.{f}" not in source]
    missing += [m for m in PROTOCOL_METHODS if not callable(getattr(WebSocketsSansIOProtocol,
                                                                    m, None))]
    if not hasattr(State, "OPEN"):
        missing.append("websockets.protocol.State.OPEN")
    if server.ws_unsupported() is not None:
        missing.append(f"what admission's protocol uses ({server.ws_unsupported()})")
    if missing:
        log.warning("accel: uvicorn's websockets-sansio protocol changed shape (missing %s); "
                    "direct socket writes are off", ", ".join(missing))
        return False
    return True


def ws_protocol(enabled: bool) -> str:
    """The `--ws` protocol for uvicorn: the lean one when the fast paths are on and
    uvicorn's protocol has the expected shape, else admission's (uvicorn's own with the
    send timeout: `server.ws_protocol`)."""
    return WS_PROTOCOL if enabled and WS_PROTOCOL != "auto" and shape_ok() \
        else server.ws_protocol()


def capture(scope: Scope, send: Send) -> None:
    """Remember which uvicorn protocol a WebSocket's `send` is (`Wire.of` finds it): call
    with uvicorn's own `send`, before any middleware wraps it. A protocol instance that
    lacks one of the connection's fields is not recorded (plain sends)."""
    if WebSocketsSansIOProtocol is not None:
        protocol = getattr(send, "__self__", None)
        if isinstance(protocol, WebSocketsSansIOProtocol) \
                and all(hasattr(protocol.conn, f) for f in CONNECTION_FIELDS):
            scope[SCOPE_KEY] = protocol
