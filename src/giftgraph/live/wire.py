"""Pre-framed WebSocket writes for the event fan-out.

One event goes to thousands of sockets as the same `next` payload (only the operation id
differs). Through the ASGI interface each socket costs a chain of awaits: Starlette's state
checks, uvicorn's `send`, a websockets `Frame` object and its serialization. Here the frame
header and message are put together with two concatenations and written to the socket's
transport: the same bytes the protocol library would write (a final, unmasked,
uncompressed text frame). Gorilla's `PreparedMessage` and uWebSockets' `publish` do the
same. What is left per socket is mostly the `send` system call itself.

It is used only where it is exactly equivalent: uvicorn's websockets-sansio protocol
(its default), an open connection with no extension negotiated (no permessage-deflate)
and no close sent. A socket whose buffer is over `HIGH_WATER` (a client that is not
reading) is not written here: the caller falls back to the awaited ASGI send, in that
subscriber's own task, so one slow client never stalls the others' fan-out.

`WireCapture` (the app's outermost middleware) records the protocol behind each
WebSocket's ASGI `send`; `Wire.of(scope)` finds it again.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.protocol import State
except ImportError:  # pragma: no cover - another server, or no websockets: ASGI sends only
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]
    State = None  # type: ignore[assignment,misc]

SCOPE_KEY = "giftgraph.wire"
HIGH_WATER = 256 * 1024  # bytes buffered for one socket before it counts as not reading


def frame(payload: bytes) -> bytes:
    """A final, unmasked text frame (RFC 6455 5.2) carrying `payload` (valid UTF-8)."""
    n = len(payload)
    if n < 126:
        return b"\x81" + n.to_bytes(1, "big") + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


class Wire:
    """Direct writes to one uvicorn websockets-sansio connection."""

    __slots__ = ("_protocol",)
    written = 0  # messages pre-framed onto a transport, this process (stats, tests)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    @classmethod
    def of(cls, scope: Scope) -> Wire | None:
        """The accepted connection's wire, or None: not uvicorn's sansio protocol, or an
        extension (permessage-deflate) negotiated, whose frames must be compressed."""
        protocol = scope.get(SCOPE_KEY)
        if protocol is None or protocol.conn.extensions:
            return None
        return cls(protocol)

    def _can_take(self) -> bool:
        """Open, uncompressed, not closing, and its buffer not over `HIGH_WATER`."""
        protocol = self._protocol
        transport = protocol.transport
        return not (protocol.close_sent or protocol.conn.state is not State.OPEN
                    or protocol.conn.extensions or transport.is_closing()
                    or not protocol.writable.is_set()
                    or transport.get_write_buffer_size() > HIGH_WATER)

    def write_text(self, payload: bytes) -> bool:
        """Write one text message now, or return False (nothing written) when this
        connection can't take it here: closing, compressed, or its buffer is full."""
        if not self._can_take():
            return False
        self._protocol.transport.write(frame(payload))
        Wire.written += 1
        return True

    def write_texts(self, payloads: list[bytes]) -> bool:
        """`write_text` for several messages, in order, with one write (one system call)."""
        if not self._can_take():
            return False
        self._protocol.transport.write(b"".join([frame(p) for p in payloads]))
        Wire.written += len(payloads)
        return True


def release_handshake(scope: Scope) -> None:
    """Drop the handshake's request and response that uvicorn's sansio protocol keeps for
    the connection's whole life, though it reads them only until the handshake response is
    sent (only once it has been). ~1.8 KB per socket by tracemalloc: the response and its
    headers; the request's headers stay referenced by the websockets parser's frame."""
    protocol = scope.get(SCOPE_KEY)
    if protocol is not None and protocol.handshake_complete:
        protocol.request = protocol.response = None


class WireCapture:
    """Outermost middleware: remembers which uvicorn protocol a WebSocket's `send` is.

    With `sockets`, a WebSocket to one of its paths goes straight to that app, past the
    middleware and the router: their coroutines (CORS, exception handling, routing, all
    pass-throughs for a WebSocket) would otherwise stay suspended for the socket's whole
    life, ~3 KB of each idle connection.
    """

    def __init__(self, app: ASGIApp, sockets: dict[str, ASGIApp] | None = None) -> None:
        self.app = app
        self.sockets = sockets or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        if WebSocketsSansIOProtocol is not None:
            protocol = getattr(send, "__self__", None)
            if isinstance(protocol, WebSocketsSansIOProtocol):
                scope[SCOPE_KEY] = protocol
        app = self.sockets.get(scope["path"]) if not scope.get("root_path") else None
        await (app or self.app)(scope, receive, send)
