"""`giftgraph.admission.sockets`: message size, nesting and id checks, per-user slots; and
the message cap reaching uvicorn's protocol as `giftgraph serve` starts it."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from giftgraph.admission import Refusals
from giftgraph.admission.sockets import (
    INVALID,
    MAX_DEPTH,
    MAX_ID_CHARS,
    TOO_BIG,
    MessageRefused,
    ReplayTurns,
    admit,
    oversized,
    parse_message,
    too_deep,
    valid_id,
)
from giftgraph.live.hub import Hub
from tests.support import WS_PROTOCOL


def depth(value: Any) -> int:
    """Levels of arrays and objects in `value` (the reference: plain recursion)."""
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


# Strings full of what could be mistaken for structure: brackets, quotes, backslashes.
TRICKY = st.text(alphabet='[]{}"\\,: aé\n', max_size=8)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TRICKY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TRICKY, inner, max_size=4),
    max_leaves=60,
)


@settings(max_examples=400, deadline=None)
@given(JSON, st.integers(min_value=1, max_value=12))
def test_nesting_is_measured_exactly(value: Any, limit: int) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=1)):
        assert too_deep(text, limit) == (depth(value) > limit), text


def test_nesting_at_the_bound() -> None:
    def nested(n: int) -> str:
        return '{"a": ' + "[" * (n - 1) + "]" * (n - 1) + "}"

    assert not too_deep(nested(MAX_DEPTH))
    assert too_deep(nested(MAX_DEPTH + 1))
    assert too_deep(nested(1000))
    assert not too_deep('{"s": "' + "[" * 5000 + '"}')  # brackets in a string: no structure


def test_size_is_counted_in_utf8_bytes() -> None:
    assert not oversized("a" * 1024, 1024)
    assert oversized("a" * 1025, 1024)
    assert not oversized("é" * 512, 1024)  # 2 bytes each
    assert oversized("é" * 513, 1024)
    assert oversized("\U0001f381" * 257, 1024)  # 4 bytes each
    assert not oversized("\U0001f381" * 256, 1024)


def _refusals() -> tuple[Refusals, CollectorRegistry]:
    registry = CollectorRegistry()
    return Refusals(registry), registry


def _count(registry: CollectorRegistry, bound: str) -> float:
    value = registry.get_sample_value("giftgraph_admission_refused_total", {"bound": bound})
    return float(value or 0)


@pytest.mark.parametrize(("text", "code", "reason"), [
    ('{"type": "ping", "payload": "' + "x" * 5000 + '"}', TOO_BIG, "Message too big"),
    ("not json", INVALID, "WebSocket message must be valid JSON"),
    ('{"type": "ping", "payload": ' + "[" * 2000 + "]" * 2000 + "}", INVALID,
     "WebSocket message must be valid JSON"),  # orjson's own limit, 1024 levels
    ('{"type": "ping", "payload": ' + "[" * 999 + "]" * 999 + "}", INVALID,
     "WebSocket message nested too deeply"),
    ('{"type": "ping", "payload": "\ud800"}', INVALID, "WebSocket message must be valid JSON"),
])
def test_refused_messages(text: str, code: int, reason: str) -> None:
    refusals, registry = _refusals()
    with pytest.raises(MessageRefused) as refused:
        parse_message(text, 4096, refusals)
    assert (refused.value.code, refused.value.reason) == (code, reason)
    assert _count(registry, "socket_message_bytes") == (code == TOO_BIG)


def test_a_message_within_the_bounds_is_parsed() -> None:
    message = {"id": "1", "type": "subscribe",
               "payload": {"query": "{ me { id } }", "variables": {"a": [[{"b": "[{"}]]}}}
    assert parse_message(json.dumps(message), 1024) == message


def test_operation_ids() -> None:
    assert valid_id("1")
    assert valid_id("i" * MAX_ID_CHARS)
    assert not valid_id("i" * (MAX_ID_CHARS + 1))
    assert not valid_id(1)
    assert not valid_id(None)


def test_a_slot_is_given_back_once_and_the_limit_counts_open_sockets() -> None:
    hub = Hub("memory://", "postgresql://unused/db")
    refusals, registry = _refusals()
    user, ws = uuid.uuid4(), [object() for _ in range(3)]
    first = admit(hub, user, ws[0], 2, refusals)  # type: ignore[arg-type]
    second = admit(hub, user, ws[1], 2, refusals)  # type: ignore[arg-type]
    assert first is not None
    assert second is not None
    assert admit(hub, user, ws[2], 2, refusals) is None  # type: ignore[arg-type]
    assert _count(registry, "sockets_per_user") == 1
    first.release()
    first.release()  # a second release gives nothing back twice
    assert hub.open_sockets(user) == 1
    third = admit(hub, user, ws[2], 2, refusals)  # type: ignore[arg-type]
    assert third is not None
    assert hub.sockets[user] == {ws[1], ws[2]}  # what revocation closes
    second.release()
    third.release()
    assert hub.sockets == {}


def test_giftgraph_serve_caps_messages_in_the_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """`giftgraph serve` passes uvicorn ws_max_size = GIFTGRAPH_MAX_SOCKET_MESSAGE_BYTES, and
    the protocol it runs (`WS_PROTOCOL`) gives it to its parser."""
    from tests.support import serve_options

    options = serve_options(monkeypatch, MAX_SOCKET_MESSAGE_BYTES="5000")
    assert options["ws_max_size"] == 5000
    assert options["ws"] == WS_PROTOCOL

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        pass

    config = uvicorn.Config(app, ws=options["ws"], ws_max_size=options["ws_max_size"])
    config.load()
    state = type("State", (), {"connections": set(), "tasks": set(), "default_headers": []})
    loop = asyncio.new_event_loop()
    try:
        protocol = config.ws_protocol_class(config, state(), {}, _loop=loop)  # type: ignore[misc]
    finally:
        loop.close()
    assert protocol.conn.max_message_size == 5000


def connected_adapter(send: Any) -> Any:
    """The socket adapter of a Starlette WebSocket accepted already, whose server-side
    `send` is `send`."""
    from starlette.websockets import WebSocket, WebSocketState

    from giftgraph.web.sockets import SocketAdapter

    async def receive() -> dict[str, Any]:  # pragma: no cover
        return {"type": "websocket.disconnect", "code": 1000}

    ws = WebSocket({"type": "websocket", "path": "/graphql", "headers": []}, receive, send)
    ws.application_state = WebSocketState.CONNECTED
    view = type("View", (), {"encode_json": staticmethod(json.dumps)})()
    return SocketAdapter(view, ws, ws)  # type: ignore[arg-type]


async def test_a_closed_socket_takes_no_more_sends_or_closes_without_an_error() -> None:
    """Closed by another task (revocation, a refused message), the socket's adapter says
    "disconnected" to a send (Strawberry's handler ends quietly) and closes only once;
    Starlette's own RuntimeError would escape the handler with a traceback."""
    from strawberry.http.exceptions import WebSocketDisconnected

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    adapter = connected_adapter(send)
    await adapter.send_json({"type": "pong"})
    await adapter.close(4403, "Forbidden")
    await adapter.close(4400, "again")  # closed already: nothing sent
    with pytest.raises(WebSocketDisconnected):
        await adapter.send_json({"type": "pong"})
    assert [m["type"] for m in sent] == ["websocket.send", "websocket.close"]
    assert sent[1]["code"] == 4403


async def test_a_close_to_a_client_gone_says_disconnected() -> None:
    """A close the server sends when its client has gone (a cut socket, a reset) is a
    disconnected socket to Strawberry's handler, as a send is: Starlette's 1006
    WebSocketDisconnect escaped the handler as a logged error (a second connection_init,
    closed 4429, on a socket whose client had left: adversary, 2026-11-29)."""
    from strawberry.http.exceptions import WebSocketDisconnected

    async def send(message: dict[str, Any]) -> None:
        raise OSError("connection lost")

    adapter = connected_adapter(send)
    with pytest.raises(WebSocketDisconnected):
        await adapter.close(4429, "Too many initialisation requests")
    await adapter.close(4400, "again")  # gone: nothing more to send, no error


async def test_replay_turns_are_one_per_user_and_kept_only_while_held_or_awaited() -> None:
    """A user's second replay waits for the first's turn, another user's does not; a waiter
    cancelled meanwhile, and a holder done, leave nothing behind."""
    turns = ReplayTurns()
    ann, bob = uuid.uuid4(), uuid.uuid4()
    async with turns.turn(ann):
        waiter = asyncio.create_task(turns.turn(ann).__aenter__())
        await asyncio.sleep(0)
        assert not waiter.done()  # ann's second replay waits for her first
        async with asyncio.timeout(1), turns.turn(bob):  # bob's does not
            assert len(turns) == 2
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert len(turns) == 1
    assert len(turns) == 0


async def test_replay_page_reads_are_bounded_over_all_users_and_turns_take_no_slot() -> None:
    """At most `concurrent` page statements at once over all users (a herd resubscribing
    with since leaves the rest of the pool to requests); the next waits until one ends, a
    waiter cancelled meanwhile takes no slot. Holding a turn (a page being sent to a socket
    that does not read) takes none either: three users' stuck sends block no one's read."""
    turns = ReplayTurns(2)
    ann, bob, cid = (uuid.uuid4() for _ in range(3))
    async with turns.turn(ann), turns.turn(bob), turns.turn(cid):
        async with asyncio.timeout(1), turns.reading(), turns.reading():
            waiting = asyncio.create_task(turns.reading().__aenter__())
            cancelled = asyncio.create_task(turns.reading().__aenter__())
            await asyncio.sleep(0.01)
            assert not waiting.done()
            assert not cancelled.done()
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
        async with asyncio.timeout(1):
            await waiting  # a slot came back
        async with asyncio.timeout(1), turns.reading():  # the cancelled one took none
            pass
        await turns.reading().__aexit__(None, None, None)
    assert len(turns) == 0
    async with asyncio.timeout(1), turns.reading(), turns.reading():
        pass  # both slots free again


async def test_unbounded_replay_page_reads_never_wait() -> None:
    turns = ReplayTurns()
    async with asyncio.timeout(1), turns.reading(), turns.reading(), turns.reading():
        pass
