"""`Inbox` and `Flag`: the lean stand-ins for the asyncio.Queue and asyncio.Event that
uvicorn's sansio WebSocket protocol keeps per socket (`LeanWebSocketProtocol`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from giftgraph.accel.wire import Flag, Inbox, assigned_attributes

# Tests of a fast path itself (giftgraph.accel): skipped with GIFTGRAPH_ACCEL=false.
pytestmark = pytest.mark.accel


async def test_inbox_is_first_in_first_out_and_wakes_its_reader() -> None:
    inbox = Inbox()
    inbox.put_nowait({"type": "websocket.connect"})
    assert not inbox.empty()
    assert inbox.qsize() == 1
    assert await inbox.get() == {"type": "websocket.connect"}
    assert inbox.empty()

    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()  # waits: nothing has arrived
    inbox.put_nowait("a")
    inbox.put_nowait("b")
    assert await reader == "a"
    assert await inbox.get() == "b"


async def test_inbox_refuses_a_second_reader_and_survives_a_cancelled_one() -> None:
    inbox = Inbox()
    first = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already waiting"):
        await inbox.get()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    # The cancelled reader left nothing behind: the next one gets the next message.
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("after")
    assert await asyncio.wait_for(second, 1) == "after"


async def test_flag_is_set_until_cleared_and_releases_every_waiter() -> None:
    flag = Flag()
    assert flag.is_set()
    assert await asyncio.wait_for(flag.wait(), 1) is True  # set: no waiting

    flag.clear()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    cancelled = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not any(w.done() for w in [*waiters, cancelled])
    cancelled.cancel()
    await asyncio.sleep(0)
    assert len(flag._waiters or ()) == 3  # the cancelled one left at once
    flag.set()  # the others are all released
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True] * 3
    assert cancelled.cancelled()
    assert flag.is_set()


class _Transport:
    """What `Wire` uses of a transport, recording each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def _wire() -> tuple[Any, _Transport]:
    from websockets.protocol import State

    from giftgraph.accel.wire import Wire

    transport = _Transport()
    conn = SimpleNamespace(state=State.OPEN, extensions=[])
    protocol = SimpleNamespace(transport=transport, conn=conn, close_sent=False,
                               writable=Flag())
    return Wire(protocol), transport


def _messages(data: bytes) -> list[bytes]:
    """The payloads of the final, unmasked text frames in `data` (RFC 6455 5.2)."""
    out, pos = [], 0
    while pos < len(data):
        assert data[pos] == 0x81  # FIN, text
        n, pos = data[pos + 1], pos + 2
        assert not n & 0x80  # a server's frames are unmasked
        if n == 126:
            n, pos = int.from_bytes(data[pos:pos + 2], "big"), pos + 2
        elif n == 127:
            n, pos = int.from_bytes(data[pos:pos + 8], "big"), pos + 8
        out.append(data[pos:pos + n])
        pos += n
    return out


def test_a_fan_out_frames_each_message_once_and_never_mixes_two_up() -> None:
    """The fan-out writes one event's payload to every socket: the frame is made once for
    a run of sockets whose operation has the same id, and a socket with another id, another
    payload (however equal its bytes) or a backlog gets its own message, exactly."""
    wire_a, a = _wire()
    wire_b, b = _wire()
    payload = b'{"data":{"listEvents":{"seq":"7"}}' + b" " * 300  # a 2-byte length
    one, two = b'{"id":"1","type":"next","payload":', b'{"id":"2","type":"next","payload":'
    assert wire_a.write_text(one, payload, b"}")
    assert wire_b.write_text(bytes(one), payload, b"}")  # equal head, another object
    assert a.writes[0] is b.writes[0]  # framed once, the same bytes for both sockets
    assert _messages(a.writes[0]) == [one + payload + b"}"]
    assert wire_b.write_text(two, payload, b"}")
    assert _messages(b.writes[1]) == [two + payload + b"}"]
    copy = bytes(bytearray(payload)).replace(b'"7"', b'"8"')
    assert wire_a.write_text(one, copy, b"}")  # another event's payload
    assert _messages(a.writes[1]) == [one + copy + b"}"]
    short = b'{"id":"1"}'
    assert wire_a.write_text(short)
    assert _messages(a.writes[2]) == [short]
    # A backlog: every event in order, in one write, the same bytes for the next socket.
    assert wire_a.write_texts(one, [payload, copy], b"}")
    assert wire_b.write_texts(one, [payload, copy], b"}")
    assert a.writes[3] is b.writes[2]  # framed once
    assert _messages(a.writes[3]) == [one + payload + b"}", one + copy + b"}"]
    backlog = [payload, copy]
    assert wire_a.write_texts(one, backlog, b"}")
    backlog[1] = short  # the caller's list changes: what was framed does not
    assert wire_b.write_texts(one, backlog, b"}")
    assert _messages(a.writes[4]) == [one + payload + b"}", one + copy + b"}"]
    assert _messages(b.writes[3]) == [one + payload + b"}", one + short + b"}"]
    assert wire_b.write_texts(two, [payload, copy], b"}")
    assert _messages(b.writes[4]) == [two + payload + b"}", two + copy + b"}"]


