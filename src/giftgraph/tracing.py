"""OpenTelemetry traces, configured by the standard variables; off when unset.

- `OTEL_TRACES_EXPORTER`: `otlp` (OTLP over HTTP, `OTEL_EXPORTER_OTLP_ENDPOINT` and the
  exporter's other standard variables), `console`, or `none` / unset (off: nothing is
  wrapped or instrumented, so tracing costs nothing).
- `OTEL_SERVICE_NAME` (default `giftgraph`) and `OTEL_RESOURCE_ATTRIBUTES`, read by the SDK.

What is traced, with the official instrumentations where one exists: the HTTP request and
the socket (ASGI middleware, which honours a W3C `traceparent`), the GraphQL operation with
its parse, validate and execute steps (`operation_extension`: the operation's span is the
current one while it runs, so every SQL statement (SQLAlchemy's instrumentation) and an
event's publish (`publishing`) nest under it), and a channel's fan-out (`trace_fan_out`),
linked to the publish spans of its events when this instance published them. A socket
operation has a span of its own, in a trace of its own (or in the trace of a `traceparent`
the connection request carried).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from starlette.types import ASGIApp

EXPORTERS = ("otlp", "console", "none")


class TracingConfigError(ValueError):
    """An `OTEL_*` variable this server cannot honour."""


@dataclass(frozen=True, slots=True)
class Tracing:
    """A configured tracer provider (one per app)."""

    provider: TracerProvider
    tracer: trace.Tracer
    # The publish span of each event recently published here, by seq: its fan-out (a span
    # of its own, in the hub's task) links to it. Bounded: a fan-out comes soon or never.
    published: OrderedDict[int, trace.SpanContext] = field(default_factory=OrderedDict)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """The app inside OpenTelemetry's ASGI middleware: a span per request and socket."""
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        return OpenTelemetryMiddleware(app, tracer_provider=self.provider)

    def instrument_engine(self, sync_engine: Any) -> None:
        """A span per SQL statement of this engine (`AsyncEngine.sync_engine`): the official
        instrumentation's engine tracer, attached to this engine alone. (Its instrumentor
        declares SQLAlchemy < 2.1 and instruments nothing on 2.1; it is also one per
        process and patches `create_engine` everywhere, where each app has its own.)"""
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
        from opentelemetry.metrics import NoOpMeterProvider

        tracer = self.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
        usage = NoOpMeterProvider().get_meter("giftgraph").create_up_down_counter(
            "db.client.connections.usage")
        EngineTracer(tracer, sync_engine, usage, enable_commenter=False)  # type: ignore[no-untyped-call]

    def schema_extension(self) -> Any:
        """The operation's span, current while it runs (its parse, validate and execute
        spans, its SQL statements and its publish nest under it): `operation_extension`."""
        return operation_extension(self.tracer)

    def shutdown(self) -> None:
        self.provider.shutdown()


def exporter_for(environ: Mapping[str, str]) -> SpanExporter | None:
    """The exporter `OTEL_TRACES_EXPORTER` names; None when tracing is off."""
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")
             if n.strip()]
    if not names or names == ["none"]:
        return None
    if len(names) > 1 or names[0] not in EXPORTERS:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER: expected one of {', '.join(EXPORTERS)}, "
            f"got {environ['OTEL_TRACES_EXPORTER']!r}")
    if names[0] == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def configure(environ: Mapping[str, str] | None = None, *,
              exporter: SpanExporter | None = None, batch: bool = True) -> Tracing | None:
    """Tracing from the standard variables (or the given exporter, for tests); None when off."""
    environ = os.environ if environ is None else environ
    exporter = exporter if exporter is not None else exporter_for(environ)
    if exporter is None:
        return None
    attributes = {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": "giftgraph"}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch
                                else SimpleSpanProcessor(exporter))
    return Tracing(provider=provider, tracer=provider.get_tracer("giftgraph"))


@contextmanager
def _span(tracing: Tracing, name: str, attributes: dict[str, Any]) -> Iterator[trace.Span]:
    with tracing.tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


def current_trace_id() -> str | None:
    """The current trace's id (32 hex digits), when a span is recording."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


PUBLISHED_KEPT = 1024  # publish spans remembered for their fan-outs' links


def publishing(tracing: Tracing | None, events: list[Any]) -> AbstractContextManager[Any]:
    """The publish span of `events` (`giftgraph.publish`), remembered by each event's seq for
    the fan-out's link; nothing when tracing is off."""
    return nullcontext() if tracing is None else _publishing(tracing, events)


