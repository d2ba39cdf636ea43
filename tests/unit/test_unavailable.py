"""What the client may simply retry: a database it can't reach now, or no pooled connection
free in time. Over a socket, a subscription's read that waited out the pool reported it as
an unexpected INTERNAL_SERVER_ERROR, not retryable (adversary, 2026-11-26), while HTTP
said 'try again'."""

from __future__ import annotations

from graphql import GraphQLError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from giftgraph.schema.extensions import format_error


def _formatted(original: Exception) -> dict[str, object]:
    error = format_error(GraphQLError("x", original_error=original, path=["dashboard"]), "t")
    return {"message": error.message, **(error.extensions or {})}


def test_no_pooled_connection_in_time_is_retryable() -> None:
    pool = PoolTimeout("QueuePool limit of size 20 overflow 0 reached, connection timed "
                       "out, timeout 30.00")
    assert _formatted(pool) == {"message": "Service temporarily unavailable, please retry",
                                "code": "INTERNAL_SERVER_ERROR", "retryable": True,
                                "traceId": "t"}
    assert _formatted(TimeoutError()) == _formatted(pool)  # as the driver's own timeout


def test_a_bug_is_not() -> None:
    assert _formatted(RuntimeError("a bug")) == {"message": "Internal server error",
                                                 "code": "INTERNAL_SERVER_ERROR",
                                                 "traceId": "t"}
