"""The background task behind a shared feed (a channel's pump, a family's dashboard, a
topic's presence): started by its first user, stopped by its last."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any


class Ready:
    """What a worker sets once it is ready, for the callers that wait for it (a waiter
    cancelled meanwhile leaves it to the others). Not an asyncio.Event: the worker's frame
    holds it for the feed's whole life, and an Event's deque of waiters is ~0.8 KB."""

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def set(self) -> None:
        if not self._done.done():  # (cancelled: its waiter was)
            self._done.set_result(None)

    async def wait(self) -> None:
        await asyncio.shield(self._done)


async def start_worker(registry: dict[Any, Any], key: Any, holder: Any,
                       run: Callable[[Ready], Coroutine[Any, Any, None]],
                       idle: Callable[[], bool]) -> None:
    """Start `holder.task` (`run(ready)`) for the holder registered under `key`, and wait
    until it is ready. Cancelled meanwhile (a client that completes at once), the holder is
    unregistered and its task stopped, unless someone else uses it by then (`idle`)."""
    ready = Ready()
    # In a context of its own: a copy of the caller's (the first subscriber's operation,
    # its DirectSink) would keep that socket, and all its handler holds, for as long as
    # the worker runs, however long after that socket closed.
    task = holder.task = asyncio.get_running_loop().create_task(
        run(ready), context=contextvars.Context())
    try:
        await ready.wait()
    except BaseException:
        if idle() and registry.get(key) is holder:
            del registry[key]
            task.cancel()
        raise


async def stop_worker(registry: dict[Any, Any], key: Any, holder: Any) -> None:
    """Its last user is gone: unregister the holder under `key` and stop its task. The
    task's own CancelledError ends here; the caller's (it was cancelled while waiting for
    the task to stop) goes on up."""
    task: asyncio.Task[None] | None = holder.task
    if registry.get(key) is holder:
        del registry[key]
        assert task is not None
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