@contextmanager
def _publishing(tracing: Tracing, events: list[Any]) -> Iterator[None]:
    with _span(tracing, "giftgraph.publish", {"events": len(events), "topics": sorted(
            {e.topic for e in events})}) as current:
        context = current.get_span_context()
        kept = tracing.published
        for event in events:
            if isinstance(seq := getattr(event, "seq", None), int):
                kept[seq] = context
        while len(kept) > PUBLISHED_KEPT:
            kept.popitem(last=False)
        yield


def _links(tracing: Tracing, items: list[Any]) -> list[trace.Link]:
    """Links to the publish spans of `items` (those published by this instance, lately)."""
    found: dict[int, trace.SpanContext] = {}
    for item in items:
        seq = getattr(item, "seq", None)
        if isinstance(seq, int) and (context := tracing.published.get(seq)) is not None:
            found[context.span_id] = context
    return [trace.Link(context) for context in found.values()]


def trace_fan_out(tracing: Tracing, hub: Any) -> None:
    """A span around each of `hub`'s fan-outs (one event, or a backlog of several, to a
    channel's subscribers): the hub's own methods, wrapped on this instance, so the hub's
    loop is left as it is."""
    one, many = hub._fan_out, hub._fan_out_many

    async def fan_out(feed: Any, item: Any) -> None:
        with tracing.tracer.start_as_current_span(
                "giftgraph.fanout", links=_links(tracing, [item]),
                attributes={"events": 1, "subscribers": len(feed.subscribers)}):
            await one(feed, item)

    async def fan_out_many(feed: Any, items: list[Any]) -> None:
        with tracing.tracer.start_as_current_span(
                "giftgraph.fanout", links=_links(tracing, items),
                attributes={"events": len(items), "subscribers": len(feed.subscribers)}):
            await many(feed, items)

    hub._fan_out, hub._fan_out_many = fan_out, fan_out_many


@dataclass(frozen=True, slots=True)
class SocketTrace:
    """What a socket's operations are traced under, taken at its connect (its handshake's
    headers are let go of then): the `traceparent` its connection request carried, if any
    (else none: each operation a trace of its own), and a link to the span current at its
    connect, if any. (A socket has no span of its own: it goes past the middleware,
    giftgraph.web.routing.)"""

    parent: Any
    links: tuple[trace.Link, ...]


def socket_trace(scope: Mapping[str, Any]) -> SocketTrace:
    """The trace of a socket's operations, from its handshake `scope`."""
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
    socket = trace.get_current_span().get_span_context()
    return SocketTrace(propagate.extract(carrier),
                       (trace.Link(socket),) if socket.is_valid else ())


def operation_extension(tracer: trace.Tracer) -> Any:
    """A Strawberry extension (public hooks only) tracing each operation: its span
    (`{type} {name}`, with `graphql.operation.type` and `graphql.operation.name`), current
    while it runs, and a span for each of its parse, validate and execute steps. Only in the
    schema while tracing is on."""
    from strawberry.extensions import SchemaExtension

    def _named(span: trace.Span, execution: Any) -> None:
        try:
            kind = execution.operation_type.value
        except Exception:  # no document, or no such operation: stays "GraphQL operation"
            return
        name = execution.operation_name
        span.update_name(f"{kind} {name}" if name else kind)
        span.set_attribute("graphql.operation.type", kind)
        if name:
            span.set_attribute("graphql.operation.name", name)

    class OperationSpan(SchemaExtension):
        def on_operation(self) -> Iterator[None]:
            execution = self.execution_context
            request = getattr(execution.context, "request", None)
            on_socket = getattr(getattr(request, "state", None), "trace", None)
            parent, links = (on_socket.parent, on_socket.links) \
                if isinstance(on_socket, SocketTrace) else (None, ())
            current = tracer.start_span("GraphQL operation", context=parent, links=links,
                                        kind=trace.SpanKind.SERVER,
                                        attributes={"component": "graphql"})
            token = otel_context.attach(trace.set_span_in_context(current))
            try:
                yield
            finally:
                _named(current, execution)
                result = execution.result
                if result is not None and getattr(result, "errors", None):
                    current.set_status(trace.StatusCode.ERROR)
                current.end()
                # A stream closed from another task than the one that ran it: that task's
                # context is not ours to restore.
                if trace.get_current_span() is current:
                    otel_context.detach(token)

        def on_parse(self) -> Iterator[None]:
            with tracer.start_as_current_span("GraphQL parse"):
                yield

        def on_validate(self) -> Iterator[None]:
            with tracer.start_as_current_span("GraphQL validate"):
                yield

        def on_execute(self) -> Iterator[None]:
            _named(trace.get_current_span(), self.execution_context)
            with tracer.start_as_current_span("GraphQL execute"):
                yield

    return OperationSpan
