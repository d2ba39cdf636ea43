"""Connections of `giftgraph serve`: a cap, a request (header and body) timeout, an idle
timeout, in uvicorn's HTTP protocol.

What uvicorn does alone (0.3x-0.5x, `protocols/http/httptools_impl.py` and `h11_impl.py`):
its only timer is `timeout_keep_alive`, armed when a response completes and cancelled by the
next byte. A new connection that sends nothing has no timer at all, nor does a request whose
headers or body come a byte at a time; `limit_concurrency` answers 503 only once a
request's headers are complete, so connections that never send them are never refused.
One client's idle sockets then hold the process's descriptors until accept() fails for
everyone.

`HttpProtocol` (uvicorn's own protocol class, subclassed; `serve` passes it as `http=`):

- `max_connections`: a connection accepted while the process already holds that many
  (HTTP and WebSocket: uvicorn's `server_state.connections` holds both) is answered 503
  and closed at once, before it is read. The cap is kept below the descriptor limit, whose
  soft value is first raised to the hard one (`limits`).
- `max_connections_per_ip`: the HTTP connections one client address (an IPv6 one's /64,
  `ipv6_prefix_length`) holds at once (a WebSocket leaves the count at its upgrade:
  sockets are bounded per IP as they open and per user). Past it a new one is answered
  503 and closed at once, as past the cap: else one client re-opening idle connections
  faster than the header timeout closes them holds all of them. Addresses uvicorn trusts
  as proxies (`FORWARDED_ALLOW_IPS`, by default 127.0.0.1; `*` turns this bound off) are
  not counted: behind a proxy every connection comes from it.
- `http_header_timeout_seconds`: from a connection's start, or from the first byte of a
  later request on it, its headers must be complete within it; then the body, if any,
  within as long again from the end of the headers. Else the connection is closed.
- `http_idle_timeout_seconds`: uvicorn's keep-alive timer, between requests.
- `max_header_bytes`: a request's request line and headers, as received. uvicorn's
  httptools protocol (the one `auto` picks) buffers headers without any limit (its h11 one
  stops at 16 KiB): within the header timeout one connection pushed 115 MB, and 20 of them
  took the process to 700 MB. Past the bound: 431 and the connection closed.
- `http_send_timeout_seconds`: while a connection's write buffer is over the transport's
  high-water mark (its client is not taking what was written), some of it must be taken
  within it, and again within it, until the buffer drains; else the connection is cut
  (`abort`: the buffer let go at once). uvicorn waits for such a buffer to drain before a
  later write, with no time limit, and holds it for as long as the client keeps the
  connection open. The connection's flow control (uvicorn's FlowControl) is in its scope
  (`FLOW_KEY`) for the view, which waits for it before a request leaves its caller's turn
  (admission.requests); its transport (`TRANSPORT_KEY`) for what an answer owes its client
  (admission.sockets.Owing).

A WebSocket leaves this protocol at its upgrade (uvicorn hands the transport to its
WebSocket protocol): its timers end there; pings and the connection_init timeout bound it.
Its transport is found from uvicorn's WebSocket protocol (`websocket_transport`: its `send`
is the protocol's bound method) and kept in its scope too (`TRANSPORT_KEY`), with or without
the fast paths: a socket cut for what it owes its client is reset. So is its flow control
(`FLOW_KEY`): admission's `WebSocketProtocol` itself, which says when its transport paused
writing and calls back when it resumes, so that what the transport holds stays owed until
then.

Refusals are counted in the app's `giftgraph_admission_refused_total{bound}`: the app's
lifespan puts its `Refusals` in the lifespan state (`STATE_KEY`), which uvicorn hands to
every protocol instance (`app_state`). Without it (no lifespan), counts are kept in
`unreported`. Everything that reaches into uvicorn is here; `unsupported()` says whether
the installed uvicorn still has the shape relied on, and `serve` falls back to its plain
protocol (with a warning) when it does not.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import resource
import socket
import struct
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from giftgraph.accel.source import source_of
from giftgraph.admission.clients import client_network
from giftgraph.config import get_settings

try:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol as _Base
except ImportError:  # pragma: no cover - uvicorn moved it: `serve` falls back
    _Base = asyncio.Protocol  # type: ignore[misc,assignment,unused-ignore]
try:
    from uvicorn.protocols.utils import ClientDisconnected
    from uvicorn.protocols.websockets.websockets_sansio_impl import (
        WebSocketsSansIOProtocol as _WsBase,
    )
except ImportError:  # pragma: no cover - no websockets library: uvicorn picks what it has
    _WsBase = None  # type: ignore[assignment,misc]

log = logging.getLogger("giftgraph.admission.server")

HTTP_PROTOCOL = "giftgraph.admission.server:HttpProtocol"
STATE_KEY = "giftgraph.refusals"
LINGER_NONE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close with a reset
# In a scope: its connection's flow control (`write_paused`, `drain()`): in an HTTP scope
# uvicorn's FlowControl, in a WebSocket scope its protocol (`WebSocketProtocol`).
FLOW_KEY = "giftgraph.flow"
TRANSPORT_KEY = "giftgraph.transport"  # in a scope: its connection's transport
TRANSPORT_METHODS = ("abort", "get_write_buffer_size", "get_extra_info")  # what Owing uses
# Descriptors kept for what is not a client connection: the database pool (its size and
# overflow are added), the broker, listening sockets, logs, files being served.
RESERVED_FDS = 64
# The uvicorn names relied on: methods of its HTTP protocol class, attributes its instances
# set in __init__ (checked again on the first connection of each process).
METHODS = ("connection_made", "connection_lost", "data_received", "timeout_keep_alive_handler",
           "on_headers_complete")
ATTRIBUTES = ("cycle", "transport", "connections", "timeout_keep_alive", "app_state", "loop",
              "flow")
REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
           b"content-length: 20\r\nconnection: close\r\n\r\nToo many connections")
HEADERS_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                     b"content-type: text/plain; charset=utf-8\r\ncontent-length: 25\r\n"
                     b"connection: close\r\n\r\nRequest headers too large")
unreported: collections.Counter[str] = collections.Counter()


@dataclass(frozen=True, slots=True)
class Limits:
    """This process's bounds, from its settings and its descriptor limit."""

    max_connections: int
    header_timeout: float
    idle_timeout: float
    max_header_bytes: int = 64 * 1024  # as the setting's default
    send_timeout: float = 30.0  # as the setting's default
    max_connections_per_ip: int = 256  # as the setting's default
    proxies: frozenset[str] = frozenset({"127.0.0.1"})  # not counted per IP; "*": none is
    ipv6_prefix_length: int = 64  # as the setting's default
    ping_rate: float = 10.0  # as the setting's default


