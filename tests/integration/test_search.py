"""`search`: bounded in length before any SQL, served by a trigram index where pg_trgm is."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import event

from tests.conftest import Account, _dsn

QUERIES = {
    "persons": "query($s: String) { persons(search: $s) { totalCount edges { node { name } } } }",
    "gifts": "query($s: String) { gifts(search: $s) { totalCount edges { node { name } } } }",
}

EXPLAIN = {table: f"EXPLAIN SELECT * FROM {table} WHERE name ILIKE '%rosa%'"  # noqa: S608
           for table in ("persons", "gifts")}


def refused(text: str) -> float:
    prefix = 'giftgraph_admission_refused_total{bound="search_length"} '
    return next(float(line[len(prefix):]) for line in text.splitlines()
                if line.startswith(prefix))


@pytest.mark.parametrize("field", list(QUERIES))
async def test_a_search_longer_than_the_bound_is_refused_before_any_sql(
        alice: Account, http: httpx.AsyncClient, app: Any, field: str) -> None:
    c = alice.client
    await c('mutation { createPerson(input: {name: "Ann"}) { id } }')
    before = refused((await http.get("/metrics")).text)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = app.state.giftgraph.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        at_most = await c(QUERIES[field], {"s": "a" * 100})  # the bound itself is allowed
        assert at_most.data[field]["totalCount"] == 0
        statements.clear()
        r = await c(QUERIES[field], {"s": "%" * 101})
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert r.codes == ["BAD_USER_INPUT"], r.body
    assert r.errors[0]["extensions"]["fields"] == {"search": "at most 100 characters"}
    assert not [s for s in statements if "ILIKE" in s.upper() or "count(" in s], statements
    assert refused((await http.get("/metrics")).text) == before + 1


async def test_search_results_with_the_index_as_without_it(alice: Account,
                                                           database_url: str) -> None:
    """Where the server ships pg_trgm the migration indexed the searched columns, and the
    planner can serve a search from it; the results are the plain ILIKE's either way."""
    c = alice.client
    for name in ("Grandma Rose", "grandpa Joe", "Rosalind", "100% Cotton", "a_b"):
        await c('mutation($n: String!) { createPerson(input: {name: $n}) { id } }', {"n": name})
        await c('mutation($n: String!) { createGift(input: {name: $n}) { id } }', {"n": name})
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        available = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm')")
        indexes = {r["indexname"] for r in await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE indexname LIKE '%_name_trgm'")}
        assert indexes == ({"ix_persons_name_trgm", "ix_gifts_name_trgm"} if available
                           else set())
        if available:
            for table, explain in EXPLAIN.items():
                async with conn.transaction():
                    await conn.execute("SET LOCAL enable_seqscan = off")
                    plan = "\n".join(r[0] for r in await conn.fetch(explain))
                assert f"ix_{table}_name_trgm" in plan, plan
    finally:
        await conn.close()
    for field, query in QUERIES.items():
        for search, expected in (("ROS", ["Grandma Rose", "Rosalind"]), ("%", ["100% Cotton"]),
                                 ("_", ["a_b"]), ("grand", ["Grandma Rose", "grandpa Joe"])):
            r = await c(query, {"s": search})
            got = sorted(e["node"]["name"] for e in r.data[field]["edges"])
            assert got == expected, (field, search, got)
