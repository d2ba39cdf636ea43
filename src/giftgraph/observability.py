"""Logs (structlog: JSON in production, console in development) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import logging
import logging.handlers
import os
import queue
import re
import select
import stat
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from graphql import GraphQLError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from sqlalchemy import event
from strawberry.extensions import SchemaExtension

from giftgraph.admission import Refusals
from giftgraph.config import Settings

log = structlog.get_logger("giftgraph.operation")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_OPERATION_NAMES = 200
NAMES_PER_FAMILY = 20
LOOP_PROBE_S = 0.025
PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)


def configure_logging(settings: Settings) -> None:
    """Route stdlib and structlog records through one renderer (process-wide)."""
    as_json = settings.log_json if settings.log_json is not None else settings.is_production
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (structlog.processors.JSONRenderer(serializer=json_line) if as_json
                     else structlog.dev.ConsoleRenderer(colors=False))
    # On the console, a field that says nothing is left out (`operation_name=None
    # error_codes=None` on most lines); JSON keeps every field, for the log's readers.
    final: list[Any] = [renderer] if as_json else [without_none, renderer]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, *final],
    ))
    handoff = _writer.hand_to(handler)
    root = logging.getLogger("giftgraph")
    root.setLevel(logging.INFO)
    # uvicorn's own lines (start-up, errors, the access log) too: in the same format, and
    # written by the log thread, never by the event loop (its levels stay uvicorn's).
    access = logging.getLogger("uvicorn.access")
    for logger in (root, logging.getLogger("uvicorn"), access):
        logger.handlers = [handoff]
        logger.propagate = False
    errors = logging.getLogger("uvicorn.error")
    for old in [f for f in errors.filters if isinstance(f, NoWebSocketAccessLines)]:
        errors.removeFilter(old)
    if not settings.access_log:  # as uvicorn leaves it for `access_log=False`: no handler
        access.handlers = []
        errors.addFilter(NoWebSocketAccessLines())


def json_line(event: dict[str, Any], **kw: Any) -> str:
    """A JSON log line by orjson (several times faster than json.dumps, and compact); what
    orjson refuses (a key that is not a string, an integer past 64 bits) by json.dumps."""
    try:
        return orjson.dumps(event, default=kw.get("default")).decode()
    except TypeError:
        return json.dumps(event, **kw)


def without_none(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: the event without its None-valued fields."""
    return {k: v for k, v in event.items() if v is not None}


class NoWebSocketAccessLines(logging.Filter):
    """Without the access log, no line per WebSocket either: uvicorn logs each accepted
    socket, and websockets (through uvicorn's logger) each opened and closed one, at INFO
    on `uvicorn.error`, whatever `access_log` says; a reconnecting herd of 10,000 sockets
    wrote 30,000 lines. Refusals (a 403 or another status) are still logged."""

    LINES = frozenset({'%s - "WebSocket %s" [accepted]', "connection open",
                       "connection closed"})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.LINES


class Handoff(logging.handlers.QueueHandler):
    """Hands each record, as it is, to the writer thread: rendering it and writing it to
    a pipe the reader is slow to drain must not stall the event loop. A record that finds
    the queue full is dropped and counted (`dropped`), never waited for.

    Except when that can't stall anything (`Direct`): with nothing queued, a short line to
    a destination that has room for it now is written by the caller: waking the writer
    for every line passed the interpreter's lock back and forth between the two threads
    on every request (bench/NOTES.md, 2026-11-26 15:57)."""

    dropped = 0

    def __init__(self, records: queue.Queue[logging.LogRecord], limit: int,
                 direct: Direct | None = None) -> None:
        super().__init__(records)
        self.records, self.limit, self.direct = records, limit, direct

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # rendered by the writer's formatter, in its thread

    def emit(self, record: logging.LogRecord) -> None:
        direct = self.direct
        # Nothing queued or being written (the writer marks a record done once written):
        # a line written here cannot overtake one of the writer's.
        if direct is not None and not self.records.unfinished_tasks:
            try:
                if direct.write(record):
                    return
            except Exception:
                self.handleError(record)
                return
        super().emit(record)

    def enqueue(self, record: logging.LogRecord) -> None:
        if self.records.qsize() >= self.limit:
            Handoff.dropped += 1
        else:
            self.records.put_nowait(record)