def raise_nofile() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit now (None: unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # e.g. macOS refuses RLIM_INFINITY: keep the soft one
            log.warning("could not raise the open-file limit from %d to %d", soft, hard)
    return None if soft == resource.RLIM_INFINITY else soft


@lru_cache(maxsize=1)
def limits() -> Limits:
    """Computed once per process (every worker is one), raising the descriptor limit."""
    settings = get_settings()
    cap = settings.max_connections
    nofile = raise_nofile()
    if nofile is not None:
        room = nofile - RESERVED_FDS - settings.db_pool_size - settings.db_max_overflow
        if cap > room:
            log.warning("max_connections %d lowered to %d: the open-file limit is %d",
                        cap, max(1, room), nofile)
            cap = max(1, room)
    return Limits(cap, settings.http_header_timeout_seconds,
                  settings.http_idle_timeout_seconds, settings.max_header_bytes,
                  settings.http_send_timeout_seconds, settings.max_connections_per_ip,
                  trusted_proxies(), settings.ipv6_prefix_length,
                  settings.max_ws_pings_per_second)


def trusted_proxies() -> frozenset[str]:
    """The addresses uvicorn takes X-Forwarded-For from (`FORWARDED_ALLOW_IPS`, as it reads
    it; its default 127.0.0.1)."""
    value = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
    return frozenset(part.strip() for part in value.split(",") if part.strip())


# Open HTTP connections per client address, in this process.
per_ip: collections.Counter[str] = collections.Counter()


def peer_address(transport: Any) -> str | None:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def unsupported() -> str | None:
    """Why the installed uvicorn can't take `HttpProtocol`, or None when it can."""
    if _Base is asyncio.Protocol:
        return "uvicorn.protocols.http.auto.AutoHTTPProtocol is gone"
    missing = [m for m in METHODS if not callable(getattr(_Base, m, None))]
    if missing:
        return f"{_Base.__name__} has no {', '.join(missing)}"
    return None


def serve_protocol() -> str:
    """What `serve` passes as uvicorn's `http=`: ours, or uvicorn's own (warned) when the
    installed uvicorn changed shape."""
    reason = unsupported()
    if reason is None:
        return HTTP_PROTOCOL
    log.warning("connection bounds off (max_connections, header and idle timeouts): %s; "
                "serving with uvicorn's own HTTP protocol", reason)
    return "auto"


def count(app_state: dict[str, Any], bound: str) -> None:
    """One refusal, in the app's metrics when its lifespan handed them over."""
    refusals = app_state.get(STATE_KEY)
    if refusals is not None:
        refusals.count(bound)
    else:
        unreported[bound] += 1


class _Throttled:
    """A warning at most every `every` seconds, with how many were left unsaid."""

    def __init__(self, every: float = 10.0) -> None:
        self.every, self.last, self.quiet = every, -every, 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            self.quiet += 1
            return
        if self.quiet:
            message, args = message + " (and %d more since the last warning)", (*args, self.quiet)
        log.warning(message, *args)
        self.last, self.quiet = now, 0


_at_cap = _Throttled()
_shape_checked = False
_enabled = True


HEADERS = object()  # what a connection waits for before a request's headers are complete


class HttpProtocol(_Base):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol with the connection cap and the request deadline; the idle
    timeout is its keep-alive timer, set from our setting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits()
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting: object = None  # HEADERS, a cycle (its body), or None
        self._header_bytes = 0  # received while waiting for the current request's headers
        self._ip: str | None = None  # the client address counted in `per_ip`, until released
        self._sending: SendWatch | None = None  # made when writing first pauses
        self._cycles: list[Any] = []  # its requests not answered yet (`connection_lost`)
        if _check_shape(self):
            self.timeout_keep_alive = self._limits.idle_timeout

    def connection_made(self, transport: Any) -> None:
        if _enabled and len(self.connections) >= self._limits.max_connections:
            self._refused = True
            count(self.app_state, "connections")
            _at_cap.warn("connection refused: %d open (max_connections)",
                         len(self.connections))
            transport.write(REFUSED)
            transport.close()
            return
        if _enabled and not self._admit_address(transport):
            self._refused = True
            count(self.app_state, "connections_per_ip")
            _at_cap.warn("connection refused: %d open from one address "
                         "(max_connections_per_ip)", self._limits.max_connections_per_ip)
            transport.write(REFUSED)
            transport.close()
            return
        super().connection_made(transport)
        if _enabled:
            self._wait(HEADERS)

    def _admit_address(self, transport: Any) -> bool:
        """Count the connection against its client address, or False: that address holds
        `max_connections_per_ip` already (trusted proxies are not counted)."""
        ip = peer_address(transport)
        proxies = self._limits.proxies
        if ip is None or "*" in proxies or ip in proxies:
            return True
        ip = client_network(ip, self._limits.ipv6_prefix_length)  # an IPv6 host: its /64
        if per_ip[ip] >= self._limits.max_connections_per_ip:
            return False
        per_ip[ip] += 1
        self._ip = ip
        return True

    def _release_address(self) -> None:
        ip, self._ip = self._ip, None
        if ip is not None:
            per_ip[ip] -= 1
            if per_ip[ip] <= 0:
                del per_ip[ip]

    def connection_lost(self, exc: Exception | None) -> None:
        """uvicorn's, and every request of the connection not answered yet is told so:
        uvicorn tells only the newest. Pipelined behind an unread answer, the request it
        had started next wrote its answer to the closed transport once its client reset
        the connection: an error and its traceback logged for each such connection
        (adversary, 2026-11-29)."""
        if self._refused:
            return
        self._release_address()
        self._stop()
        self._stop_sending()
        if _enabled:
            for cycle in self._cycles:
                if not cycle.response_complete:
                    cycle.disconnected = True
            self._cycles.clear()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if _enabled and self._waiting is HEADERS:
            self._header_bytes += len(data)
        super().data_received(data)
        if _enabled:
            cycle = self.cycle
            if cycle is not None:  # before its app task first runs (it was only created)
                cycle.scope[FLOW_KEY] = self.flow
                cycle.scope[TRANSPORT_KEY] = self.transport
            self._track()
            if self._waiting is HEADERS and self._header_bytes > self._limits.max_header_bytes \
                    and not self.transport.is_closing():
                # Still no complete headers: refused before buffering more of them.
                self._stop()
                count(self.app_state, "header_bytes")
                self.transport.write(HEADERS_TOO_LARGE)
                self.transport.close()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if _enabled:  # a request: its cycle made (a WebSocket's upgrade makes none)
            cycle, cycles = self.cycle, self._cycles
            if cycle is not None and (not cycles or cycles[-1] is not cycle):
                cycles[:] = [c for c in cycles if not c.response_complete]
                cycles.append(cycle)

    def pause_writing(self) -> None:
        super().pause_writing()
        if _enabled:
            self._sending = paused(self._sending, self, self._limits.send_timeout)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._sending is not None:
            self._sending.resumed()

    def _stop_sending(self) -> None:
        if self._sending is not None:
            self._sending.resumed()

    def timeout_keep_alive_handler(self) -> None:
        if _enabled and not self.transport.is_closing():
            count(self.app_state, "idle_timeout")
        super().timeout_keep_alive_handler()

    def _track(self) -> None:
        """After bytes were parsed: what this connection now waits for from the client."""
        transport = self.transport
        if transport.is_closing() or transport.get_protocol() is not self:
            self._stop()  # closed, or upgraded to a WebSocket: no longer ours
            if transport.get_protocol() is not self:
                self._release_address()  # a socket is bounded as it opens and per user
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.more_body:  # headers in, body coming: as long again for it
                if self._waiting is not cycle:
                    self._wait(cycle)
            else:  # the request is in; the app has it
                self._stop()
        elif self._waiting is not HEADERS:  # bytes of the next request's headers
            self._wait(HEADERS)

    def _wait(self, what: object) -> None:
        self._stop()
        self._waiting = what
        if what is HEADERS:
            self._header_bytes = 0
        self._deadline = self.loop.call_later(self._limits.header_timeout, self._expired)

    def _stop(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self._waiting = None

    def _expired(self) -> None:
        self._deadline = self._waiting = None
        if not self.transport.is_closing():
            count(self.app_state, "header_timeout")
            self.transport.close()


MIN_PROGRESS_BYTES = 64 * 1024  # taken of a full buffer in each send_timeout, at least


class SendWatch:
    """`send_timeout` for one connection (HTTP here, WebSocket in accel.wire): while its
    transport's buffer is over the high-water mark (its client is not taking what was
    written), at least `MIN_PROGRESS_BYTES` of it must be taken in every `timeout`, until
    it drains; else the connection is reset (`SO_LINGER` 0, then `abort`: the kernel's send
    buffer is let go too). Also after a close: a transport closing with a buffer its client
    never takes would stay open for as long as the client keeps it (uvicorn closes a
    socket whose pings went unanswered that way). A client taking 2 KB every 20 s of a
    3.7 MB answer kept it for 80 s and would have for ~10 hours when any progress counted."""

    __slots__ = ("_app_state", "_loop", "_timeout", "_timer", "_transport")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop, timeout: float,
                 app_state: dict[str, Any]) -> None:
        self._transport, self._loop, self._timeout = transport, loop, timeout
        self._app_state = app_state
        self._timer: asyncio.TimerHandle | None = None

    def paused(self) -> None:
        if self._timer is None:
            self._arm(self._transport.get_write_buffer_size())

    def resumed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, size: int) -> None:
        self._timer = self._loop.call_later(self._timeout, self._check, size)

    def _check(self, size: int) -> None:
        self._timer = None
        transport = self._transport
        now = transport.get_write_buffer_size()
        if now == 0 or transport.get_extra_info("socket") is None:
            return  # drained, or gone
        if now <= size - MIN_PROGRESS_BYTES:
            self._arm(now)
            return
        count(self._app_state, "send_timeout")
        log.info("connection cut: its client took %d of %d bytes in %g s "
                 "(http_send_timeout_seconds)", max(0, size - now), size, self._timeout)
        reset(transport)


