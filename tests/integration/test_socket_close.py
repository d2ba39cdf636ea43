"""A client's close is answered at once, also while the server is writing to that socket
(a `since` replay, a backlog the client has not read yet): the server's close frame (1000,
the client's code echoed) follows what was written before it, nothing follows it, and the
connection ends. Against a uvicorn server in this process, on the fast or the plain paths
(GIFTGRAPH_ACCEL).

The answer is in the client's socket; the client must read to see it. The `websockets`
client stops reading its socket once more than `max_queue` (16) messages wait unread, and
its `close()` then waits out its close timeout and reports 1006: a client that closes
a replay it never read (an attack's client did) sees no answer from any server. The
clients here read what they are sent, as a browser does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time

import websockets
from websockets.exceptions import ConnectionClosed

from tests.integration.test_live import PROTOCOL
from tests.integration.test_live_features import Server
from tests.integration.test_replay import serving
from tests.support import text_frame, ws_upgrade

EVENTS = 300
NOTES = "n" * 2000  # per event: 20 replays of 300 (12 MB) fill any socket's buffers
REPLAY = ("subscription($s: String) { familyEvents(since: $s) { seq kind node { id "
          "... on Person { notes } } } }")
BOUND = 2.0  # seconds for the close to be answered (measured: under 0.05)
CLOSE = 0x8


async def _family_with_events(srv: Server, email: str) -> str:
    """A new family's token, its log `EVENTS` events long."""
    token, _ = await srv.signup(email)
    for _ in range(EVENTS - 1):  # the signUp's own event, then one per change
        await srv.gql("mutation($n: String!) { createPerson(input: {name: \"P\", notes: $n})"
                      " { id } }", {"n": NOTES}, token)
    return token


async def _close_during_replay(srv: Server, token: str, after: int
                               ) -> tuple[websockets.ClientConnection, float, int]:
    """A client that reads its socket subscribes since 0 and closes once it has `after`
    events: the connection, how long its close took, and the events it got."""
    ws = await websockets.connect(srv.base.replace("http", "ws") + "/graphql",
                                  subprotocols=[PROTOCOL],  # type: ignore[list-item]
                                  close_timeout=5)
    await ws.send(json.dumps({"type": "connection_init",
                              "payload": {"authorization": f"Bearer {token}"}}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert ack["type"] == "connection_ack", ack
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
        "query": REPLAY, "variables": {"s": "0"}}}))
    received = 0
    reached = asyncio.Event()

    async def read() -> None:
        nonlocal received
        with contextlib.suppress(ConnectionClosed):  # an unanswered close: asserted after
            async for text in ws:
                message = json.loads(text)
                assert message["type"] == "next", message
                received += 1
                if received == after:
                    reached.set()

    reading = asyncio.create_task(read())
    await asyncio.wait_for(reached.wait(), 10)
    started = time.monotonic()
    await ws.close()
    took = time.monotonic() - started
    await asyncio.wait_for(reading, 5)
    return ws, took, received


async def test_a_close_sent_during_a_since_replay_is_answered_at_once(
        database_url: str) -> None:
    """The client closes while a replay of 300 events is being sent (after its first
    event, and in a later page): the server's close comes back within the bound, with
    code 1000, and the client's close is clean."""
    async with serving(database_url) as srv:
        token = await _family_with_events(srv, "close-in-replay@example.com")
        for after in (1, 120):
            ws, took, received = await _close_during_replay(srv, token, after)
            assert ws.protocol.close_rcvd is not None, \
                f"no close frame from the server (closed after event {after}: {took:.2f} s)"
            assert ws.protocol.close_rcvd.code == 1000, ws.protocol.close_rcvd
            assert ws.close_code == 1000
            assert took < BOUND, f"close answered after {took:.2f} s (after event {after})"
            assert after <= received <= EVENTS, received


def _frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The server's complete (unmasked) frames in `data`, as (opcode, payload), and the
    bytes left over."""
    frames, i = [], 0
    while len(data) - i >= 2:
        n, j = data[i + 1] & 0x7F, i + 2
        if n >= 126:
            width = 2 if n == 126 else 8
            if len(data) - j < width:
                break
            n, j = int.from_bytes(data[j:j + width], "big"), j + width
        if len(data) - j < n:
            break
        frames.append((data[i] & 0x0F, data[j:j + n]))
        i = j + n
    return frames, data[i:]


async def test_a_close_behind_an_unread_backlog_is_the_last_frame_sent(
        database_url: str) -> None:
    """A socket with 20 replays that reads nothing (small receive buffer: the server's
    writes back up and wait) closes: once it reads, all it finds after what had been
    written is the server's close (1000), then the end of the connection, within the
    bound; no replay goes on writing to it after its close."""
    loop = asyncio.get_running_loop()
    async with serving(database_url) as srv:
        token = await _family_with_events(srv, "close-behind-backlog@example.com")
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", int(srv.base.rsplit(":", 1)[1])))
            await loop.sock_sendall(sock, ws_upgrade(protocol=PROTOCOL))
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
                assert chunk, data
                data += chunk
            data = data.split(b"\r\n\r\n", 1)[1]
            await loop.sock_sendall(sock, text_frame(json.dumps(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})))
            while not _frames(data)[0]:  # the ack
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
                assert chunk, data
                data += chunk
            for k in range(20):
                await loop.sock_sendall(sock, text_frame(json.dumps(
                    {"id": str(k), "type": "subscribe",
                     "payload": {"query": REPLAY, "variables": {"s": "0"}}})))
            await asyncio.sleep(1)  # the replays fill the buffers and wait on the socket
            close = b"\x88\x82\0\0\0\0" + struct.pack("!H", 1000)  # masked, mask of zeros
            await loop.sock_sendall(sock, close)
            await asyncio.sleep(0.5)  # the server has the close while its writes wait
            # Now read it all, in larger reads than the small buffer gave.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            started = time.monotonic()
            ended = False
            while not ended:
                try:
                    chunk = await asyncio.wait_for(
                        loop.sock_recv(sock, 65536),
                        max(0.01, started + BOUND - time.monotonic()))
                except TimeoutError:
                    break
                ended = not chunk
                data += chunk
            took = time.monotonic() - started
    frames, rest = _frames(data)
    opcodes = [opcode for opcode, _ in frames]
    assert CLOSE in opcodes, f"no close frame in {len(frames)} frames"
    at = opcodes.index(CLOSE)
    assert set(opcodes[:at]) == {0x1}, set(opcodes[:at])  # text: the ack, the replays
    # Closed while its replays had more to write (all 20 in full: 6,000 more frames).
    assert 1 < at < 1 + 20 * EVENTS, at
    assert opcodes[at + 1:] == [], f"{len(opcodes) - at - 1} frames after the close"
    assert rest == b"", f"{len(rest)} bytes after the close"
    assert struct.unpack("!H", frames[at][1][:2])[0] == 1000, frames[at][1]
    assert ended, f"the connection was still open {took:.2f} s after reading began"
