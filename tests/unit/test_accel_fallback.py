"""giftgraph.accel falls back, logged, when a library changed shape: each fast path checks
what it uses when installed (a missing attribute is simulated here) and stays off; the
plain library path then serves. `GIFTGRAPH_ACCEL=false` turns every piece off."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
import strawberry
from graphql import Executor
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.subscriptions.protocols.graphql_transport_ws import handlers as strawberry_ws

from giftgraph.accel import executor, internals, sockets, wire
from giftgraph.accel import switch as accel
from giftgraph.admission import server
from giftgraph.config import Settings
from giftgraph.schema.execution import ExecutionContext
from giftgraph.schema.schema import build_schema
from giftgraph.web.sockets import TransportWSHandler


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_switch_turns_every_piece_off() -> None:
    fast = accel.install(settings(accel=False))
    assert fast == accel.PLAIN
    assert not fast.any
    assert fast.execution_context_class(True) is ExecutionContext
    assert fast.socket_handler(TransportWSHandler) is TransportWSHandler
    assert accel.ws_protocol(False) == server.WS_PROTOCOL
    scope: dict[str, Any] = {"headers": [(b"a", b"b")]}
    fast.capture(scope, lambda _: None)  # type: ignore[arg-type,return-value]
    assert wire.SCOPE_KEY not in scope
    fast.release_handshake(scope)
    assert scope["headers"] == []


def test_every_piece_is_on_with_the_libraries_pinned() -> None:
    fast = accel.install(settings(accel=True))
    assert fast == accel.FastPaths(executor=True, lean_resolvers=True, sockets=True, wire=True,
                                   hooks=True)
    assert accel.ws_protocol(True) == wire.WS_PROTOCOL


def test_a_schema_built_plain_has_strawberrys_resolvers_and_executor() -> None:
    schema = build_schema(settings(accel=False))
    assert schema.execution_context_class is ExecutionContext
    query = internals.graphql_schema(schema).query_type
    assert query is not None
    assert not hasattr(query.fields["me"].resolve, "lean_call")


def test_executor_falls_back_when_graphql_core_changed(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delattr(Executor, "build_per_event_executor")
    with caplog.at_level(logging.WARNING, "giftgraph.accel"):
        fast = accel.install(settings(accel=True))
    assert not fast.executor
    assert fast.lean_resolvers  # the other pieces are unaffected
    assert "build_per_event_executor" in caplog.text
    assert fast.execution_context_class(True) is ExecutionContext


def test_lean_resolvers_fall_back_when_strawberry_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(GraphQLCoreConverter, "_get_field_exception_handlers")
    fast = accel.install(settings(accel=True))
    assert not fast.lean_resolvers
    assert fast.install_schema(object()) == 0


def test_the_hooks_runner_falls_back_when_strawberrys_stages_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from strawberry.extensions.context import ExtensionContextManagerBase

    monkeypatch.setattr(ExtensionContextManagerBase, "__slots__", ("exit_stack",))
    fast = accel.install(settings(accel=True))
    assert not fast.hooks
    assert fast.executor  # the other pieces are unaffected
    assert build_schema(settings(accel=True), fast).create_extensions_runner(
        None, []).__class__ is SchemaExtensionsRunner  # type: ignore[arg-type]


def test_direct_delivery_falls_back_when_strawberrys_handler_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(strawberry_ws.BaseGraphQLTransportWSHandler, "_send_result_stream")
    fast = accel.install(settings(accel=True))
    assert not fast.sockets
    assert not fast.wire  # direct writes serve only the direct handler
    assert fast.socket_handler(TransportWSHandler) is TransportWSHandler


def test_direct_delivery_falls_back_without_strawberrys_stream_closed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(strawberry_ws, "_OperationStreamClosed")
    assert not sockets.shape_ok()


def test_direct_writes_fall_back_when_uvicorns_protocol_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert wire.WebSocketsSansIOProtocol is not None
    monkeypatch.delattr(wire.WebSocketsSansIOProtocol, "handle_parser_exception")
    fast = accel.install(settings(accel=True))
    assert fast.sockets
    assert not fast.wire
    assert accel.ws_protocol(True) == server.WS_PROTOCOL


def test_a_renamed_uvicorn_field_turns_direct_writes_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A field uvicorn assigns in `__init__` that is gone (renamed) is seen in its source."""
    monkeypatch.setattr(wire, "PROTOCOL_FIELDS", (*wire.PROTOCOL_FIELDS, "close_sent_renamed"))
    assert not wire.shape_ok()


def test_a_protocol_instance_of_another_shape_is_not_captured() -> None:
    assert wire.WebSocketsSansIOProtocol is not None
    protocol = object.__new__(wire.WebSocketsSansIOProtocol)
    protocol.conn = SimpleNamespace(state=None)  # no `extensions`
    scope: dict[str, Any] = {}
    wire.capture(scope, protocol.send)
    assert wire.SCOPE_KEY not in scope
    assert wire.Wire.of(scope) is None


def test_a_check_that_raises_counts_as_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> bool:
        raise AttributeError("renamed")

    monkeypatch.setattr(executor, "shape_ok", broken)
    fast = accel.install(settings(accel=True))
    assert not fast.executor
    assert fast.sockets


def test_internals_fall_back() -> None:
    assert internals.raw_info(SimpleNamespace()) is None
    assert internals.broadcaster_queues(SimpleNamespace()) == 0
    assert internals.broadcaster_queues(SimpleNamespace(_subscribers={"a": [1, 2]})) == 2
    ec = SimpleNamespace(operation_name="Named")
    assert internals.provided_operation_name(ec) == "Named"
    assert internals.missing() == []


SEEN: dict[bool, list[set[str]]] = {True: [], False: []}


@strawberry.type
class Leaf:
    a: int = 1
    b: int = 2


@strawberry.type
class Edge:
    @strawberry.field
    def node(self) -> Leaf:
        return Leaf()


@strawberry.type
class Query:
    @strawberry.field
    def page(self, info: strawberry.Info) -> list[Edge]:
        from giftgraph.schema.lookahead import selected_fields

        assert (internals.raw_info(info) is not None) is True  # the fast path is there
        SEEN[info.context.fast].append(selected_fields(info, "node"))
        SEEN[info.context.fast].append(selected_fields(info))
        return [Edge()]


async def test_lookahead_reads_the_same_either_way() -> None:
    """`selected_fields` over graphql-core's nodes (fast) and over Strawberry's public
    `selected_fields` (plain) give the same names, fragments included."""
    schema = strawberry.Schema(Query)
    document = "{ page { ...E node { b } } } fragment E on Edge { node { a } __typename }"
    for fast in (True, False):
        result = await schema.execute(document, context_value=SimpleNamespace(fast=fast))
        assert not result.errors
    assert SEEN[True] == SEEN[False] == [{"a", "b"}, {"node", "__typename"}]
