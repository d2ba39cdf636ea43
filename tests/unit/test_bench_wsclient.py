"""The benchmark's lean WebSocket client (bench/wsclient.py) against a real `websockets`
server: what it counts must be exactly what the server sent."""

from __future__ import annotations

import asyncio

import pytest
from bench import wsclient
from websockets.asyncio.server import ServerConnection, serve


async def _server(handler, **kwargs):  # type: ignore[no-untyped-def]
    server = await serve(handler, "127.0.0.1", 0, compression=None, **kwargs)
    port = server.sockets[0].getsockname()[1]  # type: ignore[index]
    return server, f"ws://127.0.0.1:{port}/x"


async def test_messages_of_every_length_encoding_and_fragmented_ones_arrive_whole() -> None:
    sizes = [0, 125, 126, 300, 65535, 65536, 200_000]
    echoed: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        echoed.append(await ws.recv())  # the client's masked frame, unmasked right
        for n in sizes:
            await ws.send("x" * n)
        await ws.send(["frag", "mented", " message"])  # three frames, one message
        await ws.send("é€😀")  # multi-byte UTF-8 goes through as bytes
        await ws.recv()

    server, url = await _server(handler)
    got: list[bytes] = []
    async with server:
        sock = await wsclient.connect(url, got.append)
        sock.send_text(b'{"hello": "server"}')
        for _ in range(100):
            if len(got) == len(sizes) + 2:
                break
            await asyncio.sleep(0.02)
        sock.send_text(b"bye")
        await sock.close()
    assert echoed == ['{"hello": "server"}']
    assert [len(m) for m in got[:-2]] == sizes
    assert got[-2] == b"fragmented message"
    assert got[-1].decode() == "é€😀"
    assert sock.error is None


async def test_pings_are_answered_and_a_server_close_ends_the_socket() -> None:
    pong_seen = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        waiter = await ws.ping(b"are you there")
        await asyncio.wait_for(waiter, 2)  # resolved only by the client's matching pong
        pong_seen.set()
        await ws.close(4000, "done")

    server, url = await _server(handler)
    async with server:
        sock = await wsclient.connect(url, lambda _: None)
        await asyncio.wait_for(sock.closed, 3)
    assert pong_seen.is_set()
    assert sock.error is None


async def test_a_refused_subprotocol_fails_the_connection() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    server, url = await _server(handler, subprotocols=["something-else"])
    async with server:
        with pytest.raises(ConnectionError):
            await wsclient.connect(url, lambda _: None, subprotocol="graphql-transport-ws",
                                   wait=3)


async def test_the_subprotocol_is_negotiated() -> None:
    chosen: list[str | None] = []

    async def handler(ws: ServerConnection) -> None:
        chosen.append(ws.subprotocol)
        await ws.send("ok")
        await ws.wait_closed()

    server, url = await _server(handler, subprotocols=["graphql-transport-ws"])
    got: list[bytes] = []
    async with server:
        sock = await wsclient.connect(url, got.append, subprotocol="graphql-transport-ws")
        for _ in range(50):
            if got:
                break
            await asyncio.sleep(0.02)
        await sock.close()
    assert chosen == ["graphql-transport-ws"]
    assert got == [b"ok"]
