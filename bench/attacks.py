"""The attacker of `giftgraph bench fairness`: one class of hostile load per run, from a few
concurrent connections, each sending as fast as it is answered until the parent says stop.

Every attack meets the server's real default limits (the documents are built from them);
what the server refuses, and how, is counted (`Tally`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from graphql.language import Lexer, Source, TokenKind

from bench import wsclient
from bench.harness import PROTOCOL
from bench.workers import Channel

CLASSES = ("fragments", "new_documents", "big_messages", "churn", "signup", "search", "stalled",
           "mutations")
ANSWER_WAIT = 120.0  # seconds an attacker waits for one answer before it counts a failure


# ---------------------------------------------------------------- the documents


def token_count(document: str) -> int:
    """GraphQL tokens in `document` as the parser counts them (comments excluded)."""
    lexer = Lexer(Source(document))
    n = 0
    while lexer.advance().kind != TokenKind.EOF:
        n += 1
    return n


def doubling_document(k: int) -> str:
    """`{ ...Fk }` where F0 is `__typename` and each Fi spreads F(i-1) twice: 2^k fields
    once every fragment is expanded, in 10k + 11 tokens."""
    parts = [f"{{ ...F{k} }}", "fragment F0 on Query { __typename }"]
    parts += [f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, k + 1)]
    return "\n".join(parts)


def largest_doubling(max_tokens: int) -> int:
    """The largest k whose doubling document stays under `max_tokens` tokens."""
    return (max_tokens - 1 - 11) // 10


def flat_document(max_tokens: int) -> str:
    """One selection of `__typename` repeated up to just under `max_tokens` tokens: every
    pair of fields is compared by the overlapping-fields validation."""
    return "{ " + "__typename " * (max_tokens - 3) + "}"


def padded_subscribe(size: int, op_id: str) -> bytes:
    """A graphql-transport-ws `subscribe` of `{ __typename }` padded by a comment in the
    query to exactly `size` bytes (a valid operation, answered by next and complete)."""
    def build(pad: int) -> bytes:
        return orjson.dumps({"id": op_id, "type": "subscribe",
                             "payload": {"query": "{ __typename }\n#" + "x" * pad}})
    base = len(build(0))
    return build(max(0, size - base))


def search_pattern(length: int) -> str:
    """A `search` argument of `length` characters, LIKE wildcards included (the server must
    take them as text)."""
    return ("a%_b" * (length // 4 + 1))[:length]


# ---------------------------------------------------------------- counting


@dataclass
class Tally:
    """What one variant of an attack sent and what became of it."""

    made: int = 0  # requests sent (or sockets opened, messages sent)
    ok: int = 0  # answered normally
    refused: Counter[str] = field(default_factory=Counter)  # by error code / status / close
    failed: Counter[str] = field(default_factory=Counter)  # no answer: transport errors

    def as_dict(self) -> dict[str, Any]:
        refused, failed = sum(self.refused.values()), sum(self.failed.values())
        return {"made": self.made, "ok": self.ok, "refused": refused,
                "refused_by": dict(self.refused), "failed": failed,
                "failed_by": dict(self.failed),
                # still waiting for an answer when the phase ended
                "unanswered": max(0, self.made - self.ok - refused - failed)}


def graphql_outcome(tally: Tally, response: httpx.Response) -> None:
    """Count one HTTP GraphQL answer: ok, or refused by its first error's code/status."""
    if response.status_code != 200:
        tally.refused[f"HTTP {response.status_code}"] += 1
        return
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        tally.refused["not JSON"] += 1
        return
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        tally.refused[str((errors[0].get("extensions") or {}).get("code", "no code"))] += 1
    else:
        tally.ok += 1


# ---------------------------------------------------------------- the worker


