"""Socket admission: what one WebSocket message, user and socket may take.

- New sockets per client IP (`socket_connect_rate`): spent by `admit_connection` before the
  handshake is accepted and before any token is read, since the handshake itself is the
  cost (a loop opening and closing sockets, or a flood of `connection_init` with tokens
  that name no user, slowed every family's queries). An HTTP subscription stream
  (multipart, graphql-sse) is a socket too and spends the same budget, before its token
  is read (web/streams.py: refused with 429, `Retry-After`, RATE_LIMITED): one family
  opening and closing streams at ~22 a second, held only by its subscription-start pace,
  took another family's p99 from 10.7 to ~85 ms. The IP is the client as the server
  resolved it (`scope["client"]`: uvicorn applies X-Forwarded-For from a trusted proxy).
  A refused socket is closed before it is accepted (1013, try again later), which uvicorn
  answers with HTTP 403 and logs at info. Not a 429 through the ASGI denial-response
  extension: uvicorn 0.54's sans-I/O protocol logs each of those as an error ("returned
  without completing handshake"), a log line at ERROR per refusal of a flood. The store
  being down lets the socket in (`RateLimits`).
- A message's size (`socket_message_bytes`): uvicorn refuses a larger frame from its header,
  before buffering it (`ws_max_size`, which `giftgraph serve` sets from the setting: close
  1009); the app checks again before parsing (`oversized`), for servers that don't.
- A message's shape: JSON (orjson: no recursion in Python, invalid UTF-8 refused), nested at
  most `MAX_DEPTH` levels, an operation id of at most `MAX_ID_CHARS`; otherwise close 4400.
  Deeper input would reach code that recurses over it (a RecursionError drops the socket
  without a close frame), a long id is echoed in every message of its operation.
- A socket's message rate (`socket_message_rate`): each message takes a token of the
  socket's bucket (`MessageBudget`), refilled at that rate, as deep as twice the
  subscriptions a socket may hold (a client starts all of them at once). A message with no
  token left waits for one before it is handled (counted), and meanwhile the socket is not
  read: TCP pushes back on the sender. Each message costs the server a parse and a
  dispatch, a `ping` an answer: without it one user's 20 sockets sending as fast as they
  could (~19,000 pings a second) took most of the process.
- Sockets per user (`sockets_per_user`, close 4429): a slot is taken when the socket is
  authenticated and given back exactly once when its handler ends (`SocketSlot`), so the
  count is the sockets open now, never ones waiting for the garbage collector.
- Subscriptions per socket (`subscriptions_per_socket`) are refused where Strawberry's
  handler starts operations (`app.TransportWSHandler.handle_subscribe`).
- Replays per family (`ReplayTurns`): all of a family's `since` replays and catch-ups, on
  all its members' sockets, take one turn, a page at a time; other families' replays go on
  meanwhile. One user's 5 sockets of 100 replays each took turns per socket (5 pages at
  once) and pushed another family's queries and deliveries to ~1.8 s p99; turns per user
  were as many as a family's members (an ADMIN registers 120 a minute): 100 members of one
  family replaying since 0 took another family's deliveries from 13 ms to 134 ms p50.
- Subscriptions per user (`subscriptions_per_user`), over all of the user's sockets, are
  refused there too: each operation takes a slot of its user's count (`OpenOperations`)
  when it starts and gives it back exactly once when it ends (completed, failed, its
  socket closed: `OperationSlot`). Each mutation of a family is one delivery per open
  subscription of its members: without it one user's 20 sockets held 2,000.
- Bytes a socket owes its client (`socket_owed_bytes`): its messages waiting to be written
  because its client takes nothing more now, and what its transport holds until it drains,
  per socket and for the whole process (`Owing`); past either, the socket is cut.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import orjson

from giftgraph.admission import server
from giftgraph.admission.clients import client_key
from giftgraph.admission.pace import KeyedPace
from giftgraph.errors import AppError, RateLimited

if TYPE_CHECKING:
    from starlette.types import Scope, Send
    from starlette.websockets import WebSocket

    from giftgraph.admission import Refusals
    from giftgraph.admission.throttle import Throttle
    from giftgraph.config import Settings
    from giftgraph.live.hub import Hub

log = logging.getLogger("giftgraph.admission")

# Levels of nesting one message may have: its envelope is 3 (message, payload, variables),
# the deepest input object of the schema a few more. Well below the interpreter's recursion
# limit (1000), which code walking the value (coercion, cache keys, logging) would reach.
MAX_DEPTH = 32
MAX_ID_CHARS = 128  # a client's operation id (graphql-ws sends a UUID: 36)

TOO_BIG = 1009  # RFC 6455 "message too big", as uvicorn closes for ws_max_size
TRY_LATER = 1013  # RFC 6455 "try again later": a close before accept (uvicorn: HTTP 403)
INVALID = 4400  # graphql-transport-ws: an invalid message


class MessageRefused(Exception):
    """A message refused before it is handled: the socket is closed with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def oversized(text: str, limit: int) -> bool:
    """Whether `text` is more than `limit` bytes as UTF-8 (encoded only when its length in
    characters leaves it open: at most 4 bytes each)."""
    n = len(text)
    if n <= limit // 4:
        return False
    if n > limit:
        return True
    return len(text.encode("utf-8", "surrogatepass")) > limit


