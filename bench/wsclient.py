"""A lean WebSocket client for the benchmark's subscriber processes (RFC 6455, client side).

The subscribers share the machine's 2 cores with the server they measure. Through the
`websockets` library each received message costs ~20 µs of Python (its frame parser, the
message assembler, a queue and an `async for` step per message): with 1,000 subscribers
of a list taking 30 events/s, the client processes used 60% of a core, CPU the server then
lacked. This client is an `asyncio.Protocol` that parses the server's frames in
`data_received` and hands each text message to a callback: a few µs per message.

It does what the subscribers need and no more: the opening handshake (checking the 101
status, `Sec-WebSocket-Accept` and the subprotocol), masked text frames out, unmasked
frames in (text, with fragments joined; ping answered with pong; close answered and the
socket closed), no extensions. A protocol error closes the socket and is recorded in
`error`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
from collections.abc import Callable
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0

try:
    from websockets.speedups import apply_mask as _c_mask  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - pure-Python websockets build
    _c_mask = None


def mask(data: bytes, key: bytes) -> bytes:
    if _c_mask is not None:
        return bytes(_c_mask(data, key))
    n = len(data)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A final, masked frame (clients must mask, RFC 6455 5.3)."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    key = os.urandom(4)
    return head + key + mask(payload, key)


class LeanSocket(asyncio.Protocol):
    """One client connection. `on_text(payload)` gets each text message's bytes."""

    def __init__(self, on_text: Callable[[bytes], None]) -> None:
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # a failure to open is raised by connect(); if it was cancelled meanwhile, let the
        # future's exception go unremarked ("Future exception was never retrieved")
        self.opened.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: str | None = None
        self.close_code: int | None = None  # the server's close frame's code, if it sent one
        self._key = ""
        self._protocol: str | None = None
        self._head = b""  # response bytes before the handshake is complete
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._open = False
        self._close_sent = False

    # -- handshake -----------------------------------------------------------------------

    def handshake(self, url: str, subprotocol: str | None) -> None:
        assert self.transport is not None
        parts = urlsplit(url)
        self._key = base64.b64encode(os.urandom(16)).decode()
        self._protocol = subprotocol
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}",
                 "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {self._key}", "Sec-WebSocket-Version: 13"]
        if subprotocol:
            lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def _handshake_response(self, data: bytes) -> bytes | None:
        """The bytes after the response head once it is complete and valid, else None."""
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > 16384:
                self._fail("handshake response too long")
            return None
        head, rest = self._head[:end].decode("latin-1"), self._head[end + 4:]
        self._head = b""
        status, *header_lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in header_lines)}
        digest = hashlib.sha1(self._key.encode() + GUID, usedforsecurity=False).digest()
        accept = base64.b64encode(digest).decode()
        if status.split(" ")[1:2] != ["101"]:
            self._fail(f"handshake refused: {status}")
        elif headers.get("sec-websocket-accept") != accept:
            self._fail("bad Sec-WebSocket-Accept")
        elif self._protocol and headers.get("sec-websocket-protocol") != self._protocol:
            self._fail(f"subprotocol not accepted: {headers.get('sec-websocket-protocol')}")
        elif headers.get("sec-websocket-extensions"):
            self._fail("an extension was negotiated that this client does not offer")
        else:
            self._open = True
            if not self.opened.done():
                self.opened.set_result(None)
            return rest
        return None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(self.error or f"connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self._open:
            if self.transport is None or self.transport.is_closing():
                return
            rest = self._handshake_response(data)
            if not rest:
                return
            data = rest
        buf = self._buf
        buf += data
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b1 & 0x80:
                return self._fail("the server masked a frame")
            if b0 & 0x70:
                return self._fail("reserved bits set (no extension was negotiated)")
            n, head = b1 & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            end = pos + head + n
            if end > size:
                break
            payload = bytes(buf[pos + head:end])
            pos = end
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
            if not self._open:
                return
        del buf[:pos]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == TEXT and fin and not self._fragments:
            self.on_text(payload)
        elif opcode in (TEXT, BINARY, CONTINUATION):
            if (opcode == CONTINUATION) != bool(self._fragments):
                return self._fail("unexpected continuation frame")
            self._fragments.append(payload)
            if fin:
                message, self._fragments = b"".join(self._fragments), []
                self.on_text(message)
        elif opcode == PING:
            self._send(PONG, payload)
        elif opcode == CLOSE:
            if self.close_code is None and len(payload) >= 2:
                self.close_code = int.from_bytes(payload[:2], "big")
            if not self._close_sent:  # the server's close: answer it (else it is our echo)
                self._send(CLOSE, payload[:2])
            self._open = False
            assert self.transport is not None
            self.transport.close()
        elif opcode != PONG:
            self._fail(f"unknown opcode {opcode}")

    # -- sending -------------------------------------------------------------------------

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(opcode, payload))
            self._close_sent = self._close_sent or opcode == CLOSE

    def send_text(self, payload: bytes) -> None:
        self._send(TEXT, payload)

    async def close(self, wait: float = 2.0) -> None:
        """Send a normal close and wait (up to `wait` s) for the server to end it."""
        if self._open:
            self._send(CLOSE, (1000).to_bytes(2, "big"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), wait)
        if self.transport is not None:
            self.transport.close()

    def _fail(self, why: str) -> None:
        self.error = self.error or why
        self._open = False
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()


async def connect(url: str, on_text: Callable[[bytes], None], *, subprotocol: str | None = None,
                  local_addr: tuple[str, int] | None = None, wait: float = 60) -> LeanSocket:
    """An open connection to `url` (ws://host:port/path)."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    _, sock = await asyncio.wait_for(loop.create_connection(
        lambda: LeanSocket(on_text), parts.hostname, parts.port or 80, local_addr=local_addr),
        wait)
    sock.handshake(url, subprotocol)
    try:
        await asyncio.wait_for(asyncio.shield(sock.opened), wait)
    except BaseException:
        if sock.transport is not None:
            sock.transport.close()
        raise
    return sock