def paused(watch: SendWatch | None, protocol: Any, timeout: float) -> SendWatch:
    """`protocol`'s transport paused writing: its watch (`watch`, or one made now, at its
    first pause: most connections never pause) armed."""
    if watch is None:
        watch = SendWatch(protocol.transport, protocol.loop, timeout, protocol.app_state)
    watch.paused()
    return watch


# What `WebSocketProtocol` uses of uvicorn's websockets-sansio protocol: the fields its
# __init__ and connection_made assign, and the flow-control callbacks it extends.
WS_FIELDS = ("transport", "loop", "app_state", "close_sent", "handshake_complete", "writable")
WS_METHODS = ("pause_writing", "resume_writing", "connection_lost", "keepalive_timeout",
              "handle_close", "handle_ping", "send")
PLAIN_WS_PROTOCOL = "websockets-sansio"  # uvicorn's own, where `WebSocketProtocol` can't be


def ws_unsupported() -> str | None:
    """Why uvicorn's websockets-sansio protocol can't take `WebSocketProtocol`, or None."""
    if _WsBase is None:
        return "uvicorn's websockets-sansio protocol is not importable"
    source = source_of(_WsBase)
    missing = [f for f in WS_FIELDS if f"self.{f} =" not in source]
    missing += [m for m in WS_METHODS if not callable(vars(_WsBase).get(m))]  # its own
    return f"{_WsBase.__name__} has no {', '.join(missing)}" if missing else None


