"""A live subscription's mailbox (giftgraph.live.queries.Watcher): only the newest result is
kept (a slow reader skips to it), and never the result it sent last."""

from __future__ import annotations

import asyncio
from typing import Any

from giftgraph.live.frames import LiveFrame, Outcome
from giftgraph.live.queries import Watcher


def outcome(n: int, errors: list[dict[str, Any]] | None = None) -> Outcome:
    return Outcome.of({"persons": {"totalCount": n}}, errors or [])


async def test_a_slow_reader_gets_the_newest_result_only() -> None:
    watcher = Watcher(ctx=None, interval=0)  # type: ignore[arg-type]
    watcher.mark(outcome(0))
    for n in (1, 2, 3):
        watcher.put(outcome(n))
    assert await watcher.next() == outcome(3)
    assert watcher.item == outcome(3)


async def test_never_the_same_result_twice_in_a_row() -> None:
    watcher = Watcher(ctx=None, interval=0)  # type: ignore[arg-type]
    watcher.mark(outcome(1))
    watcher.put(outcome(1))  # the same as sent: not sent again
    waiting = asyncio.ensure_future(watcher.next())
    await asyncio.sleep(0)
    assert not waiting.done()
    watcher.put(outcome(2))
    assert await asyncio.wait_for(waiting, 1) == outcome(2)


def test_results_differing_only_in_trace_ids_are_the_same() -> None:
    error = {"message": "Not found", "path": ["node"], "extensions": {"code": "NOT_FOUND"}}
    one = outcome(1, [{**error, "extensions": {**error["extensions"], "traceId": "a"}}])
    two = outcome(1, [{**error, "extensions": {**error["extensions"], "traceId": "b"}}])
    assert one.digest == two.digest
    assert outcome(1).digest != outcome(2).digest
    assert one.digest != outcome(1).digest


def test_a_frame_is_the_subscription_result_under_its_key() -> None:
    error = {"message": "Not found", "path": ["node"],
             "extensions": {"code": "NOT_FOUND", "traceId": "t"}}
    result = LiveFrame("now", outcome(4, [error])).result()
    assert result.data is not None
    assert list(result.data) == ["now"]
    assert result.errors is not None
    assert result.errors[0].path == ["now", "node"]
    assert result.errors[0].extensions == {"code": "NOT_FOUND", "traceId": "t"}
    empty = LiveFrame("live", Outcome.of(None, [error])).result()
    assert empty.data is None


def test_a_result_with_a_server_side_failure_is_run_again() -> None:
    from giftgraph.live.frames import Outcome
    from giftgraph.live.queries import _failed_inside

    def outcome(*codes: str, retryable: bool = False) -> Outcome:
        return Outcome.of(None, [{"message": "x", "extensions": {
            "code": c, **({"retryable": True} if retryable else {})}} for c in codes])

    assert _failed_inside(outcome("INTERNAL_SERVER_ERROR"))
    assert _failed_inside(outcome("SERVICE_UNAVAILABLE", retryable=True))
    assert not _failed_inside(outcome("NOT_FOUND", "BAD_USER_INPUT"))
    assert not _failed_inside(Outcome.of({"a": 1}, []))
