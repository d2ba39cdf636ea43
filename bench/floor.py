"""The floor for W1: the same reads as hand-written SQL on an asyncpg pool, serialized with
orjson, in a bare Starlette app — no GraphQL layer. Same JWT check and user lookup as the API.

Run: BENCH_FLOOR_DSN=postgresql://... GIFTGRAPH_JWT_SECRET=... \
     python -m uvicorn --factory bench.floor:create
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import jwt
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

USER = "SELECT family_id, is_active FROM users WHERE id = $1"

LISTS = """
SELECT gl.id, gl.name, p.name AS person
FROM gift_lists gl LEFT JOIN persons p ON p.id = gl.person_id
WHERE gl.family_id = $1 ORDER BY gl.created_at, gl.id LIMIT 20"""
ITEMS = """
SELECT i.list_id, i.status, g.name, g.price, g.store, u.display_name
FROM unnest($1::uuid[]) AS l(id)
CROSS JOIN LATERAL (SELECT * FROM list_items li WHERE li.list_id = l.id
                    ORDER BY li.created_at, li.id LIMIT 20) i
JOIN gifts g ON g.id = i.gift_id
LEFT JOIN users u ON u.id = i.assignee_id
ORDER BY i.list_id, i.created_at, i.id"""

SPENT = ("round(coalesce(sum(CASE WHEN i.status IN ('PURCHASED', 'RECEIVED') "
         "THEN coalesce(g.price, 0) * i.quantity ELSE 0 END), 0), 2)")
NEXT_OCCASIONS = """
SELECT id, name, kind, date, budget FROM occasions
WHERE family_id = $1 AND date >= $2 ORDER BY date, id LIMIT 5"""
PIPELINE = "SELECT status, count(*) FROM list_items WHERE family_id = $1 GROUP BY status"
PEOPLE = f"""
SELECT p.id, p.name, i.status, count(i.id), {SPENT}
FROM persons p
LEFT JOIN gift_lists gl ON gl.person_id = p.id
LEFT JOIN list_items i ON i.list_id = gl.id
LEFT JOIN gifts g ON g.id = i.gift_id
WHERE p.family_id = $1 GROUP BY p.id, p.name, i.status
ORDER BY p.name, p.id"""  # noqa: S608 - constants only
RECENT_IDEAS = """
SELECT i.id, i.status, g.name, g.price FROM list_items i JOIN gifts g ON g.id = i.gift_id
WHERE i.family_id = $1 AND i.status = 'IDEA' ORDER BY i.created_at DESC, i.id DESC LIMIT 10"""
ACTIVITY = """
SELECT e.seq, e.kind, e.entity_type, e.at, u.display_name
FROM events e LEFT JOIN users u ON u.id = e.actor_id
WHERE e.family_id = $1 AND e.topic = 'family' ORDER BY e.seq DESC LIMIT 20"""
BUDGET = "SELECT sum(budget) FROM occasions WHERE family_id = $1 AND date >= $2"
SPENT_UPCOMING = f"""
SELECT {SPENT} FROM list_items i
JOIN gift_lists gl ON gl.id = i.list_id
JOIN occasions o ON o.id = gl.occasion_id
JOIN gifts g ON g.id = i.gift_id
WHERE i.family_id = $1 AND o.date >= $2"""  # noqa: S608 - constants only


def gid(type_name: str, key: object) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{key}".encode()).decode().rstrip("=")


def money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def pipeline(counts: dict[str, int]) -> dict[str, int]:
    return {s.lower(): counts.get(s, 0) for s in ("IDEA", "SELECTED", "PURCHASED", "RECEIVED")}


async def nested(conn: asyncpg.Connection, family_id: uuid.UUID) -> dict[str, Any]:
    lists = await conn.fetch(LISTS, family_id)
    items: dict[uuid.UUID, list[dict[str, Any]]] = {gl["id"]: [] for gl in lists}
    for r in await conn.fetch(ITEMS, list(items)):
        assignee = None if r["display_name"] is None else {"displayName": r["display_name"]}
        items[r["list_id"]].append({"node": {
            "status": r["status"],
            "gift": {"name": r["name"], "price": money(r["price"]), "store": r["store"]},
            "assignee": assignee}})
    return {"lists": {"edges": [{"node": {
        "name": gl["name"],
        "person": None if gl["person"] is None else {"name": gl["person"]},
        "items": {"edges": items[gl["id"]]}}} for gl in lists]}}


async def dashboard(conn: asyncpg.Connection, family_id: uuid.UUID) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    occasions = await conn.fetch(NEXT_OCCASIONS, family_id, today)
    counts = dict(await conn.fetch(PIPELINE, family_id))  # type: ignore[arg-type]
    people: dict[uuid.UUID, dict[str, Any]] = {}
    for pid, name, status, n, spent in await conn.fetch(PEOPLE, family_id):
        p = people.setdefault(pid, {"person": {"id": gid("Person", pid), "name": name},
                                    "counts": {}, "spent": Decimal("0.00")})
        if status is not None:
            p["counts"][status] = n
        p["spent"] += spent
    ideas = await conn.fetch(RECENT_IDEAS, family_id)
    activity = await conn.fetch(ACTIVITY, family_id)
    budget = await conn.fetchval(BUDGET, family_id, today)
    spent = await conn.fetchval(SPENT_UPCOMING, family_id, today)
    return {"dashboard": {
        "budget": money(budget),
        "spent": money(spent),
        "pipeline": pipeline(counts),
        "nextOccasions": [{"id": gid("Occasion", o["id"]), "name": o["name"], "kind": o["kind"],
                           "date": o["date"], "budget": money(o["budget"])} for o in occasions],
        "people": [{"person": p["person"], "pipeline": pipeline(p["counts"]),
                    "spent": money(p["spent"])} for p in people.values()],
        "recentIdeas": [{"id": gid("ListItem", r["id"]), "status": r["status"],
                         "gift": {"name": r["name"], "price": money(r["price"])}}
                        for r in ideas],
        "activity": [{"seq": str(e["seq"]), "kind": e["kind"], "entityType": e["entity_type"],
                      "at": e["at"],
                      "actor": None if e["display_name"] is None
                      else {"displayName": e["display_name"]}} for e in activity],
    }}


def claims_of(request: Request, secret: str) -> dict[str, Any] | None:
    """The bearer token's claims, verified as the API verifies them, or None."""
    token = request.headers.get("authorization", "").removeprefix("Bearer ")
    try:
        return jwt.decode(token, secret, algorithms=["HS256"],
                          options={"require": ["exp", "iat", "sub", "typ"]})
    except jwt.PyJWTError:
        return None