async def attack(p: dict[str, Any], ch: Channel) -> dict[str, Any]:
    """Run attack class `p["kind"]` from `p["connections"]` connections until stopped."""
    tallies: dict[str, Tally] = {}
    transport = httpx.AsyncHTTPTransport(local_address=p["source"], limits=httpx.Limits(
        max_connections=p["connections"] * 2, keepalive_expiry=2.0))
    async with httpx.AsyncClient(transport=transport, timeout=ANSWER_WAIT) as client:
        ctx = Attack(p, client, tallies)
        loops = [ctx.loop(i) for i in range(p["connections"])]
        if p["kind"] == "stalled":
            loops += [ctx.stalled_writer(i) for i in range(len(p["tokens"]))]
        ch.send("ready")
        await ch.start_time()
        tasks = [asyncio.create_task(c) for c in loops]
        await ch.until_stopped(lambda: sum(t.made for t in tallies.values()))
        await stop(tasks)
        await ctx.close_sockets()
    crashed = [repr(t.exception()) for t in tasks if t.done() and not t.cancelled()
               and t.exception() is not None]
    return {"kind": p["kind"], "variants": {k: t.as_dict() for k, t in tallies.items()},
            "crashed": crashed[:3]}


async def stop(tasks: list[asyncio.Task[None]], rounds: int = 20) -> None:
    """Cancel `tasks` until they are done: Python 3.11's `asyncio.wait_for` may swallow a
    cancellation that arrives as its awaitable completes, and a loop would go on."""
    for _ in range(rounds):
        pending = [t for t in tasks if not t.done()]
        if not pending:
            return
        for t in pending:
            t.cancel()
        await asyncio.wait(pending, timeout=0.5)