def ws_protocol() -> str:
    """The WebSocket protocol `serve` runs without the fast paths: `WebSocketProtocol`, or
    uvicorn's own (warned) when the installed uvicorn changed shape."""
    reason = ws_unsupported()
    if reason is None:
        return WS_PROTOCOL
    log.warning("WebSocket send timeout off (http_send_timeout_seconds): %s; serving "
                "sockets with uvicorn's own protocol", reason)
    return PLAIN_WS_PROTOCOL


if _WsBase is not None:

    class WebSocketProtocol(_WsBase):
        """uvicorn's websockets-sansio protocol with the HTTP connections' send timeout
        (`SendWatch`): a socket whose client takes none of a large message was held for
        as long as the client kept it open (5 sockets of a 3.7 MB answer each, still open
        after 150 s; uvicorn's ping timeout closes a socket only once its buffer drains).
        A bound, not a fast path: the fast paths' protocol (accel.wire) builds on it, and
        `GIFTGRAPH_ACCEL=false` serves sockets with it.

        And a socket that is closing (its close sent or received, or its pings unanswered
        for the ping timeout) is gone within `send_timeout` once its transport is closing,
        else reset: uvicorn's close waits for the buffer to drain, also a buffer under the
        high-water mark, which the watch above never sees. After the ping timeout, a
        client that took none of ~3 MB of small answers held its socket, and its user's
        slot, for as long as it kept the connection open (adversary, 2026-11-29); a send
        of the app meanwhile raised uvicorn's "Unexpected ASGI message" error, logged with
        a traceback: it is told the client has gone instead.

        And it is the socket's flow control, as uvicorn's FlowControl is an HTTP
        connection's (`write_paused`, `drain`; in its scope as `FLOW_KEY`), read off
        uvicorn's own `writable` (cleared at a pause, set at the resume and when the
        connection is lost): uvicorn's `send` returns once a message is in the transport,
        and what the transport holds of a client that does not read stays owed
        (admission.sockets.Owing) until it drains (`when_drained`)."""

        __slots__ = ("_closing", "_on_drained", "_ping_at", "_pings", "_sending")

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._sending: SendWatch | None = None  # made when writing first pauses
            # Called once its transport drains (`when_drained`); a list only while any wait.
            self._on_drained: list[Callable[[], None]] | None = None
            self._closing: asyncio.TimerHandle | None = None  # while closing
            self._pings = limits().ping_rate  # pings its client may send now
            self._ping_at = 0.0  # when `_pings` was last counted

        def handle_ping(self) -> None:
            """`max_ws_pings_per_second` (as many at once), else the socket is reset. No
            other bound saw pings: one client's ~200 MB of pings in 8 s, its pongs read,
            stalled the event loop 1.3 s, and 4 sockets' pongs never read took 126 MB of
            transport buffers until the send timeout (adversary, 2026-11-29)."""
            rate = limits().ping_rate
            now = time.monotonic()
            self._pings = min(rate, self._pings + (now - self._ping_at) * rate)
            self._ping_at = now
            if self._pings < 1:
                if not self.transport.is_closing():  # once: the chunk's next pings too
                    count(self.app_state, "ws_pings")
                    log.info("socket cut: its client sent pings faster than %g a second "
                             "(max_ws_pings_per_second)", rate)
                reset(self.transport)
                return
            self._pings -= 1
            super().handle_ping()

        async def send(self, message: Any) -> None:
            if self.close_sent and self.handshake_complete \
                    and message["type"] in ("websocket.send", "websocket.close"):
                raise ClientDisconnected  # closing: as good as gone
            await super().send(message)
            if message["type"] == "websocket.close":
                self._watch_close()

        def keepalive_timeout(self) -> None:
            super().keepalive_timeout()
            self._watch_close()

        def handle_close(self, event: Any) -> None:
            super().handle_close(event)
            self._watch_close()

        def _watch_close(self) -> None:
            if self._closing is None:
                self._closing = self.loop.call_later(limits().send_timeout, self._close_due)

        def _close_due(self) -> None:
            """`send_timeout` after the close began: reset if the transport is closing
            still (its client not taking what it holds); if it is not closing yet (uvicorn
            waits for the client's close), look again after as long."""
            self._closing = None
            transport = self.transport
            if not transport.is_closing():
                self._watch_close()
                return
            count(self.app_state, "send_timeout")
            log.info("socket cut: closing, its client took nothing of the %d bytes left for "
                     "%g s (http_send_timeout_seconds)", transport.get_write_buffer_size(),
                     limits().send_timeout)
            reset(transport)

        @property
        def write_paused(self) -> bool:
            """Whether its transport has paused writing (its client is not taking what
            it holds), as uvicorn's FlowControl says it of an HTTP connection."""
            return not self.writable.is_set()

        async def drain(self) -> None:
            """Until its transport resumes writing, or the connection is lost."""
            await self.writable.wait()

        def when_drained(self, callback: Callable[[], None]) -> None:
            """Call `callback` once its transport resumes writing or the connection is
            lost; now if it is not paused."""
            if not self.write_paused:
                callback()
            elif self._on_drained is None:
                self._on_drained = [callback]
            else:
                self._on_drained.append(callback)

        def _drained(self) -> None:
            callbacks, self._on_drained = self._on_drained, None
            for callback in callbacks or ():
                callback()

        def pause_writing(self) -> None:
            super().pause_writing()
            self._sending = paused(self._sending, self, limits().send_timeout)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._sending is not None:
                self._sending.resumed()
            self._drained()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._sending is not None:
                self._sending.resumed()
            if self._closing is not None:
                self._closing.cancel()
                self._closing = None
            super().connection_lost(exc)
            self._drained()  # (asyncio never resumes a transport lost while paused)

    WS_PROTOCOL = f"{__name__}:WebSocketProtocol"