# Nesting is measured on the text, in C-speed passes (a walk over the parsed value in
# Python takes ~10 ms for a 64 KiB message of empty arrays): strings are dropped (their
# brackets are not structure), the rest reduced to its brackets, all of one kind (valid
# JSON is balanced), and each pass removes the innermost pairs: one level.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest more than `limit` levels in `text`, valid JSON."""
    if text.count("[") + text.count("{") <= limit:
        return False
    data = text.encode("utf-8", "surrogatepass")
    if b'"' in data:
        data = _STRING.sub(b"", data)
    data = data.translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(limit):
        data = data.replace(b"[]", b"")
        if not data:
            return False
    return True


def parse_message(text: str, limit: int, refusals: Refusals | None = None) -> Any:
    """One socket message, parsed: refused (`MessageRefused`) when over `limit` bytes
    (counted), not JSON, or nested deeper than MAX_DEPTH."""
    if oversized(text, limit):
        if refusals is not None:
            refusals.count("socket_message_bytes")
        raise MessageRefused(TOO_BIG, "Message too big")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:  # also nesting over 1024, invalid UTF-8
        raise MessageRefused(INVALID, "WebSocket message must be valid JSON") from exc
    if too_deep(text):
        raise MessageRefused(INVALID, "WebSocket message nested too deeply")
    return value


def valid_id(value: object) -> bool:
    """An operation id: a string of at most MAX_ID_CHARS."""
    return isinstance(value, str) and len(value) <= MAX_ID_CHARS


