"""What sockets owe their clients (admission.sockets.Owing): per socket and per process,
the messages waiting in `send`; the socket past a bound is cut, and nothing stays counted
once its sends are over."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from giftgraph.admission.server import FLOW_KEY, TRANSPORT_KEY
from giftgraph.admission.sockets import STALLED_AFTER, OwedSend, Owing, SocketCut, owed_by


class Stuck:
    """A socket's server-side `send` whose client takes nothing until `free()`: each
    message waits (as uvicorn's waits for room), or fails once the socket is reset."""

    def __init__(self) -> None:
        self.room = asyncio.Event()
        self.reset = False
        self.sent: list[Any] = []

    async def __call__(self, message: Any) -> None:
        await self.room.wait()
        if self.reset:
            raise OSError("connection lost")
        self.sent.append(message)

    def free(self) -> None:
        self.room.set()


class Transport:
    """A connection's transport: what it holds unsent, and whether it was reset (and then
    `on_reset`)."""

    def __init__(self, holds: int = 0, on_reset: Callable[[], None] | None = None) -> None:
        self.holds = holds
        self.aborted = False
        self.on_reset = on_reset

    def get_write_buffer_size(self) -> int:
        return self.holds

    def get_extra_info(self, _: str) -> None:
        return None

    def abort(self) -> None:
        self.aborted = True
        if self.on_reset is not None:
            self.on_reset()


class Flow:
    """A connection's flow control (for a WebSocket, its protocol: admission.server keeps
    it in the scope): paused until `resume()`, which calls back whoever waits for it (as
    the connection lost does)."""

    def __init__(self) -> None:
        self.write_paused = False
        self.resumed = asyncio.Event()
        self.callbacks: list[Callable[[], None]] = []

    async def drain(self) -> None:
        await self.resumed.wait()

    def when_drained(self, callback: Callable[[], None]) -> None:
        if self.write_paused:
            self.callbacks.append(callback)
        else:
            callback()

    def pause(self) -> None:
        self.write_paused = True
        self.resumed.clear()

    def resume(self) -> None:
        self.write_paused = False
        self.resumed.set()
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


class Unread:
    """uvicorn's `send` of a socket whose client reads nothing (until `take()`): each
    message goes into its transport, which pauses writing past 1,000 bytes, and `send`
    returns."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.transport: Transport = scope[TRANSPORT_KEY]
        self.flow = scope[FLOW_KEY] = Flow()

    async def __call__(self, message: Any) -> None:
        self.transport.holds += len(message["text"])
        if self.transport.holds > 1000:  # its high-water mark
            self.flow.pause()

    def take(self) -> None:
        """Its client takes all the transport holds (or its connection is lost)."""
        self.transport.holds = 0
        self.flow.resume()


def wired(scope: dict[str, Any], resets: list[object]) -> dict[str, Any]:
    """`scope` with its connection's transport in it, as the server keeps it, whose reset
    puts the scope in `resets`."""
    scope[TRANSPORT_KEY] = Transport(on_reset=lambda: resets.append(scope))
    return scope


def text(n: int, char: str = "x") -> dict[str, Any]:
    return {"type": "websocket.send", "text": char * n}


def held(n: int, char: str = "x") -> int:
    """What a waiting message of `n` characters holds."""
    return sys.getsizeof(char * n)


def release(stuck: list[Stuck], reading: Stuck) -> None:
    """Every send waiting wakes: `reading`'s to a client that takes them, the others' to
    a connection reset."""
    for socket in stuck:
        socket.reset = socket is not reading
        socket.free()


def settled(owing: Owing) -> bool:
    """Nothing owed anywhere any more."""
    return owing.total == 0 and owing.cut_owed == 0 and not owing.parties


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_socket_past_its_bound_is_cut_and_its_next_sends_refused() -> None:
    resets: list[object] = []
    owing = Owing(per_socket=1000, total=10_000)
    stuck = Stuck()
    scope = wired({"type": "websocket"}, resets)
    send = owing.wrap(scope, stuck)
    waiting = [asyncio.ensure_future(send(text(400))) for _ in range(2)]
    await settle()
    assert send.owed == 2 * held(400)
    assert owing.total == 2 * held(400)
    with pytest.raises(SocketCut):
        await send(text(400))  # ~1,350 > 1,000
    assert resets == [scope]
    assert send.cut
    with pytest.raises(SocketCut):
        await send({"type": "websocket.close", "code": 1000})  # every send, once cut
    stuck.reset = True
    stuck.free()  # the reset wakes what waited, to a closed connection
    for task in waiting:
        with pytest.raises(OSError, match="connection lost"):
            await task
    assert send.owed == 0
    assert settled(owing)


async def test_the_process_bound_cuts_the_socket_that_owes_most() -> None:
    resets: list[object] = []
    owing = Owing(per_socket=6000, total=6000)
    big, small = Stuck(), Stuck()
    big_scope = wired({"type": "websocket", "name": "big"}, resets)
    big_send = owing.wrap(big_scope, big)
    small_send = owing.wrap(wired({"type": "websocket", "name": "small"}, resets), small)
    big_waiting = [asyncio.ensure_future(big_send(text(2500))) for _ in range(2)]
    await settle()
    assert owing.total == 2 * held(2500)
    answered = asyncio.ensure_future(small_send(text(1500)))  # ~6,600 > 6,000
    await settle()
    assert resets == [big_scope]
    assert big_send.cut
    assert not small_send.cut
    small.free()
    await answered  # the socket that reads is sent its message
    assert small.sent == [text(1500)]
    big.reset = True
    big.free()
    for task in big_waiting:
        with pytest.raises(OSError, match="connection lost"):
            await task
    assert settled(owing)


async def test_the_process_bound_cuts_from_the_family_that_owes_most() -> None:
    """Many small sockets of one family against one larger socket of another: the family
    owing most loses a socket, however it spreads what it owes (counted by socket, the
    larger reader was cut: adversary, 2026-11-28)."""
    resets: list[object] = []
    owing = Owing(per_socket=6000, total=8000)
    many, one = uuid.uuid4(), uuid.uuid4()
    stuck: list[Stuck] = []

    def connect(family: uuid.UUID, n: int) -> tuple[dict[str, Any], OwedSend]:
        scope = wired({"type": "websocket", "client": (f"10.0.0.{n}", 1000)}, resets)
        stuck.append(Stuck())
        send = owing.wrap(scope, stuck[-1])
        owed_by(scope, family)
        return scope, send

    spread = [connect(many, n) for n in range(5)]
    waiting = [asyncio.ensure_future(send(text(1000))) for _, send in spread[:4]]
    _, reader = connect(one, 9)
    waiting.append(asyncio.ensure_future(reader(text(2500))))
    waiting.append(asyncio.ensure_future(spread[4][1](text(1000))))
    await settle()
    assert owing.total == 5 * held(1000) + held(2500) < 8000
    assert max(send.owed for _, send in spread) < reader.owed
    waiting.append(asyncio.ensure_future(reader(text(1000))))  # past 8,000
    await settle()
    assert len(resets) == 1
    assert resets[0] in [scope for scope, _ in spread]
    assert not reader.cut
    assert reader.owed == held(2500) + held(1000)
    release(stuck, stuck[-1])
    await asyncio.gather(*waiting, return_exceptions=True)
    assert stuck[-1].sent == [text(2500), text(1000)]
    assert owing.total == 0


async def test_what_a_connection_owes_moves_to_its_family_when_it_authenticates() -> None:
    owing = Owing(per_socket=6000, total=60_000)
    stuck = Stuck()
    scope: dict[str, Any] = {"type": "http", "client": ("192.0.2.7", 1000)}
    send = owing.wrap(scope, stuck)
    waiting = asyncio.ensure_future(send(text(1000)))
    await settle()
    assert list(owing.parties) == ["ip:192.0.2.7"]
    family = uuid.uuid4()
    owed_by(scope, family)
    assert list(owing.parties) == [family]
    assert owing.parties[family].owed == held(1000)
    assert owing.parties[family].members == {send}
    stuck.free()
    await waiting
    assert not owing.parties


async def test_an_empty_send_owes_nothing() -> None:
    """A body of no bytes from a connection owing nothing (an empty HTTP answer's body),
    its party owing nothing (a KeyError in the party's count, adversary 2026-11-29)."""
    owing = Owing(per_socket=6000, total=6000)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    owed = owing.wrap({"type": "http", "client": ("10.0.0.1", 1)}, send)
    await owed({"type": "http.response.body", "body": b""})
    await owed({"type": "websocket.send", "bytes": b""})
    assert len(sent) == 2
    assert settled(owing)


async def test_what_a_stream_keeps_of_results_taken_weighs_after_what_waits_unread() -> None:
    """A family whose client took every result, its stream keeping the last one (twice its
    text), owes more than another's unread answer: the unread answer is cut, not the
    reading client's stream (adversary, 2026-11-29)."""
    resets: list[object] = []
    owing = Owing(per_socket=6000, total=6000)
    reader_scope = wired({"type": "websocket", "client": ("10.0.0.1", 1)}, resets)
    reader = owing.wrap(reader_scope, Stuck())
    owed_by(reader_scope, uuid.uuid4())
    reader.keep(3500)  # its last result, taken, kept until the next
    stuck = Stuck()
    unread_scope = wired({"type": "websocket", "client": ("10.0.0.2", 1)}, resets)
    unread = owing.wrap(unread_scope, stuck)
    owed_by(unread_scope, uuid.uuid4())
    waiting = asyncio.ensure_future(unread(text(2000)))
    await settle()
    reader.keep(4000)  # its next result: past 6,000
    assert resets == [unread_scope]
    assert not reader.cut
    stuck.reset = True
    stuck.free()
    with pytest.raises(OSError, match="connection lost"):
        await waiting
    reader.keep(0)
    assert settled(owing)


async def test_a_socket_cut_already_is_not_cut_again_in_place_of_another() -> None:
    """While a cut socket's waiting sends have not woken yet, what it owes no longer counts
    against the others, and the next crossing of the bound cuts a socket that is not cut
    yet: chosen again (its cut a no-op), the cut one let every later send through
    (adversary, 2026-11-29)."""
    resets: list[object] = []
    owing = Owing(per_socket=10_000, total=10_000)
    family = uuid.uuid4()
    stuck = [Stuck() for _ in range(3)]
    scopes = [wired({"type": "websocket", "n": n}, resets) for n in range(3)]
    sends = [owing.wrap(scope, s) for scope, s in zip(scopes, stuck, strict=True)]
    for scope in scopes:
        owed_by(scope, family)
    waiting = [asyncio.ensure_future(sends[0](text(7000))),
               asyncio.ensure_future(sends[1](text(1000))),
               asyncio.ensure_future(sends[2](text(1000)))]
    reader = Stuck()
    reader.free()
    other = owing.wrap(wired({"type": "websocket", "n": "other"}, resets), reader)
    await settle()
    await other(text(1000))  # past 10,000: the family owing most loses its largest
    assert resets == [scopes[0]]
    assert owing.cut_owed == held(7000)
    waiting += [asyncio.ensure_future(sends[1](text(3000))),
                asyncio.ensure_future(sends[2](text(3000)))]
    await settle()
    assert resets == [scopes[0]]  # under the bound, the cut one's debt aside
    with pytest.raises(SocketCut):
        await sends[2](text(2000))  # past it: the largest of those not cut yet
    assert resets == [scopes[0], scopes[2]]
    release(stuck, stuck[1])
    await asyncio.gather(*waiting, return_exceptions=True)
    assert len(stuck[1].sent) == 2
    assert settled(owing)


async def test_before_authentication_a_network_is_one_party() -> None:
    """Unauthenticated, an IPv6 host's addresses of one /64 owe together."""
    resets: list[object] = []
    owing = Owing(per_socket=6000, total=6000)
    stuck = [Stuck() for _ in range(4)]
    scopes: list[dict[str, Any]] = [
        {"type": "http", "client": (f"2001:db8::{n}", 1000)} for n in range(1, 4)]
    scopes.append({"type": "http", "client": ("2001:db9::1", 1000)})
    sends = [owing.wrap(wired(scope, resets), s) for scope, s in zip(scopes, stuck, strict=True)]
    waiting = [asyncio.ensure_future(send(text(1200))) for send in sends[:3]]
    waiting.append(asyncio.ensure_future(sends[3](text(2000))))
    await settle()
    assert len(resets) == 0
    waiting.append(asyncio.ensure_future(sends[3](text(500))))  # past 6,000
    await settle()
    assert any(send.cut for send in sends[:3])
    assert not sends[3].cut
    release(stuck, stuck[3])
    await asyncio.gather(*waiting, return_exceptions=True)
    assert len(stuck[3].sent) == 2


async def test_what_waits_is_counted_in_memory_and_with_the_transports_buffer() -> None:
    """Counted in characters, a text of emoji held four times the bound; what the
    socket's transport holds already counts too."""
    owing = Owing(per_socket=10_000, total=100_000)
    stuck = Stuck()
    send = owing.wrap({"type": "websocket", TRANSPORT_KEY: Transport(holds=5000)}, stuck)
    waiting = asyncio.ensure_future(send(text(1000, "\N{GRINNING FACE}")))  # ~4,000
    await settle()
    assert send.owed == held(1000, "\N{GRINNING FACE}") > 4000
    with pytest.raises(SocketCut):  # 5,000 + ~4,000 + ~1,050 > 10,000
        await send(text(1000))
    stuck.reset = True
    stuck.free()
    with pytest.raises(OSError, match="connection lost"):
        await waiting
    assert owing.total == 0


async def test_a_socket_that_reads_is_sent_any_answer_up_to_its_bound() -> None:
    owing = Owing(per_socket=1100, total=1100)
    flowing = Stuck()
    flowing.free()
    send: OwedSend = owing.wrap({}, flowing)
    for _ in range(20):  # 20,000 in all, one at a time: never more than 1,000 owed
        await send(text(1000))
    await send({"type": "websocket.close", "code": 1000})
    assert len(flowing.sent) == 21
    assert owing.total == 0
    assert not send.cut


async def test_an_http_answer_is_counted_with_its_transport_and_its_connection_reset() -> None:
    """A subscription stream's body waits in `send` while its transport drains; with what
    the transport holds it counts against the same bounds, and a cut resets the
    connection through the transport in its scope (no fast path needed)."""
    transport = Transport(holds=600)
    owing = Owing(per_socket=1000, total=10_000)
    stuck = Stuck()
    scope: dict[str, Any] = {"type": "http", TRANSPORT_KEY: transport}
    send = owing.wrap(scope, stuck)
    start = asyncio.ensure_future(send({"type": "http.response.start", "status": 200}))
    await settle()
    assert owing.total == 0  # headers are not counted
    waiting = asyncio.ensure_future(send({"type": "http.response.body", "body": b"x" * 300,
                                          "more_body": True}))
    await settle()
    assert send.owed == 300
    with pytest.raises(SocketCut):  # 600 held + 300 waiting + 200 > 1,000
        await send({"type": "http.response.body", "body": b"y" * 200, "more_body": True})
    assert transport.aborted
    stuck.reset = True
    stuck.free()
    with pytest.raises(OSError, match="connection lost"):
        await start
    with pytest.raises(OSError, match="connection lost"):
        await waiting
    assert owing.total == 0


async def test_what_an_answer_keeps_between_sends_is_counted_until_replaced() -> None:
    """`keep`: a stream's last result, held between its parts, counts against both bounds
    until the next `keep` replaces it; past the process's bound the one owing most is cut."""
    owing = Owing(per_socket=1000, total=1500)
    first = owing.wrap({"type": "http"}, Stuck())
    second = owing.wrap({"type": "http"}, Stuck())
    first.keep(800)
    second.keep(600)
    assert (first.owed, second.owed, owing.total) == (800, 600, 1400)
    first.keep(300)  # its next part, smaller
    assert (first.owed, owing.total) == (300, 900)
    with pytest.raises(SocketCut):
        first.keep(1200)  # past its own bound
    assert first.cut
    second.keep(0)
    assert owing.total == 300  # the cut one still holds until it lets go
    first.keep(0)
    assert settled(owing)


async def test_a_sockets_message_stays_owed_in_its_transport_until_it_takes_more() -> None:
    """uvicorn's `send` returns once a message is in the transport: while its transport is
    paused (its client not reading), the message stays owed, whole, until it drains; the
    sender is not held meanwhile (it lets go of the message). Counted only while a later
    send waited, 100 sockets of one unread 3.9 MB answer each held ~106 MB in their
    transports with ~8 KB counted (adversary, 2026-11-29)."""
    resets: list[object] = []
    owing = Owing(per_socket=10_000, total=100_000)
    scope = wired({"type": "websocket"}, resets)
    unread = Unread(scope)
    send = owing.wrap(scope, unread)
    await asyncio.wait_for(send(text(4000)), 1)  # returns: the sender goes on
    assert unread.transport.holds == 4000
    assert send.owed == owing.total == held(4000)  # the whole message, as uvloop keeps it
    unread.take()
    assert settled(owing)
    await send(text(100))  # under the high-water mark: nothing stays owed after the send
    assert settled(owing)
    assert not resets


async def test_a_socket_past_its_bound_by_what_its_transport_holds_is_cut() -> None:
    """Its own bound, and the process's: the sockets holding an answer each in their
    transports are counted together, and the one taking them past the bound is cut; what
    a cut socket's transport kept is let go when its connection is lost (its reset)."""
    resets: list[object] = []
    owing = Owing(per_socket=4000, total=8000)
    scope = wired({"type": "websocket", "n": "large"}, resets)
    unread = Unread(scope)
    send = owing.wrap(scope, unread)
    await send(text(2500))
    with pytest.raises(SocketCut):  # 2,549 kept in its transport + 2,049 > 4,000
        await send(text(2000))
    assert resets == [scope]
    unread.take()  # the reset: its connection lost
    assert settled(owing)
    scopes = [wired({"type": "websocket", "n": n}, resets) for n in range(3)]
    unreads = [Unread(scope) for scope in scopes]
    sends = [owing.wrap(scope, u) for scope, u in zip(scopes, unreads, strict=True)]
    for send in sends[:2]:
        await send(text(3000))
    assert owing.total == 2 * held(3000)
    with pytest.raises(SocketCut):  # 9,647 > 8,000: the one owing most is cut
        await sends[2](text(3500))
    assert resets == [scope, scopes[2]]
    for u in unreads[:2]:
        u.take()
    assert settled(owing)


async def test_each_message_a_paused_transport_keeps_is_counted_once() -> None:
    """Messages written one after another into a paused transport (a socket's operations
    each sending) are each counted once, however much of them the transport says it holds,
    and all let go at the one drain."""
    owing = Owing(per_socket=10_000, total=10_000)
    scope = wired({"type": "websocket"}, [])
    unread = Unread(scope)
    send = owing.wrap(scope, unread)
    for _ in range(3):
        await send(text(2000))
    assert unread.transport.holds == 6000
    assert send.owed == owing.total == 3 * held(2000)  # not the transport again per message
    unread.transport.holds = 7000  # it says more than was counted: what it says counts
    await send(text(10))
    assert send.owed == 7010
    unread.take()
    assert settled(owing)



async def test_past_the_process_bound_a_stalled_socket_is_cut_before_a_reading_one() -> None:
    """Weighed by bytes alone, 50 families' unread answers held the process at its bound
    and a reading client of another family, heavier with its one larger answer, was cut as
    it began (adversary, 2026-11-29): a socket whose transport has held its message for
    `STALLED_AFTER` is cut first, the longest stalled first; one paused for less is not
    told apart from a reader."""
    resets: list[object] = []
    owing = Owing(per_socket=4000, total=8000)
    scopes = [wired({"type": "websocket", "n": n}, resets) for n in range(3)]
    unread = [Unread(scope) for scope in scopes]
    sends = [owing.wrap(scope, u) for scope, u in zip(scopes, unread, strict=True)]
    for scope in scopes:
        owed_by(scope, uuid.uuid4())  # a family each
    for send in sends[:2]:
        await send(text(2500))
    assert list(owing.stalled) == sends[:2]
    reader_scope = wired({"type": "websocket", "n": "reader"}, resets)
    reader = owing.wrap(reader_scope, Stuck())
    owed_by(reader_scope, uuid.uuid4())
    waiting = asyncio.ensure_future(reader(text(3200)))  # past the bound: heaviest, not stalled
    await settle()
    assert resets == [reader_scope]  # (the two were paused for less than STALLED_AFTER)
    with pytest.raises(SocketCut):
        await waiting
    for send in sends[:2]:
        owing.stalled[send] -= STALLED_AFTER  # as if paused that long
    reader_scope = wired({"type": "websocket", "n": "reader again"}, resets)
    reader = owing.wrap(reader_scope, Stuck())
    owed_by(reader_scope, uuid.uuid4())
    waiting = asyncio.ensure_future(reader(text(3200)))
    await settle()
    assert resets[1:] == [scopes[0]]  # the longest stalled, not the heaviest
    unread[0].take()  # its reset: its connection lost
    assert list(owing.stalled) == [sends[1]]
    reader.send.free()  # type: ignore[attr-defined]
    await waiting
    unread[1].take()
    assert settled(owing)
    assert not owing.stalled
