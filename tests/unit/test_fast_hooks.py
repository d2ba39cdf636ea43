"""The fast paths' extension runner (giftgraph.accel.hooks) against Strawberry's own: the
same hooks entered and left in the same order, with the same arguments, for each kind of
hook (generator, async generator, plain function, coroutine function, none), on a query, a
refused query and a subscription's results; and our schema uses it when the fast paths
are on."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import pytest
import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner

from giftgraph.accel import hooks
from giftgraph.config import Settings
from giftgraph.schema.schema import build_schema

pytestmark = pytest.mark.accel

LOG: list[tuple[str, ...]] = []


class Generators(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        LOG.append(("gen", "operation", "enter", str(self.execution_context.query)))
        yield
        LOG.append(("gen", "operation", "exit"))

    def on_parse(self) -> Iterator[None]:
        LOG.append(("gen", "parse", "enter"))
        yield
        LOG.append(("gen", "parse", "exit"))

    def on_validate(self) -> Iterator[None]:
        LOG.append(("gen", "validate", "enter"))
        yield
        LOG.append(("gen", "validate", "exit", str(self.execution_context.pre_execution_errors)))

    def on_execute(self) -> Iterator[None]:
        LOG.append(("gen", "execute", "enter"))
        yield
        LOG.append(("gen", "execute", "exit"))

    def on_stream_result(self, result: Any) -> Iterator[None]:
        LOG.append(("gen", "stream", "enter", repr(result.data)))
        yield
        LOG.append(("gen", "stream", "exit"))


class AsyncGenerators(SchemaExtension):
    async def on_operation(self) -> AsyncIterator[None]:
        LOG.append(("agen", "operation", "enter"))
        yield
        LOG.append(("agen", "operation", "exit"))

    async def on_execute(self) -> AsyncIterator[None]:
        LOG.append(("agen", "execute", "enter"))
        yield
        LOG.append(("agen", "execute", "exit"))


class Plain(SchemaExtension):
    def on_validate(self) -> None:  # type: ignore[override]
        LOG.append(("plain", "validate"))

    async def on_execute(self) -> None:  # type: ignore[override]
        LOG.append(("coroutine", "execute"))


class NoHooks(SchemaExtension):
    def get_results(self) -> dict[str, Any]:
        return {"seen": True}


@strawberry.type
class Query:
    @strawberry.field
    def hello(self, name: str) -> str:
        LOG.append(("resolve", name))
        return f"hi {name}"


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def count(self, upto: int) -> AsyncGenerator[int, None]:
        for i in range(upto):
            yield i


class FastSchema(strawberry.Schema):
    def create_extensions_runner(self, execution_context: Any,
                                 extensions: list[Any]) -> SchemaExtensionsRunner:
        return hooks.Runner(execution_context=execution_context, extensions=extensions)


def schemas() -> tuple[strawberry.Schema, strawberry.Schema]:
    extensions: list[Any] = [Generators, AsyncGenerators, Plain, NoHooks]
    return (strawberry.Schema(query=Query, subscription=Subscription, extensions=extensions),
            FastSchema(query=Query, subscription=Subscription, extensions=extensions))


async def run(schema: strawberry.Schema) -> list[tuple[str, ...]]:
    LOG.clear()
    for query in ('{ hello(name: "a") }', "{ hello }", "{ nope }", "{ hello(name: "):
        result = await schema.execute(query)
        LOG.append(("result", repr(result.data), repr(result.errors), repr(result.extensions)))
    stream = await schema.subscribe("subscription { count(upto: 3) }")
    assert not isinstance(stream, strawberry.types.ExecutionResult)
    async for result in stream:
        LOG.append(("next", repr(result.data)))
    return list(LOG)


async def test_the_fast_runner_runs_the_hooks_as_strawberrys_does() -> None:
    plain, fast = schemas()
    expected = await run(plain)
    assert ("gen", "stream", "enter", "{'count': 2}") in expected  # the stream stage ran
    assert ("coroutine", "execute") in expected
    assert ("plain", "validate") in expected
    assert await run(fast) == expected
    assert await run(fast) == expected  # again: from the per-class answers remembered
    assert set(hooks.Operation.makers) >= {Generators, AsyncGenerators, Plain, NoHooks}
    assert hooks.Operation.makers[NoHooks][1] is None


async def test_a_hook_replaced_on_its_class_is_the_one_that_runs() -> None:
    """Strawberry looks a hook up on the class for every operation; so does the fast
    runner, and it does not keep running the hook it resolved first."""
    plain, fast = schemas()
    await run(fast)
    original = Plain.on_validate

    def replaced(self: SchemaExtension) -> None:
        LOG.append(("replaced", "validate"))

    Plain.on_validate = replaced  # type: ignore[method-assign]
    try:
        expected = await run(plain)
        assert ("replaced", "validate") in expected
        assert ("plain", "validate") not in expected
        assert await run(fast) == expected
    finally:
        Plain.on_validate = original  # type: ignore[method-assign]


def test_our_schema_uses_the_fast_runner_when_the_fast_paths_are_on() -> None:
    fast = build_schema(Settings(_env_file=None))  # type: ignore[call-arg]
    plain = build_schema(Settings(_env_file=None, accel=False))  # type: ignore[call-arg]
    assert fast.create_extensions_runner(None, []).__class__ is hooks.Runner  # type: ignore[arg-type]
    assert plain.create_extensions_runner(None, []).__class__ is SchemaExtensionsRunner  # type: ignore[arg-type]
    assert hooks.shape_ok()