def test_a_socket_that_cannot_take_a_message_is_not_written() -> None:
    from websockets.protocol import State

    wire, transport = _wire()
    wire._protocol.writable.clear()  # its buffer is full: the caller falls back to the send
    assert not wire.write_text(b"{}")
    wire._protocol.writable.set()
    wire._conn.state = State.CLOSING
    assert not wire.write_texts(b"{", [b"}"])
    assert transport.writes == []


def test_an_empty_message_is_still_a_frame() -> None:
    """Also as the first message a process frames (a fresh interpreter: nothing framed
    before it to be reused)."""
    script = ("from giftgraph.accel import wire; print(wire.frame(b'', b'', b'').hex(), "
              "wire.frames(b'', [b''], b'').hex())")
    out = subprocess.run([sys.executable, "-c", script],  # noqa: S603 - our own interpreter
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["8100", "8100"]
    wire, transport = _wire()
    assert wire.write_text(b"")
    assert transport.writes == [b"\x81\x00"]


class _Assigns:
    def __init__(self) -> None:
        self.plain = 1
        self.annotated: dict[str, int] = {}
        self.first = self.second = None
        self.count = 0
        self.count += 1
        self.method = None  # the class's own name: never a slot

    def method(self) -> bool:
        return self.plain == 1


def test_assigned_attributes_are_the_ones_the_source_assigns() -> None:
    """What `LeanWebSocketProtocol` keeps in slots: read from uvicorn's source, names of
    the class itself left out; a class without source gives none (all in `__dict__`)."""
    assert assigned_attributes(_Assigns) == ("annotated", "count", "first", "plain", "second")
    assert assigned_attributes(type("Dynamic", (), {})) == ()


class _Closable(_Transport):
    """A transport that records its close (`is_closing` after it), for uvicorn's protocol."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def get_extra_info(self, name: str) -> None:
        return None

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def set_write_buffer_limits(self, *args: Any, **kwargs: Any) -> None: ...


HANDSHAKE = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def _client_frame(opcode: int, payload: bytes, masked: bool = True) -> bytes:
    """A final client frame of `payload` (under 126 bytes), masked with a zero key."""
    return bytes([0x80 | opcode, (0x80 if masked else 0) | len(payload)]) \
        + (b"\0\0\0\0" if masked else b"") + payload


@pytest.mark.parametrize("how", ["close received", "app's close", "parser error",
                                 "ping timeout", "shutdown"])
async def test_a_connection_that_leaves_open_has_its_close_sent_or_its_transport_closing(
        how: str) -> None:
    """`Wire.put` (the fan-out's loop) does not ask the websockets connection's state: with
    the installed uvicorn, each way a connection leaves OPEN also sends its close or closes
    its transport within the same callback, so the wire refuses to write from then on."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState
    from websockets.protocol import State

    from giftgraph.accel.switch import ws_protocol
    from giftgraph.accel.wire import Wire

    close_now = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await close_now.wait()
        await send({"type": "websocket.close", "code": 1000})

    config = Config(app=app, ws=ws_protocol(True), log_config=None, lifespan="off")
    config.load()
    assert config.ws_protocol_class is not None
    protocol: Any = config.ws_protocol_class(config=config, server_state=ServerState(),
                                             app_state={}, _loop=asyncio.get_running_loop())
    transport = _Closable()
    protocol.connection_made(transport)
    protocol.data_received(HANDSHAKE)
    for _ in range(20):
        await asyncio.sleep(0)
    assert protocol.conn.state is State.OPEN
    assert transport.writes  # the 101 was sent
    wire = Wire(protocol)
    assert wire.put(b"{", b"}")
    if how == "close received":
        protocol.data_received(_client_frame(0x8, (1000).to_bytes(2, "big")))
    elif how == "app's close":
        close_now.set()
        for _ in range(20):
            await asyncio.sleep(0)
    elif how == "parser error":
        protocol.data_received(_client_frame(0x1, b"unmasked", masked=False))
    elif how == "ping timeout":
        protocol.keepalive_timeout()
    else:
        protocol.shutdown()
    assert protocol.conn.state is not State.OPEN
    assert protocol.close_sent or transport.is_closing()
    before = len(transport.writes)
    assert not wire.put(b"{", b"}")
    assert len(transport.writes) == before
    protocol.connection_lost(None)
    for _ in range(20):
        await asyncio.sleep(0)