class Direct:
    """Writes a record through a stream handler in the calling thread when that cannot
    wait: a line of at most PIPE_BUF bytes without a traceback, to a regular file, or to a
    pipe or terminal that has room for it now (`poll`: a write that size then neither
    blocks nor interleaves), while no other thread is inside the handler. Anything else
    (a socket, a full pipe, a long line) goes to the writer thread."""

    def __init__(self, handler: logging.StreamHandler[Any], room: select.poll | None) -> None:
        self.handler, self.room = handler, room

    @classmethod
    def of(cls, handler: logging.Handler) -> Direct | None:
        if not isinstance(handler, logging.StreamHandler):
            return None
        try:
            fd = handler.stream.fileno()
            mode = os.fstat(fd).st_mode
        except (AttributeError, OSError, ValueError):  # not a file (a StringIO)
            return None
        if stat.S_ISREG(mode):
            return cls(handler, None)
        if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            room = select.poll()
            room.register(fd, select.POLLOUT)
            return cls(handler, room)
        return None

    def write(self, record: logging.LogRecord) -> bool:
        """Written (True), or left for the writer thread (False)."""
        if record.exc_info or record.stack_info:
            return False
        if self.room is not None and not self.room.poll(0):
            return False
        handler = self.handler
        if not handler.lock or not handler.lock.acquire(blocking=False):
            return False  # the writer thread is writing
        try:
            if record.levelno < handler.level or not handler.filter(record):
                return True  # as the writer thread (`respect_handler_level`): not written
            line = handler.format(record) + handler.terminator
            if len(line.encode()) > select.PIPE_BUF:
                return False
            handler.stream.write(line)
            handler.flush()
            return True
        finally:
            handler.lock.release()