class MessageBudget:
    """A socket's token bucket: `rate` messages a second, `burst` at once."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Take one token: 0 when there was one, else the seconds until there is (the
        message waits that long; its token is spent then)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) - 1
        self.stamp = now
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def message_budget(rate: float, subscriptions: int) -> MessageBudget:
    """The bucket of one socket: `rate` a second, a burst of twice `subscriptions` (all of a
    socket's subscriptions started and completed at once) or a second's worth."""
    return MessageBudget(rate, max(2.0 * subscriptions, rate))


class SocketSlot:
    """One open socket's place in its user's count (and in the hub's registry, where
    revocation finds it): taken by `admit`, given back by `release`, exactly once."""

    __slots__ = ("hub", "user_id", "ws")

    def __init__(self, hub: Hub, user_id: uuid.UUID, ws: WebSocket) -> None:
        self.hub: Hub | None = hub
        self.user_id = user_id
        self.ws = ws

    def release(self) -> None:
        """Leave the registry (no-op the second time)."""
        hub, self.hub = self.hub, None
        if hub is not None:
            hub.unregister_socket(self.user_id, self.ws)


def admit(hub: Hub, user_id: uuid.UUID, ws: WebSocket, limit: int,
          refusals: Refusals | None = None) -> SocketSlot | None:
    """A slot for this authenticated socket, or None (counted) when its user has `limit`
    open. Checked and taken in one step: no await between them."""
    if hub.open_sockets(user_id) >= limit:
        if refusals is not None:
            refusals.count("sockets_per_user")
        return None
    hub.register_socket(user_id, ws)
    return SocketSlot(hub, user_id, ws)


def client_ip(scope: Scope) -> str:
    """The client as the server resolved it (`scope["client"]`: uvicorn applies
    X-Forwarded-For from a trusted proxy)."""
    client = scope.get("client")
    return client[0] if client else "unknown"


async def spend_connection(ip: str, throttle: Throttle) -> None:
    """Spend one of `ip`'s new connections (`socket_connect_rate`, counted when refused;
    keyed by its network: an IPv6 client's /64): RateLimited when it has none left. An IP
    refused again and again is paced as HTTP callers are (`refusals_per_caller`): its next
    connection waits for a refusal token first (RateLimited if none comes within
    `request_wait_seconds`), so a churning client's refusals come at `refusal_rate`, not
    as fast as it reconnects. A WebSocket spends it before its handshake
    (`admit_connection`), an HTTP stream before it is authenticated (web/streams.py)."""
    ip = throttle.network(ip)
    pace = throttle.connect_pace
    reserved = await pace.wait_turn(ip)  # a token taken: given back unless refused
    try:
        await throttle.socket_connect(ip)
    except RateLimited:
        if not reserved:
            pace.spend(ip)
        raise
    if reserved:
        pace.give_back(ip)


async def admit_connection(scope: Scope, send: Send, throttle: Throttle) -> bool:
    """Spend one of the client IP's new sockets (`spend_connection`); refused: close
    before accept (uvicorn: HTTP 403) and return False."""
    try:
        await spend_connection(client_ip(scope), throttle)
    except RateLimited:
        await send({"type": "websocket.close", "code": TRY_LATER, "reason": ""})
        return False
    return True


class ReplayTurns:
    """Per family, one replay turn for the whole process: `turn(family_id)` is held while
    one page of one of its members' replays is read and sent (live/streams.py). A turn
    exists only while someone holds or waits for it (no entry per family ever seen), and is
    given back when its holder's subscription ends (an `async with`: also on cancel).

    And at most `concurrent` page reads at once over all users (`reading()`, 0: no bound):
    a herd of sockets resubscribing with `since` (a restart, a failover) reads its pages a
    few at a time, leaving the rest of the database pool to requests and /health. Only the
    statement holds that slot, never the send: a socket that does not read holds its own
    family's turn, and no other family's."""

    __slots__ = ("_slots", "_turns")

    def __init__(self, concurrent: int = 0) -> None:
        # family id -> [the turn, how many hold or wait for it]
        self._turns: dict[uuid.UUID, list[Any]] = {}
        self._slots = asyncio.Semaphore(concurrent) if concurrent > 0 else None

    def __len__(self) -> int:
        return len(self._turns)

    def turn(self, family_id: uuid.UUID) -> ReplayTurn:
        return ReplayTurn(self, family_id)

    async def _take(self, family_id: uuid.UUID) -> None:
        entry = self._turns.get(family_id)
        if entry is None:
            entry = self._turns[family_id] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            await entry[0].acquire()
        except BaseException:
            self._leave(family_id, entry)
            raise

    def reading(self) -> AbstractAsyncContextManager[Any]:
        """`async with turns.reading()`: around one page's statement (inside a turn)."""
        return self._slots if self._slots is not None else nullcontext()

    def _give(self, family_id: uuid.UUID) -> None:
        entry = self._turns[family_id]
        entry[0].release()
        self._leave(family_id, entry)

    def _leave(self, family_id: uuid.UUID, entry: list[Any]) -> None:
        entry[1] -= 1
        if entry[1] == 0:
            del self._turns[family_id]


class ReplayTurn:
    """`async with turns.turn(family_id)`: hold the family's replay turn for the block."""

    __slots__ = ("family_id", "turns")

    def __init__(self, turns: ReplayTurns, family_id: uuid.UUID) -> None:
        self.turns, self.family_id = turns, family_id

    async def __aenter__(self) -> None:
        await self.turns._take(self.family_id)

    async def __aexit__(self, *_: object) -> None:
        self.turns._give(self.family_id)

class OperationSlot:
    """One open operation's place in its user's count: taken by `OpenOperations.admit`,
    given back by `release`, exactly once."""

    __slots__ = ("counts", "user_id")

    def __init__(self, counts: OpenOperations, user_id: uuid.UUID) -> None:
        self.counts: OpenOperations | None = counts
        self.user_id = user_id

    def release(self) -> None:
        """Give the slot back (no-op the second time)."""
        counts, self.counts = self.counts, None
        if counts is not None:
            counts.give_back(self.user_id)


class OpenOperations:
    """Operations open per user over all of the user's sockets (of this process), and the
    pace at which a family starts them (`start_turn`)."""

    __slots__ = ("open", "starts")

    def __init__(self) -> None:
        self.open: dict[uuid.UUID, int] = {}
        self.starts: KeyedPace | None = None

    async def start_turn(self, family_id: uuid.UUID, settings: Settings,
                         refusals: Refusals | None = None,
                         before_wait: Callable[[], Awaitable[None]] | None = None) -> None:
        """Wait until the family may start another operation over its sockets (the
        socket is not read meanwhile): `family_subscription_start_burst` at once, then
        `family_subscription_start_rate` a second (giftgraph.admission.pace);
        `before_wait` first when it waits."""
        if self.starts is None:
            self.starts = KeyedPace("subscription_starts_per_family",
                                    settings.family_subscription_start_rate,
                                    settings.family_subscription_start_burst, None, refusals)
        await self.starts.take(str(family_id), 1, before_wait)

    def count(self, user_id: uuid.UUID) -> int:
        return self.open.get(user_id, 0)

    def admit(self, user_id: uuid.UUID, limit: int,
              refusals: Refusals | None = None) -> OperationSlot | None:
        """A slot for an operation of this user, or None (counted) when `limit` are open.
        Checked and taken in one step: no await between them."""
        if self.count(user_id) >= limit:
            if refusals is not None:
                refusals.count("subscriptions_per_user")
            return None
        self.open[user_id] = self.count(user_id) + 1
        return OperationSlot(self, user_id)

    def give_back(self, user_id: uuid.UUID) -> None:
        left = self.count(user_id) - 1
        if left > 0:
            self.open[user_id] = left
        else:  # no entry kept for a user with none open
            self.open.pop(user_id, None)


# What a subscription costs beyond its selection's measured cost: a delivery of each of its
# family's events, however little it selects (`familyEvents { seq }` costs 2: 25,000 of
# them fit in a family's budget, each a delivery of every event, with enough members).
SUBSCRIPTION_COST = 50


class SubscriptionCosts:
    """The measured costs of each family's open subscriptions in this process, together
    (`subscription_cost_per_family`). Each event of a family is rendered once for each of
    its subscriptions' selections (once per distinct selection on the fast paths): 200
    `familyEvents` selections of four pages each (cost ~10,600 apiece), re-rendered for
    each of the family's mutations, kept a core busy within every other bound
    (adversary, 2026-11-27). Taken when a subscription starts (`hold`), before its first
    render; given back when its operation ends. Live queries have their own
    (`live_cost_per_family`)."""

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: dict[uuid.UUID, int] = {}

    def hold(self, family_id: uuid.UUID, selection: int) -> CostHold:
        """Take a subscription's cost (its selection's measured cost and SUBSCRIPTION_COST)
        in its family's, or raise RATE_LIMITED when the family's would pass the limit."""
        cost = selection + SUBSCRIPTION_COST
        held = self.held.get(family_id, 0)
        if held + cost > self.limit:
            raise AppError(f"Your family's subscriptions would together cost more than "
                           f"{self.limit} on this server; close one or select less",
                           code="RATE_LIMITED", limit=self.limit, cost=cost)
        self.held[family_id] = held + cost
        return CostHold(self, family_id, cost)

    def give_back(self, family_id: uuid.UUID, cost: int) -> None:
        left = self.held.get(family_id, 0) - cost
        if left > 0:
            self.held[family_id] = left
        else:  # no entry kept for a family with none open
            self.held.pop(family_id, None)


class CostHold:
    """One subscription's cost in its family's (`SubscriptionCosts.hold`), given back by
    `release` exactly once (a task's done callback: it takes the task, unused)."""

    __slots__ = ("cost", "costs", "family_id")

    def __init__(self, costs: SubscriptionCosts, family_id: uuid.UUID, cost: int) -> None:
        self.costs: SubscriptionCosts | None = costs
        self.family_id, self.cost = family_id, cost

    def release(self, *_: object) -> None:
        costs, self.costs = self.costs, None
        if costs is not None:
            costs.give_back(self.family_id, self.cost)


CUT = "socket cut: it owed its client too much"


class SocketCut(OSError):
    """A socket's send refused by `Owing`: Starlette's WebSocket takes an OSError from the
    server's `send` as the client gone (WebSocketDisconnect 1006), as uvicorn's own
    ClientDisconnected is."""


OWED_KEY = "giftgraph.owed"  # in a scope whose sends are counted: its OwedSend


class Owing:
    """What the process's sockets owe their clients: the memory of the messages that wait
    in the server's `send` for a socket that takes nothing more now (a text message's
    string, 1 to 4 bytes a character: `sys.getsizeof`), and, for the socket, what its
    transport holds already (`buffered`: uvicorn's `send` writes there until the transport
    pauses, the fast paths' writes only while it holds under `HIGH_WATER`)
    (`socket_owed_bytes`). A socket whose client does
    not read would otherwise hold every result its operations make for it: one user's 200
    live subscriptions on sockets it never read grew the process by 1.7 GB, and the moment
    such a socket took a little, every waiting message was written at once and the event
    loop stalled for seconds. A message that would take one socket past `per_socket` cuts
    that socket, one that would take the process's waiting messages past `total` the one
    owing the most (below): reset (`server.reset`: its buffers let go now, and its sends
    waiting for room wake to a closed connection) and every send of it refused from then
    on (`SocketCut`); its client reconnects and catches up (`since`).
    The one owing the most is of the party owing the most (`heaviest`): the family a
    connection is authenticated for (`owed_by`), else its client's network. Counted by
    socket, an attacker's unread streams of ~3 MB each had three legitimate readers of a
    large live query, each owing 11.8 MB, cut within a second (adversary, 2026-11-28).
    Bounded below by one answer (`max_response_bytes`, as a string of 4-byte characters):
    a socket that reads is sent any answer. Counted in characters, the bound let a socket
    of emoji results hold 166 MB (adversary, 2026-11-28).

    uvicorn's `send` returns once a message is in the transport, so a message written
    while its transport has paused stays counted, whole, until the transport drains
    (`OwedSend._hold`, told by the socket's flow control:
    admission.server.WebSocketProtocol); its sender goes on meanwhile, and its next send
    waits in uvicorn's `send`, counted. Counted only while a later send waited, 100
    sockets with one unread 3.9 MB answer each held 105-108 MB in their transports with
    ~8 KB counted, until the send timeout (adversary, 2026-11-29).

    An answer over HTTP is counted the same way, its body while uvicorn's `send` waits for
    its transport to drain (`App` wraps every answer of /graphql and /graphql/stream): a
    subscription stream (multipart, graphql-sse) is a socket in all but name. An answer,
    and a stream's last result, stay counted until the transport drains (`drained`, with
    the copy its view or stream keeps meanwhile); a stream makes its next result only then
    (web/streams.py).
    Uncounted, 68 unread streams of ~4 MB live results took the process to ~1.2 GB until
    `send_timeout`, and 96 unread plain 4 MB answers to 534 MB (adversary, 2026-11-28;
    bench/NOTES.md). A cut connection is reset (admission.server: its transport is in its
    scope, with or without the fast paths; without a reset, uvicorn's own WebSocket
    protocol kept a cut socket's waiting sends, 66-69 MB over a 32 MB bound, until its
    client closed: adversary, 2026-11-29). Not counted yet: results under the kernel's
    send buffer that are never read (they never pause the transport), and what uvloop
    holds of an HTTP body partly sent beyond the copy its view keeps."""

    __slots__ = ("cut_owed", "ipv6_prefix_length", "parties", "per_socket", "refusals",
                 "stalled", "total", "total_limit")

    def __init__(self, per_socket: int, total: int, refusals: Refusals | None = None,
                 ipv6_prefix_length: int = 64) -> None:
        self.per_socket, self.total_limit = per_socket, max(total, per_socket)
        self.refusals = refusals
        self.ipv6_prefix_length = ipv6_prefix_length
        self.total = 0
        self.parties: dict[object, Party] = {}  # those owing something now, by key
        self.cut_owed = 0  # what sockets cut already still owe until their sends wake
        # The sockets whose transport has paused with a message owed (`OwedSend._hold`),
        # oldest first, and since when: its client has taken none of it since.
        self.stalled: dict[OwedSend, float] = {}

    @classmethod
    def of(cls, settings: Settings, refusals: Refusals | None = None) -> Owing:
        # At least one answer of 4-byte characters waiting, beside one in the transport.
        per_socket = max(settings.max_socket_owed_bytes, 5 * settings.max_response_bytes)
        return cls(per_socket, settings.max_owed_bytes, refusals, settings.ipv6_prefix_length)

    def wrap(self, scope: Scope, send: Send) -> OwedSend:
        """`send` of one WebSocket or HTTP answer, counted; also in its scope (`OWED_KEY`),
        for what waits after `send` (`drained`) and whose it is (`owed_by`); an HTTP
        answer's caller lets it go at the answer's end. A WebSocket's `send` is uvicorn's
        own here: its transport is kept in the scope (`server.websocket_transport`)."""
        if scope.get("type") == "websocket":
            server.websocket_transport(scope, send)
        owed = OwedSend(self, scope, send)
        scope[OWED_KEY] = owed
        return owed

    def party(self, socket: OwedSend) -> object:
        """Whose `socket` is: its family once authenticated, else its client's network
        (`CUT_PARTY` once cut)."""
        if socket.cut:
            return CUT_PARTY
        if socket.party is not None:
            return socket.party
        return client_key(client_ip(socket.scope), self.ipv6_prefix_length)

    def over(self, size: int) -> bool:
        """Whether `size` more would take the process past its bound (what sockets cut
        already owe aside: it is let go as their sends wake)."""
        return self.total - self.cut_owed + size > self.total_limit

    def longest_stalled(self) -> OwedSend | None:
        """The socket whose client has taken nothing of what its transport holds for the
        longest, `STALLED_AFTER` or more (not cut yet), or None. Cut before any client
        still taking what it is sent: weighed by bytes alone, 50 families' unread answers
        of ~3.4 MB each held the process at its bound, and a reading client of another
        family, the heaviest party with its one 3.9 MB answer, was cut as it began
        (adversary, 2026-11-29)."""
        now = time.monotonic()
        for socket, since in self.stalled.items():  # oldest first
            if now - since < STALLED_AFTER:
                return None
            if not socket.cut:
                return socket
        return None

    def heaviest(self, adding: OwedSend, size: int, kept: bool) -> OwedSend:
        """The socket to cut when `adding` would owe `size` more past `total` (`kept`:
        what it keeps for its client, not what it waits to write): a socket stalled for
        `STALLED_AFTER` (`longest_stalled`); else, of the party owing the
        most (`adding`'s on a tie), the socket owing the most (`adding` on a tie). What
        waits to be written counts first, what a stream keeps of results its client has
        taken only between equals: counted alike, a client that read every result of two
        streams was cut for the attackers' unread answers (adversary, 2026-11-29). Linear
        in the parties owing now, and in the sockets of the one chosen."""
        stalled = self.longest_stalled()
        if stalled is not None:
            return stalled
        mine = adding.key if adding.key is not None else self.party(adding)
        unread = 0 if kept else size

        def weight(owed: int, kept_now: int) -> tuple[int, int]:
            return owed - kept_now, owed

        own = self.parties.get(mine)
        worst = mine
        most = weight(size, size - unread) if own is None \
            else weight(own.owed + size, own.kept + size - unread)
        for key, party in self.parties.items():
            if key != CUT_PARTY and key != mine and weight(party.owed, party.kept) > most:
                worst, most = key, weight(party.owed, party.kept)
        largest, heaviest = adding, (-1, -1)
        if worst == mine:
            heaviest = weight(adding.owed + size, adding.kept + size - unread)
        chosen = self.parties.get(worst)
        for socket in () if chosen is None else chosen.members:
            if socket is not adding and weight(socket.owed, socket.kept) > heaviest:
                largest, heaviest = socket, weight(socket.owed, socket.kept)
        return largest

    def _count(self, socket: OwedSend, size: int, kept: int = 0) -> None:
        """`size` more (or less) owed by `socket`, `kept` more (or less) of it kept (both
        already in its own counts), in its party's; the socket among its party's members
        while it owes anything."""
        if not size and not kept:
            return
        key = socket.key
        if key is None:
            key = socket.key = self.party(socket)
            party = self.parties.get(key)
            if party is None:
                party = self.parties[key] = Party()
            party.members.add(socket)
        else:
            party = self.parties[key]
        party.owed += size
        party.kept += kept
        if key == CUT_PARTY:
            self.cut_owed += size
        if not socket.owed:
            self._leave(socket, party)

    def _leave(self, socket: OwedSend, party: Party) -> None:
        party.members.discard(socket)
        if not party.members:
            del self.parties[socket.key]
        socket.key = None

    def _rekey(self, socket: OwedSend) -> None:
        """`socket`'s debt to the party it is now (`party`), from the one it was in."""
        key = self.party(socket)
        if socket.key is None or socket.key == key:
            return
        old = self.parties[socket.key]
        old.owed -= socket.owed
        old.kept -= socket.kept
        if socket.key == CUT_PARTY:
            self.cut_owed -= socket.owed
        self._leave(socket, old)
        self._count(socket, socket.owed, socket.kept)

    def move(self, socket: OwedSend, family_id: uuid.UUID) -> None:
        """`socket` is `family_id`'s from now on, with what it owes already."""
        socket.party = family_id
        self._rekey(socket)

    def cut(self, socket: OwedSend, why: str, adding: int = 0) -> None:
        """Cut `socket` (`adding`: what it was about to owe more)."""
        if socket.cut:
            return
        socket.cut = True
        self._rekey(socket)  # what it owes is let go as its sends wake
        if self.refusals is not None:
            self.refusals.count("socket_owed_bytes")
        http = socket.scope.get("type") == "http"
        log.info("%s cut: it owes its client %d bytes (%s)", "connection" if http else "socket",
                 socket.owed + adding, why)
        transport = socket.scope.get(server.TRANSPORT_KEY)
        if transport is not None:
            server.reset(transport)  # its waiting sends wake to a closed connection

    @staticmethod
    def transport_holds(scope: Scope) -> int:
        """What the transport of `scope`'s connection holds unsent (0: not known)."""
        transport = scope.get(server.TRANSPORT_KEY)
        return 0 if transport is None else int(transport.get_write_buffer_size())


class Party:
    """What one party's sockets owe (`owed`), of it what they keep (`kept`), and those
    sockets (`members`)."""

    __slots__ = ("kept", "members", "owed")

    def __init__(self) -> None:
        self.owed = 0
        self.kept = 0
        self.members: set[OwedSend] = set()


CUT_PARTY = "(cut)"  # the party of sockets cut already: what they owe is let go
# Seconds a socket's transport stays paused with a message owed before, past the process's
# bound, it is cut ahead of any client that still takes what it is sent (`longest_stalled`).
STALLED_AFTER = 1.0


class OwedSend:
    """One WebSocket's or HTTP answer's ASGI `send`, with what it owes counted in its
    `Owing`."""

    __slots__ = ("cut", "held", "kept", "key", "owed", "owing", "party", "scope", "send",
                 "watching")

    def __init__(self, owing: Owing, scope: Scope, send: Send) -> None:
        self.owing, self.scope, self.send = owing, scope, send
        self.owed = 0
        self.kept = 0
        self.held = 0  # of what it owes, what its paused transport keeps (`_hold`)
        self.watching = False  # told when its transport drains (`_released`)
        self.cut = False
        self.party: uuid.UUID | None = None  # its family, once authenticated (`owed_by`)
        self.key: object = None  # the party it is counted in while it owes anything

    async def __call__(self, message: Any) -> None:
        if self.cut:
            raise SocketCut(CUT)
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            size = sys.getsizeof(text) if text is not None else len(message.get("bytes") or b"")
        elif kind == "http.response.body":
            size = len(message.get("body") or b"")
        else:
            await self.send(message)
            return
        self._owe(size, max(0, self.owing.transport_holds(self.scope) - self.held))
        try:
            await self.send(message)
        finally:
            self._paid(size)
        if kind == "websocket.send":  # an HTTP answer's caller waits, with what it keeps
            flow = self.scope.get(server.FLOW_KEY)
            if flow is not None and flow.write_paused:
                self._hold(flow, size)

    async def drained(self, also: int = 0) -> None:
        """Wait until an HTTP connection's transport takes more (its buffer under the
        high-water mark), with what the transport holds and `also` (what the caller keeps
        for its client meanwhile: an answer's body, a stream's last result) owed while it
        waits. uvicorn's `send` returns once a body is in the transport: without this, an
        answer or a stream's result its client does not read would be counted only while a
        later `send` waits. Cut (`SocketCut`) past the bounds, or when cut meanwhile."""
        if self.cut:
            raise SocketCut(CUT)
        flow = self.scope.get(server.FLOW_KEY)
        if flow is None or not flow.write_paused:
            return
        size = also + max(0, self.owing.transport_holds(self.scope) - self.held)
        self._owe(size, 0)
        try:
            await flow.drain()
        finally:
            self._paid(size)
        if self.cut:
            raise SocketCut(CUT)

    def _hold(self, flow: Any, size: int) -> None:
        """A WebSocket message of `size` has just gone into a transport that has paused
        writing (its client takes nothing more now): it stays owed, as the transport keeps
        it, until the transport drains or the connection is lost (`flow.when_drained`),
        without holding up the sender, whose callers let go of the message itself. The
        whole message is counted, not what the transport says it holds unsent: uvloop
        keeps a write's whole chunk until all of it is sent. Waiting in `send` instead
        kept each message's text alive beside its frame (~8 MB a socket of one unread
        3.9 MB answer, ~1.1 MB of it counted; a reading client of another family was cut
        as the heaviest: adversary, 2026-11-29). Cut past the bounds (`SocketCut`)."""
        if not self.watching:  # first: a cut's reset (connection lost) lets go of `held`
            self.watching = True
            self.owing.stalled[self] = time.monotonic()
            flow.when_drained(self._released)
        more = max(self.owing.transport_holds(self.scope), self.held + size) - self.held
        if more > 0:
            self._owe(more, 0)
            self.held += more

    def _released(self) -> None:
        """Its transport drained, or its connection was lost: what it kept is paid."""
        self.watching = False
        self.owing.stalled.pop(self, None)
        held, self.held = self.held, 0
        if held:
            self._paid(held)

    def keep(self, size: int) -> None:
        """`size` bytes owed from now until the next `keep` (0: none): what its caller
        keeps for its client between sends (a stream's last result, which Strawberry's
        stream holds until its next part). Cut past the bounds (`SocketCut`)."""
        more = size - self.kept
        if more > 0:
            self._owe(more, 0, kept=True)
            self.kept = size
            self.owing._count(self, 0, more)
        elif more < 0:
            self.kept = size
            self.owing._count(self, 0, more)
            self._paid(-more)

    def _owe(self, size: int, buffered: int, kept: bool = False) -> None:
        """`size` bytes more owed (`buffered`: what its transport holds beside them;
        `kept`: what its caller keeps, `keep`), or cut: this socket past `per_socket`, or
        the heaviest past `total` (`Owing.heaviest`)."""
        owing = self.owing
        if self.cut:
            raise SocketCut(CUT)
        if self.owed + buffered + size > owing.per_socket:
            owing.cut(self, "max_socket_owed_bytes", buffered + size)
            raise SocketCut(CUT)
        if owing.over(size):
            largest = owing.heaviest(self, size, kept)
            owing.cut(largest, "max_owed_bytes", size if largest is self else 0)
            if largest is self:
                raise SocketCut(CUT)
        self.owed += size
        owing.total += size
        owing._count(self, size)

    def _paid(self, size: int) -> None:
        owing = self.owing
        self.owed -= size
        owing.total -= size
        owing._count(self, -size)


def owed_by(scope: Scope, family_id: uuid.UUID) -> None:
    """What `scope`'s connection owes is its family's from now on (`Owing.heaviest`)."""
    owed = scope.get(OWED_KEY)
    if owed is not None:
        owed.owing.move(owed, family_id)


async def drained(scope: Scope, also: int = 0) -> None:
    """Until `scope`'s connection takes more, counted when its answer is
    (`OwedSend.drained`), else only waited for."""
    owed = scope.get(OWED_KEY)
    if owed is not None:
        await owed.drained(also)
        return
    flow = scope.get(server.FLOW_KEY)
    if flow is not None and flow.write_paused:
        await flow.drain()
