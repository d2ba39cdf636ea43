"""An operation's scope in its ContextVar (giftgraph.context): ended wherever its block
ends, also in another context than it began in."""

from __future__ import annotations

import asyncio
import contextvars
import gc
from collections.abc import AsyncIterator
from typing import Any

from giftgraph.context import _OPERATION, begin_operation, end_operation


def test_an_operation_ended_in_another_context_raises_nothing() -> None:
    state: Any = object()
    token = contextvars.copy_context().run(begin_operation, state)
    end_operation(token)  # here, another context: nothing of that one to restore
    assert _OPERATION.get() is None


async def test_a_generator_closed_by_the_loops_finalizer_runs_its_whole_finally() -> None:
    """A subscription's generator left unfinished when its socket was cut is closed by the
    event loop's async-generator finalizer, in a task (and context) of its own: the reset
    raised there ("created in a different Context", logged as a task exception never
    retrieved) and skipped the rest of the `finally` (adversary, 2026-11-29)."""
    ended: list[str] = []

    async def stream() -> AsyncIterator[int]:
        token = begin_operation(object())  # type: ignore[arg-type]
        try:
            yield 1
            yield 2
        finally:
            end_operation(token)
            ended.append("rest of the finally")

    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: errors.append(context))

    async def consume() -> None:
        agen = stream()
        await agen.__anext__()  # left suspended inside the block

    await asyncio.create_task(consume())
    gc.collect()  # the generator unreferenced: the loop's finalizer closes it
    for _ in range(5):
        await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert ended == ["rest of the finally"]
    assert not errors
