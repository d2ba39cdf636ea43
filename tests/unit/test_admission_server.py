"""The contract of giftgraph.admission.server with the installed uvicorn, and its fallback
when uvicorn changed shape (the behaviour itself: tests/integration/test_connections.py)."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import subprocess
import sys
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from giftgraph.admission import server
from giftgraph.config import Settings


async def _app(scope: object, receive: object, send: object) -> None:
    raise NotImplementedError


@pytest.fixture
def bounds(monkeypatch: pytest.MonkeyPatch) -> server.Limits:
    wanted = server.Limits(max_connections=7, header_timeout=3.5, idle_timeout=1.5)
    monkeypatch.setattr(server, "limits", lambda: wanted)
    return wanted


async def test_installed_uvicorn_has_every_name_relied_on(bounds: server.Limits) -> None:
    assert server.unsupported() is None
    assert server.serve_protocol() == server.HTTP_PROTOCOL
    config = Config(app=_app, http=server.HttpProtocol, log_config=None, lifespan="off")
    protocol = server.HttpProtocol(config=config, server_state=ServerState(), app_state={},
                                   _loop=asyncio.get_running_loop())
    for name in server.ATTRIBUTES:
        assert hasattr(protocol, name), name
    assert protocol.connections is not None
    assert protocol.timeout_keep_alive == bounds.idle_timeout  # uvicorn's timer, our value
    assert server._enabled


def test_changed_uvicorn_is_served_plain_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    class Changed:  # no timeout_keep_alive_handler, no data_received
        def connection_made(self) -> None: ...
        def connection_lost(self) -> None: ...

    monkeypatch.setattr(server, "_Base", Changed)
    with caplog.at_level(logging.WARNING, logger=server.log.name):
        assert server.serve_protocol() == "auto"
    assert "data_received, timeout_keep_alive_handler" in caplog.text


def test_instances_without_uvicorn_attributes_turn_the_bounds_off(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(server, "_shape_checked", False)
    monkeypatch.setattr(server, "_enabled", True)
    with caplog.at_level(logging.WARNING, logger=server.log.name):
        assert not server._check_shape(object())
    assert not server._enabled
    assert "connection bounds off" in caplog.text


def test_cap_is_kept_below_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(_env_file=None, max_connections=4096, db_pool_size=10,  # type: ignore[call-arg]
                        db_max_overflow=10, http_header_timeout_seconds=4,
                        http_idle_timeout_seconds=2)
    monkeypatch.setattr(server, "get_settings", lambda: settings)
    monkeypatch.setattr(server, "raise_nofile", lambda: 1024)
    server.limits.cache_clear()
    try:
        assert server.limits() == server.Limits(1024 - server.RESERVED_FDS - 20, 4, 2)
        monkeypatch.setattr(server, "raise_nofile", lambda: None)  # unlimited
        server.limits.cache_clear()
        assert server.limits().max_connections == 4096
    finally:
        server.limits.cache_clear()


def test_refusals_go_to_the_app_state_or_are_kept() -> None:
    counted: list[str] = []

    class Refusals:
        def count(self, bound: str) -> None:
            counted.append(bound)

    server.count({server.STATE_KEY: Refusals()}, "connections")
    assert counted == ["connections"]
    before = server.unreported["idle_timeout"]
    server.count({}, "idle_timeout")
    assert server.unreported["idle_timeout"] == before + 1


def test_open_file_limit_is_raised_to_the_hard_limit() -> None:
    """In a process started with a low soft limit (as a shell's `ulimit -Sn 256`)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"hard limit {hard}: nothing to raise to")
    script = ("import resource; from giftgraph.admission.server import raise_nofile; "
              "print(raise_nofile(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run(  # noqa: S603 - our own interpreter, fixed args
        [sys.executable, "-c", script],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
        capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert out == [str(hard), str(hard)]


class Transport:
    """A connection's transport, as much of it as a WebSocket protocol's start reads."""

    def get_extra_info(self, _: str) -> None:
        return None

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None: ...


async def ws_connected(ws: str) -> Any:
    """An instance of the WebSocket protocol `ws` (a `--ws` value), its connection made."""
    config = Config(app=_app, ws=ws, log_config=None, lifespan="off")
    config.load()
    assert config.ws_protocol_class is not None
    protocol: Any = config.ws_protocol_class(config=config, server_state=ServerState(),
                                             app_state={}, _loop=asyncio.get_running_loop())
    protocol.connection_made(Transport())
    return protocol


@pytest.mark.parametrize("accel", [True, False])
async def test_a_websockets_transport_is_found_from_uvicorns_send(accel: bool) -> None:
    """The WebSocket protocol `serve` runs (the lean one, or admission's without the fast
    paths) keeps its connection's transport where `websocket_transport` reads it, so that a
    socket cut for what it owes is reset in both modes, and is itself the socket's flow
    control; a wrapped `send` keeps neither, and uvicorn's own protocol no flow control."""
    from giftgraph.accel.switch import ws_protocol

    protocol = await ws_connected(ws_protocol(accel))
    scope: dict[str, Any] = {"type": "websocket"}
    server.websocket_transport(scope, protocol.send)
    assert scope[server.TRANSPORT_KEY] is protocol.transport
    assert scope[server.FLOW_KEY] is protocol

    async def wrapped(message: object) -> None:
        await protocol.send(message)

    other: dict[str, Any] = {"type": "websocket"}
    server.websocket_transport(other, wrapped)
    assert server.TRANSPORT_KEY not in other
    assert server.FLOW_KEY not in other

    plain = await ws_connected(server.PLAIN_WS_PROTOCOL)
    uvicorns: dict[str, Any] = {"type": "websocket"}
    server.websocket_transport(uvicorns, plain.send)
    assert uvicorns[server.TRANSPORT_KEY] is plain.transport
    assert server.FLOW_KEY not in uvicorns


@pytest.mark.parametrize("accel", [True, False])
async def test_a_sockets_protocol_is_its_flow_control(accel: bool) -> None:
    """As uvicorn's FlowControl of an HTTP connection: `write_paused` while its transport
    has paused writing, `drain()` until it resumes or the connection is lost; and
    `when_drained` calls back then (at once when not paused), each callback once."""
    from giftgraph.accel.switch import ws_protocol

    protocol = await ws_connected(ws_protocol(accel))
    assert isinstance(protocol, server.WebSocketProtocol)
    called: list[str] = []
    assert not protocol.write_paused
    await asyncio.wait_for(protocol.drain(), 1)  # not paused: at once
    protocol.when_drained(lambda: called.append("now"))
    assert called == ["now"]
    protocol.pause_writing()
    assert protocol.write_paused
    draining = asyncio.ensure_future(protocol.drain())
    protocol.when_drained(lambda: called.append("resumed"))
    await asyncio.sleep(0.01)
    assert not draining.done()
    assert called == ["now"]
    protocol.resume_writing()
    await asyncio.wait_for(draining, 1)
    assert not protocol.write_paused
    assert called == ["now", "resumed"]
    protocol.pause_writing()  # again; and the client leaves meanwhile
    draining = asyncio.ensure_future(protocol.drain())
    protocol.when_drained(lambda: called.append("lost"))
    await asyncio.sleep(0.01)
    assert not draining.done()
    protocol.connection_lost(ConnectionResetError())
    await asyncio.wait_for(draining, 1)
    assert not protocol.write_paused
    assert called == ["now", "resumed", "lost"]
    protocol.resume_writing()  # (never after a loss; nothing is called twice)
    assert called == ["now", "resumed", "lost"]


def test_sockets_get_the_send_timeout_in_both_modes() -> None:
    """The send timeout is admission's, not a fast path's: without the fast paths `serve`
    runs uvicorn's websockets-sansio protocol with it, and the fast paths' builds on it."""
    from giftgraph.accel import wire
    from giftgraph.accel.switch import ws_protocol

    assert server.ws_unsupported() is None
    assert ws_protocol(False) == server.WS_PROTOCOL
    assert ws_protocol(True) == wire.WS_PROTOCOL
    assert issubclass(wire.LeanWebSocketProtocol, server.WebSocketProtocol)


def test_a_changed_websocket_protocol_is_served_plain_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delattr(server._WsBase, "pause_writing")
    with caplog.at_level(logging.WARNING, logger=server.log.name):
        assert server.ws_protocol() == server.PLAIN_WS_PROTOCOL
    assert "pause_writing" in caplog.text


async def test_a_socket_whose_client_takes_nothing_is_reset_after_the_send_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Admission's WebSocket protocol arms a `SendWatch` when its transport pauses: with no
    progress within the timeout the connection is reset and `send_timeout` counted."""
    quick = server.Limits(max_connections=10, header_timeout=5, idle_timeout=5,
                          send_timeout=0.05)
    monkeypatch.setattr(server, "limits", lambda: quick)
    config = Config(app=_app, ws=server.WS_PROTOCOL, log_config=None, lifespan="off")
    config.load()
    refusals: dict[str, int] = {}

    class Counted:
        def count(self, bound: str) -> None:
            refusals[bound] = refusals.get(bound, 0) + 1

    protocol: Any = server.WebSocketProtocol(
        config=config, server_state=ServerState(), app_state={server.STATE_KEY: Counted()},
        _loop=asyncio.get_running_loop())
    transport = Held()
    with transport.socket:
        protocol.connection_made(transport)
        protocol.pause_writing()
        await asyncio.sleep(0.2)
    assert transport.aborted
    assert refusals == {"send_timeout": 1}


async def test_a_socket_whose_client_takes_nothing_of_its_close_is_reset(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After uvicorn's ping timeout the socket's close waits for its buffer to drain, also
    one under the high-water mark that never paused writing: `send_timeout` later it is
    reset. Meanwhile the app's sends are told the client has gone, not uvicorn's
    "Unexpected ASGI message" error (adversary, 2026-11-29)."""
    from uvicorn.protocols.utils import ClientDisconnected

    quick = server.Limits(max_connections=10, header_timeout=5, idle_timeout=5,
                          send_timeout=0.05)
    monkeypatch.setattr(server, "limits", lambda: quick)
    config = Config(app=_app, ws=server.WS_PROTOCOL, log_config=None, lifespan="off")
    config.load()
    protocol: Any = server.WebSocketProtocol(
        config=config, server_state=ServerState(), app_state={},
        _loop=asyncio.get_running_loop())
    transport = Closing()
    with transport.socket:
        protocol.connection_made(transport)
        protocol.handshake_complete = True  # as after the 101
        protocol.keepalive_timeout()  # its pings unanswered: close sent, transport closing
        assert protocol.close_sent
        with pytest.raises(ClientDisconnected):
            await protocol.send({"type": "websocket.send", "text": "a result"})
        assert not transport.aborted
        await asyncio.sleep(0.2)
    assert transport.aborted


class Held(Transport):
    """A transport whose client takes nothing of what it holds (on a socket of its own,
    not connected)."""

    aborted = False

    def __init__(self) -> None:
        self.socket = socket.socket()

    def get_extra_info(self, name: str) -> object:
        return self.socket if name == "socket" else None

    def get_write_buffer_size(self) -> int:
        return 1 << 20

    def abort(self) -> None:
        self.aborted = True


class Closing(Held):
    """A transport with a few bytes its client never takes (under the high-water mark:
    writing never paused), which closes only once they are taken."""

    closing = False

    def get_write_buffer_size(self) -> int:
        return 2048

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None: ...

    def close(self) -> None:
        self.closing = True