class Writer:
    """The process's one log-writing thread (a QueueListener), restarted with each
    configuration and drained at exit."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.listener: logging.handlers.QueueListener | None = None

    def hand_to(self, handler: logging.Handler) -> Handoff:
        self.stop()
        # A Queue: the writer marks each record done once written (`Handoff.emit` reads it)
        records: queue.Queue[logging.LogRecord] = queue.Queue()
        self.listener = logging.handlers.QueueListener(records, handler,
                                                       respect_handler_level=True)
        self.listener.start()
        return Handoff(records, self.size, Direct.of(handler))

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()  # writes what is queued first
            self.listener = None


_writer = Writer()
atexit.register(_writer.stop)


class Metrics:
    """Every metric of one app, in its own registry (served at /metrics)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        # process_*: CPU, RSS, descriptors, and the start time that tells the workers of
        # `serve --workers N` apart (each answers /metrics for itself)
        ProcessCollector(registry=r)
        self.requests = Counter("giftgraph_http_requests", "HTTP requests",
                                ["method", "path", "status"], registry=r)
        self.request_seconds = Histogram("giftgraph_http_request_duration_seconds",
                                         "HTTP request duration", ["path"], registry=r)
        self.operations = Counter("giftgraph_graphql_operations", "GraphQL operations",
                                  ["name", "type", "outcome"], registry=r)
        self.operation_seconds = Histogram("giftgraph_graphql_operation_duration_seconds",
                                           "GraphQL operation duration", ["name", "type"],
                                           registry=r)
        self.errors = Counter("giftgraph_graphql_errors", "GraphQL errors by code", ["code"],
                              registry=r)
        self.result_cache = Counter("giftgraph_result_cache_lookups",
                                    "Read queries looked up in the result cache", ["outcome"],
                                    registry=r)
        self.compiled_reads = Counter(
            "giftgraph_compiled_reads",
            "Read queries executed: as one compiled statement (compiled), field by field "
            "because they do not compile (executor), or field by field after the compiled "
            "statement failed or found a required root object missing (fallback), or not "
            "at all: the statement timed out (timeout)",
            ["outcome"], registry=r)
        self.transaction_retries = Counter(
            "giftgraph_transaction_retries",
            "Mutations run again because PostgreSQL aborted their transaction for a "
            "concurrent one (deadlock, serialization failure)", ["reason"], registry=r)
        self.sockets_active = Gauge("giftgraph_websockets_active", "Open WebSockets",
                                    registry=r)
        self.sockets_peak = Gauge("giftgraph_websockets_peak", "Most WebSockets open at once",
                                  registry=r)
        self.sockets_total = Counter("giftgraph_websockets", "WebSockets opened", registry=r)
        self.subscriptions_active = Gauge("giftgraph_subscriptions_active",
                                          "Running subscriptions", registry=r)
        self.subscriptions_listening = Gauge(
            "giftgraph_subscriptions_listening",
            "Listeners on this process's hub (event subscriptions, presence rooms, one per "
            "family dashboard feed): live from here on",
            registry=r)
        self.live_queries = Gauge(
            "giftgraph_live_queries",
            "Distinct live queries open on this process (each one execution per relevant "
            "change, shared by its subscribers)", registry=r)
        self.live_query_executions = Gauge(
            "giftgraph_live_query_executions",
            "Live query executions on this process since it started (joins included)",
            registry=r)
        self.live_query_skipped = Gauge(
            "giftgraph_live_query_events_skipped",
            "Family events a live query did not run for (it reads none of their entity "
            "type), since this process started", registry=r)
        self.events_published = Counter("giftgraph_events_published", "Events published",
                                        registry=r)
        self.events_publish_failures = Gauge(
            "giftgraph_events_publish_failures",
            "Messages (events, socket revocations) the broadcast backend refused when first "
            "published: kept and published again once it takes them", registry=r)
        self.events_publish_refused = Gauge(
            "giftgraph_events_publish_refused",
            "Messages the broadcast backend refused for their content (too large once "
            "encoded, not encodable), never retried: events went by reference instead, "
            "anything else was dropped", registry=r)
        self.events_publish_dropped = Counter(
            "giftgraph_events_publish_dropped",
            "Messages never published: refused for their content even by reference "
            "(refused), or events not kept while PENDING_MAX were kept already "
            "(backlog_full); subscribers elsewhere catch up at their topic's next event",
            ["reason"], registry=r)
        for reason in ("refused", "backlog_full"):
            self.events_publish_dropped.labels(reason)
        self.events_publish_backlog = Gauge(
            "giftgraph_events_publish_backlog",
            "Messages kept to publish again, in order, once the broadcast backend takes them",
            registry=r)
        self.events_publish_backlog_seconds = Gauge(
            "giftgraph_events_publish_backlog_seconds",
            "How long publishing has gone without progress: kept messages since one last "
            "went out, or the oldest publish still waiting for the broker's answer (0: "
            "neither); /health reports the broadcast `stuck` past a bound", registry=r)
        self.events_delivered = Counter("giftgraph_events_delivered",
                                        "Events delivered to subscribers", registry=r)
        self.fanout_seconds = Histogram(
            "giftgraph_fanout_latency_seconds",
            "Commit-to-delivery latency: per event, until its last caught-up subscriber on "
            "this instance was written; per delivery for replayed or late ones",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.broadcast_connected = Gauge("giftgraph_broadcast_connected",
                                         "1 when the broadcast backend is connected", registry=r)
        self.broadcast_reconnects = Gauge("giftgraph_broadcast_reconnects",
                                          "Broadcast backend reconnects", registry=r)
        self.events_in_backlog = Counter(
            "giftgraph_fanout_backlog_events",
            "Events that found others of their channel already waiting and were fanned out "
            "with them, one write per socket (a channel's events arrived faster than one "
            "fan-out takes)", registry=r)
        self.db_pool_checked_out = Gauge("giftgraph_db_pool_checked_out",
                                         "Database connections in use", registry=r)
        self.db_pool_size = Gauge("giftgraph_db_pool_size", "Database pool size", registry=r)
        self.db_connections_opened = Counter(
            "giftgraph_db_connections_opened", "Database connections opened (each one past "
            "the pool's size is set up and closed again: its cost is paid on the event loop)",
            registry=r)
        self.db_connections_cut = Gauge(
            "giftgraph_db_connections_cut", "Database connections closed because the "
            "database did not answer in time (db/watchdog.py: statement_timeout + 2 s)",
            registry=r)
        self.refusals = Refusals(r)
        # The process's own pauses: what every request and delivery waits behind.
        self.gc_pause_seconds = Histogram(
            "giftgraph_gc_pause_seconds", "Garbage collections by generation (the event loop "
            "waits while one runs)", ["generation"], buckets=PAUSE_BUCKETS, registry=r)
        self.loop_lag_seconds = Histogram(
            "giftgraph_event_loop_lag_seconds", "How late the event loop woke a timer due "
            f"every {LOOP_PROBE_S * 1000:g} ms (what a ready task waits at most)",
            buckets=PAUSE_BUCKETS, registry=r)
        self._names: set[str] = set()
        self._brought: dict[object, int] = {}  # names labelled, by the family that sent them
        self._open = 0
        self._peak = 0  # what sockets_peak holds (read here, not from the gauge's internals)

    def operation_name(self, name: str | None, family: object = None) -> str:
        """Bounded label values: client-chosen names beyond the first 200 become `other`,
        and one family (or all anonymous callers together) may bring at most 20 of them,
        so no one client can take every label and leave the others' operations uncounted
        by name."""
        if not name or not _NAME.match(name):
            return "anonymous" if not name else "other"
        if name in self._names:
            return name
        brought = self._brought.get(family, 0)
        if len(self._names) < MAX_OPERATION_NAMES and brought < NAMES_PER_FAMILY:
            self._names.add(name)
            self._brought[family] = brought + 1
            return name
        return "other"

    def socket_opened(self) -> None:
        self._open += 1
        self.sockets_total.inc()
        self.sockets_active.set(self._open)
        if self._open > self._peak:
            self._peak = self._open
            self.sockets_peak.set(self._open)

    def socket_closed(self) -> None:
        self._open -= 1
        self.sockets_active.set(self._open)

    def delivered(self, at: datetime, count: int = 1) -> None:
        """`count` subscribers were sent an event committed `at`."""
        self.events_delivered.inc(count)
        self.fanout_seconds.observe(max(0.0, (datetime.now(UTC) - at).total_seconds()))

    def bind(self, broadcast_connected: Callable[[], bool], reconnects: Callable[[], int],
             pool: Any, listening: Callable[[], int]) -> None:
        self.broadcast_connected.set_function(lambda: 1.0 if broadcast_connected() else 0.0)
        self.subscriptions_listening.set_function(lambda: float(listening()))
        self.broadcast_reconnects.set_function(lambda: float(reconnects()))
        self.db_pool_checked_out.set_function(lambda: float(pool.checkedout()))
        self.db_pool_size.set_function(lambda: float(pool.size()))
        event.listen(pool, "connect", lambda *_: self.db_connections_opened.inc())


    def watch_gc(self) -> Callable[[], None]:
        """Time every garbage collection of the process into `gc_pause_seconds` until the
        returned function is called."""
        started = [0.0]
        pause = self.gc_pause_seconds

        def callback(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            elif started[0]:
                pause.labels(str(info.get("generation", "?"))).observe(
                    time.perf_counter() - started[0])
        gc.callbacks.append(callback)
        return lambda: gc.callbacks.remove(callback) if callback in gc.callbacks else None

    async def probe_loop(self) -> None:
        """Runs until cancelled: the event loop's lag, sampled every LOOP_PROBE_S."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LOOP_PROBE_S
            await asyncio.sleep(LOOP_PROBE_S)
            self.loop_lag_seconds.observe(max(0.0, loop.time() - due))

    def bind_live_queries(self, queries: Any) -> None:
        """The live queries' figures (`queries`: a live.queries.LiveQueries), and their
        time budget's waits counted as refusals (`live_seconds`)."""
        queries.budget.refusals = self.refusals
        self.live_queries.set_function(lambda: float(len(queries.queries)))
        self.live_query_executions.set_function(lambda: float(queries.executions))
        self.live_query_skipped.set_function(lambda: float(queries.skipped))

    def bind_publisher(self, hub: Any) -> None:
        """The publishing metrics of `hub` (a live.Hub): what went out, what waits, what the
        backend refused or was dropped."""
        hub.on_published = self.events_published.inc
        hub.on_dropped = lambda reason, count: self.events_publish_dropped.labels(reason).inc(
            count)
        self.events_publish_failures.set_function(lambda: float(hub.publish_failures))
        self.events_publish_refused.set_function(lambda: float(hub.publish_refused))
        self.events_publish_backlog.set_function(lambda: float(len(hub.pending)))
        self.events_publish_backlog_seconds.set_function(lambda: float(hub.backlog_seconds))


def error_codes(result: Any) -> list[str]:
    codes = []
    for error in getattr(result, "errors", None) or []:
        code = (getattr(error, "extensions", None) or {}).get("code")
        codes.append(str(code) if code else "INTERNAL_SERVER_ERROR")
    return codes


class OperationLog(SchemaExtension):
    """One metrics sample and one log line per operation (never variables or tokens). The
    line is written once the answer is on its way: the loop writes it on its next turn
    (`call_soon`, in the operation's context: its trace's id), after the task that ran the
    operation has sent the answer and paused, so that rendering it (~0.1 ms) is not in
    the answer's time."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        ec = self.execution_context
        ctx = ec.context
        seconds = time.perf_counter() - started
        try:
            op_type = ec.operation_type.value
        except (RuntimeError, GraphQLError):  # reading it re-parses an unparsable document
            op_type = "invalid"
        codes = error_codes(ec.result)
        user = getattr(ctx, "user", None)
        metrics: Metrics | None = getattr(ctx, "metrics", None)
        name = ec.operation_name
        if metrics is not None:
            label = metrics.operation_name(name, user.family_id if user is not None else None)
            metrics.operations.labels(label, op_type, "error" if codes else "ok").inc()
            metrics.operation_seconds.labels(label, op_type).observe(seconds)
            for code in codes:
                metrics.errors.labels(code).inc()
        fields = (getattr(ctx, "trace_id", None), user, name, op_type, seconds, codes)
        try:
            asyncio.get_running_loop().call_soon(log_operation, *fields)
        except RuntimeError:  # no loop (a synchronous execution): now
            log_operation(*fields)


def log_operation(trace_id: str | None, user: Any, name: str | None, op_type: str,
                  seconds: float, codes: list[str]) -> None:
    """An operation's log line (`OperationLog`)."""
    log.info(
        "graphql.operation",
        trace_id=trace_id,
        user_id=str(user.id) if user is not None else None,
        family_id=str(user.family_id) if user is not None else None,
        operation_name=name,
        operation_type=op_type,
        duration_ms=round(seconds * 1000, 2),
        error_codes=codes or None,
    )
