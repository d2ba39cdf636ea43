"""giftgraph.tracing's fan-out span: around each of a hub's fan-outs, the hub's own code
run as it is."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from giftgraph import tracing


class FakeHub:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def _fan_out(self, feed: Any, item: Any) -> None:
        self.seen.append(item)

    async def _fan_out_many(self, feed: Any, items: list[Any]) -> None:
        self.seen.extend(items)


class FakeFeed:
    subscribers = (object(), object())


async def test_each_fan_out_is_a_span() -> None:
    exporter = InMemorySpanExporter()
    traced = tracing.configure({}, exporter=exporter, batch=False)
    assert traced is not None
    hub = FakeHub()
    tracing.trace_fan_out(traced, hub)
    await hub._fan_out(FakeFeed(), 1)
    await hub._fan_out_many(FakeFeed(), [2, 3])
    assert hub.seen == [1, 2, 3]
    spans = exporter.get_finished_spans()
    assert [(s.name, dict(s.attributes or {})) for s in spans] == [
        ("giftgraph.fanout", {"events": 1, "subscribers": 2}),
        ("giftgraph.fanout", {"events": 2, "subscribers": 2})]


def test_off_when_unset() -> None:
    assert tracing.configure({}) is None
    assert tracing.configure({"OTEL_TRACES_EXPORTER": "none"}) is None


class FakeEvent:
    def __init__(self, seq: int, topic: str = "family:1") -> None:
        self.seq = seq
        self.topic = topic


async def test_a_fan_out_links_to_the_publish_of_its_events() -> None:
    exporter = InMemorySpanExporter()
    traced = tracing.configure({}, exporter=exporter, batch=False)
    assert traced is not None
    hub = FakeHub()
    tracing.trace_fan_out(traced, hub)
    with tracing.publishing(traced, [FakeEvent(7), FakeEvent(8)]):
        pass
    await hub._fan_out_many(FakeFeed(), [FakeEvent(7), FakeEvent(8)])
    await hub._fan_out(FakeFeed(), FakeEvent(9))  # published elsewhere: no link
    publish, many, one = exporter.get_finished_spans()
    assert publish.name == "giftgraph.publish"
    assert [link.context.span_id for link in many.links] == [publish.context.span_id]
    assert list(one.links) == []
    with tracing.publishing(None, [FakeEvent(10)]):  # off: nothing
        pass
    assert len(exporter.get_finished_spans()) == 3