async def family_of(conn: asyncpg.Connection, claims: dict[str, Any]) -> uuid.UUID | None:
    """The caller's family: an active user of the token's family, with an access token."""
    user = await conn.fetchrow(USER, uuid.UUID(claims["sub"]))
    if (claims["typ"] != "access" or user is None or not user["is_active"]
            or str(user["family_id"]) != claims["fam"]):
        return None
    return user["family_id"]  # type: ignore[no-any-return]


async def keep_session(_: asyncpg.Connection) -> None:
    """The pool's reset when a connection goes back: none. asyncpg's default sends a reset
    query then (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`), a round trip
    per request that the API's pool does not make; these handlers leave no session state."""


def create() -> Starlette:
    secret = os.environ["GIFTGRAPH_JWT_SECRET"]
    pool: asyncpg.Pool | None = None

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        nonlocal pool
        # The API's pool: 10 connections plus 10 overflow.
        pool = await asyncpg.create_pool(os.environ["BENCH_FLOOR_DSN"], min_size=10, max_size=20,
                                         reset=keep_session)
        try:
            yield
        finally:
            await pool.close()

    def endpoint(query: Any) -> Any:
        async def handle(request: Request) -> Response:
            claims = claims_of(request, secret)
            if claims is None:
                return Response(b'{"error":"unauthenticated"}', 401)
            assert pool is not None
            async with pool.acquire() as conn:
                family_id = await family_of(conn, claims)
                if family_id is None:
                    return Response(b'{"error":"unauthenticated"}', 401)
                data = await query(conn, family_id)
            return Response(orjson.dumps({"data": data}), media_type="application/json")

        return handle

    async def health(_: Request) -> Response:
        return Response(b'{"status":"healthy"}', media_type="application/json")

    return Starlette(routes=[Route("/nested", endpoint(nested), methods=["POST"]),
                             Route("/dashboard", endpoint(dashboard), methods=["POST"]),
                             Route("/health", health)], lifespan=lifespan)
