"""The floor for W4: setListItemStatus's work and its fan-out, with no GraphQL layer, no ORM
and no broker: what this stack (uvicorn, asyncpg, PostgreSQL) allows for the same writes.

POST /graphql takes the mutation's JSON body as the API does (only its variables `i` and `s`
are read) and does what the API's resolver does, as hand-written SQL on an asyncpg pool: the
same JWT check and user lookup as `bench/floor.py`, then one transaction with the item locked
together with its list, the transition checked, one UPDATE whose RETURNING takes the family's
event lock, and one statement writing an event row per topic (list, person, occasion, all
items, family) with each topic's previous seq. After COMMIT the list's event goes to every
client of WS /ws: one text message, framed once and written straight onto each socket's
transport, several waiting events in one write per socket, 32 sockets between yields, as the
API's hub does it (`accel/wire.py`, `live/hub.py`).

Run: BENCH_FLOOR_DSN=postgresql://... GIFTGRAPH_JWT_SECRET=... \
     python -m uvicorn --factory bench.floor_writes:create --ws websockets-sansio
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bench.floor import claims_of, family_of, gid, keep_session

ITEM = """
SELECT li.status, gl.id AS list_id, gl.person_id, gl.occasion_id
FROM list_items li JOIN gift_lists gl ON gl.id = li.list_id AND gl.family_id = $2
WHERE li.id = $1 AND li.family_id = $2
FOR UPDATE OF li"""
UPDATE = """
UPDATE list_items SET status = $2, updated_at = $3 WHERE id = $1
RETURNING list_id, gift_id, status, assignee_id, quantity, notes, family_id, id, created_at,
          updated_at, pg_advisory_xact_lock(hashtextextended($4, 0)) AS locked"""
EVENTS = """
WITH t AS (SELECT u.topic, u.ord FROM unnest($1::text[]) WITH ORDINALITY AS u(topic, ord)),
last AS (SELECT coalesce(max(seq), 0) AS seq FROM events WHERE family_id = $2),
ins AS (
    INSERT INTO events (family_id, seq, topic, kind, entity_type, entity_id, actor_id, at,
                        payload)
    SELECT $2, last.seq + t.ord, t.topic, 'STATUS_CHANGED', 'ListItem', $3, $4, $5, $6::jsonb
    FROM t CROSS JOIN last ORDER BY t.ord
    RETURNING seq, topic
)
SELECT ins.seq, ins.topic,
       (SELECT max(e.seq) FROM events e WHERE e.family_id = $2 AND e.topic = ins.topic) AS prev
FROM ins ORDER BY ins.seq"""
TRANSITIONS = {"IDEA": {"SELECTED"}, "SELECTED": {"IDEA", "PURCHASED"},
               "PURCHASED": {"SELECTED", "RECEIVED"}, "RECEIVED": {"PURCHASED"}}
SLICE = 32  # sockets written between two yields to the event loop, as the hub's
UNAUTHENTICATED = Response(b'{"errors":[{"message":"unauthenticated"}]}', 401)


def frame(payload: bytes) -> bytes:
    """A final, unmasked text frame (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        return b"\x81" + n.to_bytes(1, "big") + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


def item_id(global_id: str) -> uuid.UUID | None:
    try:
        kind, _, key = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)) \
            .decode().partition(":")
        return uuid.UUID(key) if kind == "ListItem" else None
    except ValueError:
        return None


def jsonable(row: asyncpg.Record) -> dict[str, Any]:
    """The row's columns as the API's event payload has them."""
    return {k: v if v is None or isinstance(v, int) else
            v.isoformat() if isinstance(v, datetime) else str(v)
            for k, v in row.items() if k != "locked"}


def create() -> Any:
    secret = os.environ["GIFTGRAPH_JWT_SECRET"]
    pool: asyncpg.Pool | None = None
    clients: set[asyncio.Transport] = set()
    outbox: asyncio.Queue[bytes] = asyncio.Queue()

    async def fan_out() -> None:
        while True:
            frames = [await outbox.get()]
            while not outbox.empty():
                frames.append(outbox.get_nowait())
            data = b"".join(frames)
            for k, transport in enumerate(list(clients), 1):
                if not transport.is_closing():
                    transport.write(data)
                if k % SLICE == 0:
                    await asyncio.sleep(0)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        nonlocal pool
        # The API's pool: 10 connections plus 10 overflow.
        pool = await asyncpg.create_pool(os.environ["BENCH_FLOOR_DSN"], min_size=10, max_size=20,
                                         reset=keep_session)
        task = asyncio.create_task(fan_out())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await pool.close()

    async def set_status(request: Request) -> Response:
        claims = claims_of(request, secret)
        if claims is None:
            return UNAUTHENTICATED
        variables = orjson.loads(await request.body()).get("variables") or {}
        pk, status = item_id(str(variables.get("i", ""))), variables.get("s")
        caller = uuid.UUID(claims["sub"])
        assert pool is not None
        async with pool.acquire() as conn:
            family_id = await family_of(conn, claims)
            if family_id is None:
                return UNAUTHENTICATED
            async with conn.transaction():
                item = None if pk is None else await conn.fetchrow(ITEM, pk, family_id)
                if item is None or status not in TRANSITIONS[item["status"]]:
                    return Response(b'{"errors":[{"message":"not found or not allowed"}]}')
                row = await conn.fetchrow(UPDATE, pk, status, datetime.now(UTC), str(family_id))
                at = datetime.now(UTC)  # under the family's lock, as the API takes it
                list_topic = f"list:{gid('GiftList', item['list_id'])}"
                topics = [list_topic]
                if item["person_id"]:
                    topics.append(f"person:{gid('Person', item['person_id'])}")
                if item["occasion_id"]:
                    topics.append(f"occasion:{gid('Occasion', item['occasion_id'])}")
                topics += ["list-items:all", "family"]
                events = await conn.fetch(EVENTS, topics, family_id, pk, caller, at,
                                          orjson.dumps(jsonable(row)).decode())
        seq = next(e["seq"] for e in events if e["topic"] == list_topic)
        node = {"id": variables["i"], "status": status, "quantity": row["quantity"]}
        outbox.put_nowait(frame(orjson.dumps({
            "seq": seq, "kind": "STATUS_CHANGED", "topic": list_topic, "entityType": "ListItem",
            "at": at.isoformat(), "node": node})))
        return Response(orjson.dumps({"data": {"setListItemStatus": node}}),
                        media_type="application/json")

    async def count(_: Request) -> Response:
        return Response(orjson.dumps({"clients": len(clients)}), media_type="application/json")

    async def health(_: Request) -> Response:
        return Response(b'{"status":"healthy"}', media_type="application/json")

    http = Starlette(routes=[Route("/graphql", set_status, methods=["POST"]),
                             Route("/count", count), Route("/health", health)],
                     lifespan=lifespan)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return await http(scope, receive, send)
        # A bare ASGI socket, so that `send` is uvicorn's own: its protocol's transport is
        # where the fan-out writes.
        if (await receive())["type"] != "websocket.connect":
            return None
        await send({"type": "websocket.accept"})
        transport = send.__self__.transport  # type: ignore[attr-defined]
        clients.add(transport)
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            clients.discard(transport)
        return None

    return app
