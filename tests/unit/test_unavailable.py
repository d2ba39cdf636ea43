"""What the client may simply retry: a database it can't reach now, or no pooled connection
free in time. Over a socket, a subscription's read that waited out the pool reported it as
an unexpected INTERNAL_SERVER_ERROR, not retryable (adversary, 2026-11-26), while HTTP
said 'try again'."""

from __future__ import annotations

import logging

import asyncpg
import pytest
from graphql import GraphQLError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from giftgraph.db import session
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


def test_an_outage_is_a_line_a_second_naming_no_statement(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request of an outage fails alike: one line each was a flood, and SQLAlchemy's
    text of the error carried the statement."""
    now = [1000.0]
    monkeypatch.setattr(session.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(session, "_outage_lines", {})
    lost = DBAPIError("INSERT INTO persons (name) VALUES ($1)", None,
                      asyncpg.ConnectionDoesNotExistError("gone"),
                      connection_invalidated=True)
    with caplog.at_level(logging.WARNING):
        for _ in range(100):
            assert _formatted(lost)["retryable"] is True
        _formatted(PoolTimeout("QueuePool limit"))
        now[0] += 1.5
        _formatted(lost)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "an operation: database unavailable (DBAPIError(ConnectionDoesNotExistError), "
        "traceId=t)",
        "an operation: database unavailable (DBAPIError(ConnectionDoesNotExistError), "
        "traceId=t; 100 more like it in the last 1 s or more not logged)"]


def test_a_server_going_away_is_unavailable_however_it_is_wrapped() -> None:
    """Seen as PostgreSQL stopped under load: a connect refused while it shuts down,
    reached through SQLAlchemy's adapter error, and a statement on a connection still
    taking in the server's termination notice. Both were INTERNAL_SERVER_ERROR, logged
    with their tracebacks (and the statement)."""
    shutting_down = asyncpg.CannotConnectNowError("the database system is shutting down")
    adapter = RuntimeError("the database system is shutting down")
    adapter.__cause__ = shutting_down
    wrapped = DBAPIError("SELECT 1", None, adapter)  # type: ignore[arg-type]
    assert session.unavailable(wrapped)
    busy = asyncpg.InternalClientError("cannot switch to state 12; another operation (2) "
                                       "is in progress")
    assert session.unavailable(DBAPIError("SELECT 1", None, busy))
    assert not session.unavailable(DBAPIError("SELECT 1", None, RuntimeError("a bug")))
    assert not session.unavailable(ValueError("a bug"))
