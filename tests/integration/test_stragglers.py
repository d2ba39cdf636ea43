"""A resolver its operation leaves behind reads nothing once the operation is over.

graphql-core may leave a field running when a sibling fails at once (a relation already
loaded as missing: NOT_FOUND without a wait), and the operation ends meanwhile. Such a
straggler then asked the operation's closed database scope for a read: a new session,
never closed (a pooled connection gone for good, each request), or a statement still
running on the connection the scope had just given back to the pool, where the next
request's statement found it busy ('another operation is in progress'). Adversary,
2026-11-26: 20 such requests took the whole pool, and every family's request waited 30 s."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, literal, select

from giftgraph.db.engine import create_database
from giftgraph.db.session import OperationDb, OperationOver
from tests.conftest import GQL, Account, make_settings

EVENTS = """query($t: String) { events(first: 50, topic: $t) { edges { node { node {
  ... on ListItem { %s } } } } } }"""


async def _deleted_list(client: GQL) -> str:
    """A list with one item, deleted: its events' items name a list that is gone."""
    lid = (await client('mutation { createList(input: {name: "L", kind: IDEAS}) { id } }')
           ).data["createList"]["id"]
    gid = (await client('mutation { createGift(input: {name: "G"}) { id } }')
           ).data["createGift"]["id"]
    await client("mutation($l: ID!, $g: ID!) { addListItem(listId: $l, input: {giftId: $g})"
                 " { id } }", {"l": lid, "g": gid})
    await client("mutation($l: ID!) { deleteList(id: $l) }", {"l": lid})
    return lid


def _pool(app: Any) -> Any:
    return app.state.giftgraph.database.engine.sync_engine.pool


async def _settled(app: Any) -> int:
    """Connections still checked out once the stragglers have had their turn."""
    for _ in range(50):
        await asyncio.sleep(0.05)
        if _pool(app).checkedout() == 0:
            break
    return int(_pool(app).checkedout())


async def test_a_left_behind_resolver_takes_no_connection(app: Any, alice: Account) -> None:
    lid = await _deleted_list(alice.client)
    query = EVENTS % "commentCount list { id }"
    for _ in range(25):  # more than the pool holds
        r = await alice.client(query, {"t": f"list:{lid}"})
        assert r.codes, r.body
        assert set(r.codes) == {"NOT_FOUND"}, r.body
    assert await _settled(app) == 0
    assert (await alice.client("{ me { id } }")).data["me"]["id"]


async def test_a_connection_goes_back_only_once_its_statement_is_over(
        database_url: str) -> None:
    """`close` (an operation letting go of its connection, or ending) while a sibling's
    statement runs: the connection goes back when the statement is over, not under it,
    where the next checkout's statement found it busy ('another operation is in
    progress'; the adversary's victim got 305 of 4,325 requests as errors)."""
    database = create_database(database_url, make_settings(database_url, db_pool_size=1))
    try:
        pool = database.engine.sync_engine.pool
        for finish in (OperationDb.close, OperationDb.end):
            db = OperationDb(database)
            slow = asyncio.create_task(db.scalar(select(func.pg_sleep(0.3))))
            await asyncio.sleep(0.1)
            assert pool.checkedout() == 1
            await finish(db)
            assert pool.checkedout() == 1  # still running on it
            other = OperationDb(database)
            assert await other.scalar(select(literal(1))) == 1  # waited for it, not busy
            await other.end()
            await slow
            assert pool.checkedout() == 0
            if finish is OperationDb.end:  # and no read starts once the operation is over
                with pytest.raises(OperationOver):
                    await db.scalar(select(literal(1)))
                assert pool.checkedout() == 0
    finally:
        await database.dispose()