else:  # pragma: no cover
    WS_PROTOCOL = PLAIN_WS_PROTOCOL


def websocket_transport(scope: MutableMapping[str, Any], send: Any) -> None:
    """Keep a WebSocket's transport in its scope (`TRANSPORT_KEY`), from uvicorn's own
    `send` (a bound method of its WebSocket protocol, which holds the connection's
    transport as `transport`): call it before any middleware wraps `send`. Nothing is kept
    when `send` is not that (a wrapping middleware's): a cut socket's sends are then only
    refused. And its flow control (`FLOW_KEY`) when the protocol is ours
    (`WebSocketProtocol`: `write_paused`, `drain`, `when_drained`); without it (uvicorn's
    own protocol), what its transport holds is counted only while a later send waits."""
    protocol = getattr(send, "__self__", None)
    transport = getattr(protocol, "transport", None)
    if all(callable(getattr(transport, name, None)) for name in TRANSPORT_METHODS):
        scope[TRANSPORT_KEY] = transport
    if callable(getattr(protocol, "when_drained", None)) and hasattr(protocol, "write_paused"):
        scope[FLOW_KEY] = protocol


def reset(transport: Any) -> None:
    """Close a connection with a reset (`SO_LINGER` 0, then `abort`): what its buffers
    hold, the kernel's send buffer too, is let go now, not once a client that does not
    read has taken it."""
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_NONE)
    transport.abort()


def _check_shape(protocol: Any) -> bool:
    """On the first connection of the process: are uvicorn's attributes still there? If
    not, every connection of the process is served as uvicorn alone would (warned once)."""
    global _shape_checked, _enabled
    if not _shape_checked:
        _shape_checked = True
        missing = [a for a in ATTRIBUTES if not hasattr(protocol, a)]
        if missing:
            _enabled = False
            log.warning("connection bounds off: uvicorn's HTTP protocol has no %s",
                        ", ".join(missing))
    return _enabled
