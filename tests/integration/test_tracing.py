"""OpenTelemetry wiring (giftgraph.tracing in create_app): the span tree of a query and of
a mutation that publishes, W3C traceparent propagation, the errors' traceId, and nothing
wrapped when tracing is off."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from giftgraph import app as app_module
from giftgraph import tracing
from giftgraph.app import create_app, traced
from tests.conftest import GQL, make_settings, sign_up
from tests.integration.test_live import PROTOCOL, WsClient
from tests.integration.test_live_features import Server, _item, running

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
async def app_traced(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient,
                                                           InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    app = create_app(make_settings(database_url, result_cache_bytes=0),
                     tracing=tracing.configure({}, exporter=exporter, batch=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, exporter


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    names = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        span = by_id[parent.span_id]
        names.append(span.name)
        parent = span.parent
    return names


def _spans(exporter: InMemorySpanExporter) -> tuple[list[ReadableSpan],
                                                    dict[int, ReadableSpan]]:
    spans = list(exporter.get_finished_spans())
    return spans, {s.context.span_id: s for s in spans}


def _under(span: ReadableSpan, ancestor: ReadableSpan, by_id: dict[int, ReadableSpan]
           ) -> bool:
    """Whether `ancestor` is `span`'s parent, or its parent's, and so on."""
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        if parent.span_id == ancestor.context.span_id:
            return True
        parent = by_id[parent.span_id].parent
    return False


def _sql(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.attributes and "db.statement" in s.attributes]


async def test_a_query_span_tree(app_traced: tuple[httpx.AsyncClient, InMemorySpanExporter]
                                 ) -> None:
    client, exporter = app_traced
    alice = await sign_up(GQL(client))
    exporter.clear()
    r = await client.post("/graphql", json={"query": "query Family { family { name } }"},
                          headers={"Authorization": f"Bearer {alice.token}"})
    assert r.json()["data"]["family"]["name"]
    spans, by_id = _spans(exporter)
    assert len({s.context.trace_id for s in spans}) == 1  # one trace
    http = [s for s in spans if s.parent is None]
    assert [s.name for s in http] == ["POST /graphql"]
    operation = next(s for s in spans if s.name == "query Family")
    assert dict(operation.attributes or {})["graphql.operation.type"] == "query"
    assert dict(operation.attributes or {})["graphql.operation.name"] == "Family"
    assert _ancestors(operation, by_id)[-1] == "POST /graphql"
    for step in ("GraphQL parse", "GraphQL validate", "GraphQL execute"):
        assert next(s for s in spans if s.name == step).parent.span_id \
            == operation.context.span_id, step  # type: ignore[union-attr]
    sql = _sql(spans)
    assert sql, [(s.name, dict(s.attributes or {})) for s in spans]
    # The statements that run the operation nest under it; authentication, before it,
    # under the request.
    assert any(_under(s, operation, by_id) for s in sql)
    assert all(_under(s, operation, by_id) or s.parent.span_id == http[0].context.span_id
               for s in sql)  # type: ignore[union-attr]


async def test_a_mutation_publishes_in_its_trace(
        app_traced: tuple[httpx.AsyncClient, InMemorySpanExporter]) -> None:
    client, exporter = app_traced
    alice = await sign_up(GQL(client))
    exporter.clear()
    r = await client.post("/graphql", json={
        "query": 'mutation { createList(input: {name: "L", kind: IDEAS}) { id } }'},
        headers={"Authorization": f"Bearer {alice.token}"})
    assert r.json()["data"]["createList"]["id"]
    spans, by_id = _spans(exporter)
    operation = next(s for s in spans if s.name == "mutation")
    assert _ancestors(operation, by_id) == ["POST /graphql"]
    publish = next(s for s in spans if s.name == "giftgraph.publish")
    assert _under(publish, operation, by_id)
    insert = [s for s in _sql(spans) if s.name == "INSERT"]
    assert insert
    assert all(_under(s, operation, by_id) for s in insert)


async def test_traceparent_is_honoured_and_errors_carry_the_trace_id(
        app_traced: tuple[httpx.AsyncClient, InMemorySpanExporter]) -> None:
    client, exporter = app_traced
    r = await client.post("/graphql", json={"query": "{ me { id } }"},
                          headers={"traceparent": TRACEPARENT})
    error = r.json()["errors"][0]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert error["extensions"]["traceId"] == TRACE
    spans, _ = _spans(exporter)
    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE}
    # A request error (refused before any operation) too.
    bad = await client.post("/graphql", content=b"{", headers={
        "traceparent": TRACEPARENT, "Content-Type": "application/json"})
    assert bad.json()["errors"][0]["extensions"]["traceId"] == TRACE


async def test_off_when_unset(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    app = create_app(make_settings(database_url))
    state: Any = app.state.giftgraph
    assert state.tracing is None
    assert all(m.cls is not traced for m in app.user_middleware)  # nothing wrapped
    # ... and nothing of tracing in the schema's extensions (every operation runs them).
    from giftgraph.schema.schema import build_schema

    names = [getattr(e, "__name__", type(e).__name__)
             for e in build_schema(make_settings(database_url)).extensions]
    assert "OperationSpan" not in names
    on = tracing.configure({}, exporter=InMemorySpanExporter())
    assert on is not None
    assert "OperationSpan" in [getattr(e, "__name__", "") for e in
                               build_schema(make_settings(database_url), tracing=on).extensions]


@pytest.fixture
async def served_traced(database_url: str, monkeypatch: pytest.MonkeyPatch
                        ) -> AsyncIterator[tuple[Server, InMemorySpanExporter]]:
    """The app under uvicorn, traced into memory (sockets need a real server)."""
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(app_module, "configure_tracing",
                        lambda: tracing.configure({}, exporter=exporter, batch=False))
    async with running(make_settings(database_url, result_cache_bytes=0)) as srv:
        yield srv, exporter


async def _finished(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    async with asyncio.timeout(10):
        while True:
            found = [s for s in exporter.get_finished_spans() if s.name == name]
            if found:
                return found[-1]
            await asyncio.sleep(0.02)


async def test_socket_operations_and_a_fan_out(
        served_traced: tuple[Server, InMemorySpanExporter]) -> None:
    srv, exporter = served_traced
    token, _ = await srv.signup("s@example.com")
    gl, item = await _item(srv, token)
    ws = await websockets.connect(srv.base.replace("http", "ws") + "/graphql",
                                  subprotocols=[PROTOCOL],  # type: ignore[list-item]
                                  additional_headers={"traceparent": TRACEPARENT})
    client = WsClient(ws)
    await ws.send(json.dumps({"type": "connection_init",
                              "payload": {"authorization": f"Bearer {token}"}}))
    assert (await client.receive())["type"] == "connection_ack"
    try:
        # A query over the socket: its own span, in the trace of the connection request's
        # traceparent; its statements under it.
        query = await client.subscribe("query Family { family { name } }")
        assert (await client.receive())["id"] == query
        operation = await _finished(exporter, "query Family")
        assert format(operation.context.trace_id, "032x") == TRACE
        assert operation.parent is not None
        assert operation.parent.span_id == 0x00f067aa0ba902b7
        spans, by_id = _spans(exporter)
        assert any(_under(s, operation, by_id) for s in _sql(spans))
        # A subscription, and the fan-out of the event a mutation publishes to it.
        before = srv.subscribers()
        assert (await client.receive())["type"] == "complete"  # the query's
        await client.subscribe("subscription Watch($l: ID!) { listEvents(listId: $l) "
                               "{ kind } }", {"l": gl})
        await srv.listening(before + 1)
        await srv.gql("mutation Pick($i: ID!) { setListItemStatus(id: $i, status: SELECTED)"
                      " { id } }", {"i": item}, token)
        assert (await client.receive())["payload"]["data"]["listEvents"]["kind"] \
            == "STATUS_CHANGED"
        fan_out = await _finished(exporter, "giftgraph.fanout")
        assert dict(fan_out.attributes or {})["subscribers"] >= 1
        spans, by_id = _spans(exporter)
        pick = next(s for s in spans if s.name == "mutation Pick")
        publish = [s for s in spans if s.name == "giftgraph.publish" and _under(s, pick, by_id)]
        assert [_ancestors(s, by_id)[:2] for s in publish] == [["GraphQL execute",
                                                                "mutation Pick"]]
        # The fan-out, a trace of its own (the hub's task), links to the publish.
        assert [link.context.span_id for link in fan_out.links] == [publish[0].context.span_id]
    finally:
        await ws.close()
    # The subscription's span (its setup, with the fast paths on; its whole life without
    # them) is in the connection's trace too.
    watch = await _finished(exporter, "subscription Watch")
    assert format(watch.context.trace_id, "032x") == TRACE
    # Without a traceparent, a socket's operation is a trace of its own.
    plain = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    try:
        await plain.subscribe("query Again { family { name } }")
        await plain.receive()
        again = await _finished(exporter, "query Again")
        assert again.parent is None
        assert format(again.context.trace_id, "032x") != TRACE
    finally:
        await plain.ws.close()
