"""The floor for W6 (`giftgraph bench storm`): the same herd accepted, authenticated and
replayed with asyncpg, no GraphQL.

WS /graphql speaks just enough graphql-transport-ws: `connection_init` with the token in its
payload (the same JWT check and user lookup as `bench/floor.py`) → `connection_ack`; one
`subscribe` whose variable `s` is a `since`: the socket is registered for its family's
live events first, then the family's events after `since` are read from the events table
(one statement) and sent, then whatever came live meanwhile (above the last seq sent), then
live events as they come; `next` messages shaped as the API's `familyEvents { seq at }`.
POST /publish?family=K writes one event of family K (the K-th id of the JSON list in
BENCH_STORM_FAMILIES) as the API does: under the family's event lock, the next seq; after
COMMIT it goes to that family's sockets. GET /count: sockets subscribed.

Run: BENCH_FLOOR_DSN=postgresql://... GIFTGRAPH_JWT_SECRET=... BENCH_STORM_FAMILIES=ids.json \
     python -m uvicorn --factory bench.storm_floor:create --ws websockets-sansio
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bench.floor import family_of, keep_session

PROTOCOL = "graphql-transport-ws"
INIT_TIMEOUT = 10.0  # as the API's GIFTGRAPH_WS_CONNECTION_INIT_TIMEOUT_SECONDS
LATEST = "SELECT coalesce(max(seq), 0) FROM events WHERE family_id = $1"
REPLAY = """
SELECT seq, at FROM events WHERE family_id = $1 AND topic = 'family' AND seq > $2
ORDER BY seq LIMIT 10000"""
LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))"  # the API's event lock
# A statement of its own after the lock: its snapshot sees the family's last committed seq.
WRITE = """
INSERT INTO events (family_id, seq, topic, kind, entity_type, entity_id, at, payload)
SELECT $1, coalesce(max(seq), 0) + 1, 'family', 'UPDATED', 'GiftList', $1, now(), '{}'
FROM events WHERE family_id = $1
RETURNING seq, at"""


@dataclass(eq=False, slots=True)
class Sub:
    """One socket's subscription: the last seq sent; while it replays, live events wait in
    `waiting`."""

    ws: WebSocket
    id: str
    last: int = 0
    waiting: list[tuple[int, str]] | None = field(default_factory=list)


def claims_of_token(token: object, secret: str) -> dict[str, Any] | None:
    """The token's claims, verified as `bench.floor.claims_of` verifies a bearer token."""
    if not isinstance(token, str):
        return None
    try:
        return jwt.decode(token, secret, algorithms=["HS256"],
                          options={"require": ["exp", "iat", "sub", "typ"]})
    except jwt.PyJWTError:
        return None


def next_message(sub_id: str, seq: int, at: Any) -> str:
    return orjson.dumps({"id": sub_id, "type": "next", "payload": {"data": {
        "familyEvents": {"seq": str(seq), "at": at.isoformat()}}}}).decode()


def create() -> Starlette:
    secret = os.environ["GIFTGRAPH_JWT_SECRET"]
    ids = [uuid.UUID(f) for f in orjson.loads(Path(os.environ["BENCH_STORM_FAMILIES"])
                                              .read_bytes())]
    pool: asyncpg.Pool | None = None
    families: dict[uuid.UUID, set[Sub]] = defaultdict(set)
    writing: dict[uuid.UUID, asyncio.Lock] = defaultdict(asyncio.Lock)
    subscribed = 0

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        nonlocal pool
        pool = await asyncpg.create_pool(os.environ["BENCH_FLOOR_DSN"], min_size=10,
                                         max_size=20, reset=keep_session)
        try:
            yield
        finally:
            await pool.close()

    async def send(sub: Sub, seq: int, text: str) -> None:
        if seq > sub.last:
            sub.last = seq
            await sub.ws.send_text(text)

    async def subscribe(sub: Sub, family: uuid.UUID, since: int | None) -> None:
        assert pool is not None
        families[family].add(sub)  # listening first, then the log (as the API does)
        async with pool.acquire() as conn:
            if since is None:
                sub.last = await conn.fetchval(LATEST, family)
                rows = []
            else:
                sub.last = since
                rows = await conn.fetch(REPLAY, family, since)
        for r in rows:
            await send(sub, r["seq"], next_message(sub.id, r["seq"], r["at"]))
        waiting = sub.waiting
        while waiting:
            await send(sub, *waiting.pop(0))
        sub.waiting = None

    async def graphql_ws(ws: WebSocket) -> None:
        nonlocal subscribed
        assert pool is not None
        await ws.accept(subprotocol=PROTOCOL)
        family: uuid.UUID | None = None
        sub: Sub | None = None
        try:
            init = orjson.loads(await asyncio.wait_for(ws.receive_text(), INIT_TIMEOUT))
            claims = claims_of_token((init.get("payload") or {}).get("token"), secret)
            if init.get("type") == "connection_init" and claims is not None:
                async with pool.acquire() as conn:
                    family = await family_of(conn, claims)
            if family is None:
                await ws.close(4403, "Forbidden")
                return
            await ws.send_text('{"type":"connection_ack"}')
            while True:
                msg = orjson.loads(await ws.receive_text())
                if msg.get("type") == "ping":
                    await ws.send_text('{"type":"pong"}')
                elif msg.get("type") == "subscribe" and sub is None:
                    since = (msg["payload"].get("variables") or {}).get("s")
                    sub = Sub(ws, str(msg["id"]))
                    subscribed += 1
                    await subscribe(sub, family, None if since is None else int(since))
        except (WebSocketDisconnect, TimeoutError, orjson.JSONDecodeError, RuntimeError,
                OSError):
            pass  # gone, silent or speaking something else: either way, done
        finally:
            if sub is not None and family is not None:
                families[family].discard(sub)
                subscribed -= 1

    async def publish(request: Request) -> Response:
        assert pool is not None
        family = ids[int(request.query_params["family"])]
        # One change of a family at a time, written and sent: its sockets get its events in
        # seq order (a later one sent first would make them drop the earlier one).
        async with writing[family]:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(LOCK, str(family))
                row = await conn.fetchrow(WRITE, family)
            seq = row["seq"]
            sent = 0
            for sub in list(families.get(family, ())):
                text = next_message(sub.id, seq, row["at"])
                if sub.waiting is not None:
                    sub.waiting.append((seq, text))
                    continue
                try:
                    await send(sub, seq, text)
                    sent += 1
                except (WebSocketDisconnect, RuntimeError, OSError):
                    families[family].discard(sub)
        return JSONResponse({"seq": seq, "sent": sent})

    async def count(_: Request) -> Response:
        return JSONResponse({"subscribed": subscribed})

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "healthy"})

    return Starlette(routes=[WebSocketRoute("/graphql", graphql_ws),
                             Route("/publish", publish, methods=["POST"]),
                             Route("/count", count), Route("/health", health)],
                     lifespan=lifespan)