class Attack:
    """One attacker's state: its connections' loops by class."""

    def __init__(self, p: dict[str, Any], client: httpx.AsyncClient,
                 tallies: dict[str, Tally]) -> None:
        self.p = p
        self.client = client
        self.tallies = tallies
        self.sockets: list[wsclient.LeanSocket] = []
        self.serial = itertools.count()

    def tally(self, variant: str) -> Tally:
        return self.tallies.setdefault(variant, Tally())

    def token(self, i: int) -> str:
        return str(self.p["tokens"][i % len(self.p["tokens"])])

    async def loop(self, i: int) -> None:
        await {"fragments": self.fragments, "new_documents": self.new_documents,
               "big_messages": self.big_messages,
               "churn": self.churn, "signup": self.signup, "search": self.search,
               "stalled": self.stalled, "mutations": self.mutations}[self.p["kind"]](i)

    # -- HTTP ----------------------------------------------------------------------------

    async def post(self, variant: str, body: dict[str, Any], token: str | None) -> None:
        """One GraphQL request, counted under `variant`."""
        tally = self.tally(variant)
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        tally.made += 1
        try:
            r = await self.client.post(self.p["url"] + "/graphql", content=orjson.dumps(body),
                                       headers=headers)
        except httpx.HTTPError as exc:
            tally.failed[type(exc).__name__] += 1
            await asyncio.sleep(0.05)  # a refused connection must not spin
            return
        graphql_outcome(tally, r)

    async def http_loop(self, i: int, variants: list[tuple[str, Callable[[], dict[str, Any]]]],
                        anonymous: bool = False) -> None:
        """Connection `i` sends its variant (i-th of `variants`) as fast as it is answered."""
        name, body = variants[i % len(variants)]
        token = None if anonymous else self.token(i)
        while True:
            await self.post(name, body(), token)

    async def fragments(self, i: int) -> None:
        max_tokens = self.p["max_query_tokens"]
        k = largest_doubling(max_tokens)
        docs = [("doubling k=21", doubling_document(21)),
                (f"doubling k={k} (largest under {max_tokens} tokens)", doubling_document(k)),
                (f"{max_tokens - 3} repeated fields", flat_document(max_tokens))]
        await self.http_loop(i, [(n, lambda d=d: {"query": d}) for n, d in docs])

    async def new_documents(self, i: int) -> None:
        """A document never seen before each time, near the token limit (operations that
        spread one fragment, 6-7 KB): nothing is parsed or validated once for all, and
        no account is needed. Half the connections anonymous, half the attacker family's."""
        max_tokens = self.p["max_query_tokens"]
        operations = (max_tokens - 40) // 6  # `query qN { ...F }`: 6 tokens each
        fragment = ("fragment F on Query { me { id email displayName role isActive "
                    "createdAt updatedAt family { id name currency } } }")

        def body() -> dict[str, Any]:
            tag = uuid.uuid4().hex
            ops = " ".join(f"query q{n} {{ ...F }}" for n in range(operations))
            # the structure differs too (an alias per document), not only a comment
            return {"query": f"{ops} {fragment.replace('me {', f'me_{tag}: me {{', 1)}",
                    "operationName": "q0"}
        anonymous = i % 2 == 0
        await self.http_loop(i, [("anonymous" if anonymous else "the attacker family",
                                  body)], anonymous=anonymous)

    async def signup(self, i: int) -> None:
        def body() -> dict[str, Any]:
            tag = uuid.uuid4().hex[:12]
            return {"query": "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
                    "variables": {"i": {"familyName": f"Flood {tag}",
                                        "email": f"flood-{tag}@attacker.example.com",
                                        "password": "flood-password-123",
                                        "displayName": "Flood"}}}
        await self.http_loop(i, [("signUp", body)], anonymous=True)

    async def search(self, i: int) -> None:
        query = ("query($s: String!) { persons(search: $s, first: 5) "
                 "{ edges { node { id name } } } }")
        at = self.p["max_search_length"]
        variants = [(f"{n:,} chars", lambda n=n: {"query": query,
                                                  "variables": {"s": search_pattern(n)}})
                    for n in (at, 10_000, 500_000)]
        await self.http_loop(i, variants)

    def update_people(self, i: int, fields: int, notes: int = 8) -> dict[str, Any]:
        """`fields` aliased updatePerson root fields, inside a fragment on Mutation."""
        person = self.p["persons"][i % len(self.p["persons"])]
        n = next(self.serial)
        sets = " ".join(f'u{j}: updatePerson(id: $p, input: {{notes: "{n}-{j}-{"n" * notes}"}}) '
                        "{ id }" for j in range(fields))
        return {"query": f"mutation($p: ID!) {{ ...M }} fragment M on Mutation {{ {sets} }}",
                "variables": {"p": person}}

    async def mutations(self, i: int) -> None:
        aliases = self.p["max_aliases"]
        variants = [("1 updatePerson", lambda: self.update_people(i, 1)),
                    (f"{aliases} updatePerson in a fragment",
                     lambda: self.update_people(i, aliases))]
        # each connection is another member of the family, with its own budget
        name, body = variants[i % 2]
        while True:
            await self.post(name, body(), self.token(i))

    async def stalled_writer(self, i: int) -> None:
        """The family of the stalled sockets writes as fast as its members may."""
        while True:
            await self.post("writes to the family", self.update_people(
                i, self.p["max_aliases"], notes=self.p["notes_bytes"]), self.token(i))

    # -- sockets -------------------------------------------------------------------------

    async def open_socket(self, variant: str, token: str, rcvbuf: int | None = None
                          ) -> tuple[wsclient.LeanSocket, asyncio.Queue[bytes]] | None:
        """A socket past connection_ack, or None (counted as refused or failed)."""
        tally = self.tally(variant)
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        try:
            ws = await wsclient.connect(self.p["ws"] + "/graphql", inbox.put_nowait,
                                        subprotocol=PROTOCOL, local_addr=(self.p["source"], 0),
                                        wait=ANSWER_WAIT)
        except ConnectionError as exc:
            tally.refused["handshake " + str(exc)[:60]] += 1
            await asyncio.sleep(0.05)
            return None
        except (OSError, TimeoutError) as exc:
            tally.failed[type(exc).__name__] += 1
            await asyncio.sleep(0.05)
            return None
        if rcvbuf is not None and ws.transport is not None:
            sock = ws.transport.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        ws.send_text(orjson.dumps({"type": "connection_init", "payload": {"token": token}}))
        reply = await self.answer(ws, inbox, variant)
        if reply is None:
            return None
        if orjson.loads(reply).get("type") != "connection_ack":
            tally.refused["no connection_ack"] += 1
            ws.transport.close()  # type: ignore[union-attr]
            return None
        return ws, inbox

    async def answer(self, ws: wsclient.LeanSocket, inbox: asyncio.Queue[bytes],
                     variant: str) -> bytes | None:
        """The socket's next message; None (counted) if the server closed it instead."""
        get = asyncio.ensure_future(inbox.get())
        try:
            done, _ = await asyncio.wait([get, ws.closed], timeout=ANSWER_WAIT,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not get.done():
                get.cancel()
        if get in done:
            return get.result()
        tally = self.tally(variant)
        if ws.closed.done():
            tally.refused[f"close {ws.close_code}" if ws.close_code else
                          f"closed: {ws.error or 'no close frame'}"[:60]] += 1
        else:
            tally.failed["no answer"] += 1
        ws.transport.close()  # type: ignore[union-attr]
        return None

    async def big_messages(self, i: int) -> None:
        cap = self.p["max_socket_message_bytes"]
        sizes = [(f"{cap - 256:,} B (under the cap)", cap - 256),
                 (f"{cap + 256:,} B (over the cap)", cap + 256), ("1 MiB", 2**20)]
        variant, size = sizes[i % len(sizes)]
        while True:
            opened = await self.open_socket(variant, self.token(i))
            if opened is None:
                continue
            ws, inbox = opened
            while not ws.closed.done():
                op = str(next(self.serial))
                self.tally(variant).made += 1
                ws.send_text(padded_subscribe(size, op))
                reply = await self.answer(ws, inbox, variant)
                if reply is None:
                    break
                kind = orjson.loads(reply).get("type")
                if kind == "next":  # then its complete
                    reply = await self.answer(ws, inbox, variant)
                    kind = orjson.loads(reply).get("type") if reply else None
                if kind == "complete":
                    self.tally(variant).ok += 1
                elif kind is not None:
                    self.tally(variant).refused[f"message {kind}"] += 1

    async def churn(self, i: int) -> None:
        variant = "open, init, subscribe, close"
        subscribe = orjson.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription { familyEvents { seq } }"}})
        while True:
            self.tally(variant).made += 1
            opened = await self.open_socket(variant, self.token(i))
            if opened is None:
                continue
            ws, _ = opened
            ws.send_text(subscribe)
            self.tally(variant).ok += 1
            await ws.close(wait=5)

    async def stalled(self, i: int) -> None:
        """A socket with `max_subscriptions_per_connection` familyEvents subscriptions of the
        attacker's own family that never reads (and has a small receive buffer)."""
        variant = "sockets that stop reading"
        opened = await self.open_socket(variant, self.token(i), rcvbuf=4096)
        if opened is None:
            return
        ws, _ = opened
        self.sockets.append(ws)
        self.tally(variant).made += 1
        query = ("subscription { familyEvents { seq kind topic entityType entityId at "
                 "actor { id email displayName } node { id ... on Person "
                 "{ name relationship notes interests } } } }")
        for k in range(self.p["max_subscriptions_per_connection"]):
            ws.send_text(orjson.dumps({"id": str(k), "type": "subscribe",
                                       "payload": {"query": query}}))
        self.tally(variant).ok += 1
        ws.transport.pause_reading()  # type: ignore[union-attr]
        await ws.closed
        self.tally(variant).refused[f"close {ws.close_code}" if ws.close_code
                                    else "closed by the server"] += 1

    async def close_sockets(self) -> None:
        for ws in self.sockets:
            if ws.transport is not None:
                ws.transport.abort()  # a stalled socket's close would wait behind its backlog
        self.sockets.clear()

