"""Log records are written by a thread of their own: a slow destination (a pipe nobody
drains) never blocks the code that logs, i.e. the event loop."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

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


def test_the_console_leaves_out_fields_that_say_nothing_and_json_keeps_them() -> None:
    import io
    import json
    import sys

    import structlog

    from giftgraph.config import Settings
    from giftgraph.observability import _writer, configure_logging

    def logged(extra: dict[str, object] | None = None, **env: object) -> str:
        out, real = io.StringIO(), sys.stderr
        sys.stderr = out
        try:
            configure_logging(Settings(_env_file=None, **env))  # type: ignore[arg-type]
            structlog.get_logger("giftgraph.operation").info(
                "graphql.operation", operation_name=None, operation_type="query",
                error_codes=None, duration_ms=1.5, **(extra or {}))
            _writer.stop()  # drains what is queued
        finally:
            sys.stderr = real
            configure_logging(Settings(_env_file=None))  # type: ignore[call-arg]
        return out.getvalue()

    console = logged(environment="development")
    assert "operation_type=query" in console
    assert "duration_ms=1.5" in console
    assert "None" not in console
    line = json.loads(logged(environment="development", log_json=True))
    assert line["operation_name"] is None
    assert line["error_codes"] is None
    # orjson writes it; what orjson refuses (a key that is not a string, an integer past
    # 64 bits) still makes a line, and an object JSON has no form for is its repr
    odd = json.loads(logged({"codes": {1: "a"}, "big": 2**70, "thing": object()},
                            environment="development", log_json=True))
    assert odd["codes"] == {"1": "a"}
    assert odd["big"] == 2**70
    assert odd["thing"].startswith("<object object")


class Threads(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that notes the thread of each write the writer thread makes."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.threads: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.threads.append(threading.get_ident())
        super().emit(record)


def test_a_short_line_to_a_file_is_written_at_once_without_the_thread(tmp_path: Any) -> None:
    with open(tmp_path / "log", "w") as stream:
        destination, writer = Threads(stream), Writer()
        logger = logging.getLogger("giftgraph.test_log_writer.file")
        handoff = writer.hand_to(destination)
        logger.handlers, logger.propagate = [handoff], False
        writer.stop()  # no writer thread now: what it would write stays queued
        try:
            logger.warning("one")
            assert (tmp_path / "log").read_text() == "one\n"  # written before it returned
            logger.warning("x" * 5000)  # longer than a pipe takes at once: the writer's
            logger.warning("then %s", "two")  # behind it, so queued too
            assert (tmp_path / "log").read_text() == "one\n"
            assert handoff.records.unfinished_tasks == 2
            assert [r.getMessage()[:1] for r in list(handoff.records.queue)] == ["x", "t"]
        finally:
            logger.handlers = []
    assert destination.threads == []  # nothing went through the handler's emit


def test_a_traceback_is_the_writers(tmp_path: Any) -> None:
    with open(tmp_path / "log", "w") as stream:
        destination, writer = Threads(stream), Writer()
        logger = logging.getLogger("giftgraph.test_log_writer.traceback")
        logger.handlers, logger.propagate = [writer.hand_to(destination)], False
        try:
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("with its traceback")
        finally:
            writer.stop()
            logger.handlers = []
    assert len(destination.threads) == 1
    assert destination.threads[0] != threading.get_ident()
    assert "ValueError: boom" in (tmp_path / "log").read_text()


def test_a_full_pipe_is_left_to_the_writer_and_nothing_overtakes() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"." * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    stream = os.fdopen(write_end, "w")
    destination, writer = Threads(stream), Writer()
    logger = logging.getLogger("giftgraph.test_log_writer.pipe")
    logger.handlers, logger.propagate = [writer.hand_to(destination)], False
    try:
        logger.warning("first")  # no room: the writer takes it, and waits in its write
        logger.warning("second")  # queued behind it, though the caller could not tell
        got = b""
        while b"second\n" not in got:
            got += os.read(read_end, 65536)  # the reader drains; the writer goes on
    finally:
        writer.stop()
        logger.handlers = []
        stream.close()
        os.close(read_end)
    assert got.lstrip(b".") == b"first\nsecond\n"
    assert threading.get_ident() not in destination.threads
