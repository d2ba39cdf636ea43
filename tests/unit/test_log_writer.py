"""Log records are written by a thread of their own: a slow destination (a pipe nobody
drains) never blocks the code that logs, i.e. the event loop."""

from __future__ import annotations

import logging
import threading

from giftgraph.observability import Handoff, Writer


class Blocked(logging.Handler):
    """A destination whose writes wait until released."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.go = threading.Event()
        self.written: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.started.set()
        self.go.wait(10)
        self.written.append(record.getMessage())


def test_logging_returns_while_the_destination_is_blocked() -> None:
    destination, writer = Blocked(), Writer()
    logger = logging.getLogger("giftgraph.test_log_writer")
    logger.handlers, logger.propagate = [writer.hand_to(destination)], False
    try:
        logger.warning("one %s", "a")
        assert destination.started.wait(5)  # the writer is inside a blocked write...
        logger.warning("two")  # ...and these still return
        logger.warning("three")
        assert not destination.go.is_set()
        destination.go.set()
    finally:
        writer.stop()  # drains what is queued
        logger.handlers = []
    assert destination.written == ["one a", "two", "three"]


def test_a_full_queue_drops_and_counts_rather_than_waits() -> None:
    destination, writer = Blocked(), Writer(size=1)
    logger = logging.getLogger("giftgraph.test_log_writer.full")
    logger.handlers, logger.propagate = [writer.hand_to(destination)], False
    before = Handoff.dropped
    try:
        logger.warning("taken by the writer")
        assert destination.started.wait(5)
        logger.warning("queued")
        logger.warning("dropped")  # the queue holds one: not waited for
        assert Handoff.dropped == before + 1
        destination.go.set()
    finally:
        writer.stop()
        logger.handlers = []
    assert destination.written == ["taken by the writer", "queued"]
