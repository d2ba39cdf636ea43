"""The compiled statement's plan does not depend on planner statistics: on tables nobody
analyzed (as after a bulk load) a relation is read by its primary key and a nested page by
its parent's index, never by scanning the family's rows once per parent row. Plans, not
timings: EXPLAIN without ANALYZE, on the demo family in a database of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from bench.plans import forget_statistics

from giftgraph.db.migrate import upgrade
from giftgraph.demo import seed
from tests.conftest import _dsn, make_settings

pytestmark = pytest.mark.accel


@pytest.fixture
async def demo(empty_database: str) -> str:
    await upgrade(empty_database)
    await seed(empty_database, make_settings(empty_database), show_progress=False)
    return empty_database


async def compiled_statement(url: str) -> tuple[str, tuple[Any, ...]]:
    """The statement the server runs for W1's nested query, with its parameters (captured
    as `giftgraph bench plans` captures it)."""
    from bench.plans import ours

    statement, params = await ours(url, make_settings(url, result_cache_bytes=0))
    assert statement.startswith("""SELECT ('{"lists":' || """), statement
    return statement, params


def scans(node: dict[str, Any], table: str = "") -> Iterator[tuple[str, str, str]]:
    """(table, node type, index) of every scan in a plan (a bitmap index scan's table is
    its heap scan's)."""
    table = node.get("Relation Name", table)
    if "Relation Name" in node or "Index Name" in node:
        yield table, node["Node Type"], node.get("Index Name", "")
    for child in node.get("Plans", ()):
        yield from scans(child, table)


async def plan_scans(url: str, statement: str, params: tuple[Any, ...]) -> set[tuple[str, ...]]:
    conn = await asyncpg.connect(_dsn(url), statement_cache_size=0)
    try:
        out = await conn.fetchval("EXPLAIN (FORMAT JSON) " + statement, *params)
    finally:
        await conn.close()
    report = json.loads(out) if isinstance(out, str) else out
    return set(scans(report[0]["Plan"]))


async def test_nested_read_plan_uses_keys_with_or_without_statistics(demo: str) -> None:
    statement, params = await compiled_statement(demo)
    await forget_statistics(demo)
    cold = await plan_scans(demo, statement, params)
    # Each item's gift and assignee by primary key, each list's items by the list's index:
    # never a family's index, which reads all the family's rows for each parent row.
    by_index = {(table, index) for table, _, index in cold if index}
    assert ("gifts", "gifts_pkey") in by_index, cold
    assert ("users", "users_pkey") in by_index, cold
    assert ("persons", "persons_pkey") in by_index, cold
    assert ("list_items", "ix_list_items_list_created") in by_index, cold
    family_indexes = {(table, index) for table, index in by_index if "family" in index}
    assert family_indexes <= {("gift_lists", "ix_gift_lists_family_created")}, cold

    conn = await asyncpg.connect(_dsn(demo))
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    warm = await plan_scans(demo, statement, params)
    family_indexes = {(table, index) for table, _, index in warm if "family" in index}
    assert family_indexes <= {("gift_lists", "ix_gift_lists_family_created")}, warm
