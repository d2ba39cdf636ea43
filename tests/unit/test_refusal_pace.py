"""`Pace`: the token bucket of refusals per caller (giftgraph.admission.requests)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from starlette.responses import Response, StreamingResponse

from giftgraph.admission.requests import Pace
from giftgraph.errors import RateLimited
from giftgraph.web.http import is_refusal


def test_refusals_spend_a_burst_that_refills() -> None:
    pace = Pace(rate=2.0, burst=3, wait=1.0)
    for _ in range(3):
        assert not pace.spent("family:a", now=100.0)
        pace.spend("family:a", now=100.0)
    assert pace.spent("family:a", now=100.0)
    assert not pace.spent("family:b", now=100.0)  # another caller's bucket is its own
    assert not pace.spent("family:a", now=100.5)  # one token back after 1/rate seconds
    assert not pace.buckets.get("family:b")


def test_a_full_bucket_is_forgotten() -> None:
    pace = Pace(rate=10.0, burst=2, wait=1.0)
    pace.spend("ip:1", now=10.0)
    assert "ip:1" in pace.buckets
    assert not pace.spent("ip:1", now=20.0)
    assert "ip:1" not in pace.buckets


async def test_a_spent_caller_waits_for_its_turn_then_is_refused() -> None:
    pace = Pace(rate=0.5, burst=1, wait=0.2)
    assert await pace.wait_turn("family:a") is False  # tokens left: no wait, nothing taken
    pace.spend("family:a")
    with pytest.raises(RateLimited):
        await pace.wait_turn("family:a")  # the next token is 2 s away


async def test_waiting_requests_take_the_tokens_one_by_one() -> None:
    pace = Pace(rate=50.0, burst=1, wait=2.0)
    pace.spend("family:a")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert all(await asyncio.gather(*(pace.wait_turn("family:a") for _ in range(3))))
    assert loop.time() - started >= 3 / 50 - 0.01  # one token per 1/rate seconds


@pytest.mark.parametrize(("status", "body", "refused"), [
    (200, {"data": {"me": {"id": "1"}}}, False),
    (400, {"errors": [{"message": "x", "extensions": {"code": "BAD_USER_INPUT"}}]}, True),
    (200, {"errors": [{"message": "x", "extensions": {"code": "QUERY_TOO_COMPLEX"}}]}, True),
    # a search over its bound, refused by the resolver: no data, BAD_USER_INPUT with a path
    (200, {"data": None, "errors": [{"message": "x", "path": ["persons"],
                                     "extensions": {"code": "BAD_USER_INPUT"}}]}, True),
    # an outcome of the data, not a refusal of the input
    (200, {"data": None, "errors": [{"message": "x", "path": ["node"],
                                     "extensions": {"code": "NOT_FOUND"}}]}, False),
    # some of it answered
    (200, {"data": {"me": {"id": "1"}, "persons": None}, "errors": [
        {"message": "x", "path": ["persons"], "extensions": {"code": "BAD_USER_INPUT"}}]},
     False),
])
def test_what_counts_as_a_refusal(status: int, body: dict[str, object], refused: bool
                                  ) -> None:
    response = Response(orjson.dumps(body), status_code=status, media_type="application/json")
    assert is_refusal(response) is refused


def test_a_streamed_answer_is_no_refusal() -> None:
    """A subscription answered over HTTP streams its parts: there is no body to read."""
    response = StreamingResponse(iter([b"--graphql"]), media_type="multipart/mixed")
    assert is_refusal(response) is False
