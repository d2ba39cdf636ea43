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
from bench.plans import forget_statistics, statements_of

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
    assert statement.startswith("SELECT CASE WHEN octet_length(q.j) <= $1 "
                                "THEN convert_to(q.j, 'UTF8') END"), \
        statement
    assert """(SELECT ('{"lists":' || """ in statement, statement
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


# Other families beside the demo one (the rows of a shared, many-tenant database), in
# bulk: each 3 users, 12 persons, 30 lists and 50 gifts on 100 items.
OTHER_FAMILIES = """
CREATE TEMP TABLE nf AS SELECT gen_random_uuid() AS id, n FROM generate_series(1, 200) n;
INSERT INTO families (id, name, currency, created_at, updated_at)
  SELECT id, 'bulk ' || n, 'USD', now(), now() FROM nf;
INSERT INTO users (id, family_id, email, display_name, role, is_active, password_hash,
                   created_at, updated_at, token_epoch)
  SELECT gen_random_uuid(), nf.id, 'bulk-' || nf.n || '-' || u || '@example.com', 'U' || u,
         'MEMBER', true, 'x', now(), now(), 0 FROM nf, generate_series(1, 3) u;
INSERT INTO persons (id, family_id, name, interests, created_at, updated_at)
  SELECT gen_random_uuid(), nf.id, 'P' || p, '{}', now(), now()
  FROM nf, generate_series(1, 12) p;
INSERT INTO gift_lists (id, family_id, name, kind, person_id, owner_id, created_at, updated_at)
  SELECT gen_random_uuid(), nf.id, 'L' || l, 'WISHLIST',
         (SELECT id FROM persons p WHERE p.family_id = nf.id ORDER BY id LIMIT 1),
         (SELECT id FROM users u WHERE u.family_id = nf.id ORDER BY id LIMIT 1), now(), now()
  FROM nf, generate_series(1, 30) l;
INSERT INTO gifts (id, family_id, name, currency, created_at, updated_at)
  SELECT gen_random_uuid(), nf.id, 'G' || g, 'USD', now(), now()
  FROM nf, generate_series(1, 50) g;
INSERT INTO list_items (id, family_id, list_id, gift_id, status, assignee_id, quantity,
                        created_at, updated_at)
  SELECT gen_random_uuid(), g.family_id,
         (SELECT id FROM gift_lists l WHERE l.family_id = g.family_id
          ORDER BY md5(l.id::text || g.id::text || k) LIMIT 1), g.id, 'IDEA',
         (SELECT id FROM users u WHERE u.family_id = g.family_id ORDER BY id LIMIT 1), 1,
         now(), now()
  FROM gifts g JOIN nf ON nf.id = g.family_id, generate_series(1, 2) k;
"""


def rows_read(node: dict[str, Any]) -> float:
    """The rows every scan of a plan read (returned or filtered out), over all its loops."""
    own = 0.0
    if "Relation Name" in node:
        own = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) \
            * node.get("Actual Loops", 1)
    return own + sum(rows_read(child) for child in node.get("Plans", ()))


async def test_the_nested_read_reads_its_rows_not_other_families(demo: str) -> None:
    """Beside 200 other families, with or without statistics: the statement reads about
    the rows of its answer (20 lists, 340 items with their gifts and assignees), not a
    relation's whole table (relations joined by key alone hashed whole tables, and on
    unanalyzed tables read one once per row: bench/NOTES.md)."""
    statement, params = await compiled_statement(demo)
    conn = await asyncpg.connect(_dsn(demo), statement_cache_size=0)
    try:
        await conn.execute(OTHER_FAMILIES)
        await conn.execute("ANALYZE")
        read = {}
        for state in ("analyzed", "not analyzed"):
            if state == "not analyzed":
                await forget_statistics(demo)
            out = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, *params)
            report = json.loads(out) if isinstance(out, str) else out
            read[state] = rows_read(report[0]["Plan"])
    finally:
        await conn.close()
    # The answer's rows: 1,110 (20 lists, 20 persons, 340 items, 340 gifts, 340 users, and
    # the lists' index); a relation's whole table hashed for it would be thousands more.
    assert all(n < 2_000 for n in read.values()), read


# The family's money on top of OTHER_FAMILIES: each other family's lists for its 5
# upcoming occasions, some of its items bought.
OTHER_MONEY = """
INSERT INTO occasions (id, family_id, name, kind, date, created_at, updated_at)
  SELECT gen_random_uuid(), nf.id, 'O' || o, 'BIRTHDAY', current_date + o * 30, now(), now()
  FROM nf, generate_series(1, 5) o;
UPDATE gift_lists l SET occasion_id = (SELECT id FROM occasions o WHERE o.family_id = l.family_id
                                       ORDER BY md5(o.id::text || l.id::text) LIMIT 1)
  WHERE l.family_id IN (SELECT id FROM nf);
UPDATE gifts SET price = 10 WHERE family_id IN (SELECT id FROM nf);
UPDATE list_items SET status = 'PURCHASED'
  WHERE family_id IN (SELECT id FROM nf) AND md5(id::text) < '8';
"""
MONEY = """{ dashboard { spent spentByCurrency { currency amount } budget
  pipeline { idea selected purchased received }
  people { person { name } spent spentByCurrency { currency amount }
           pipeline { idea selected purchased received } }
  nextOccasions { name } recentIdeas { id } activity { seq } } }"""
SUMMARIES = """{ occasions(first: 10) { edges { node { name summary { spent
  spentByCurrency { currency amount } people { spent pipeline { idea purchased } } } } } } }"""


async def test_the_money_reads_its_family_rows_with_or_without_statistics(demo: str) -> None:
    """The dashboard's and the occasions' money (spent, per person, per currency), compiled
    and by the executor, beside 200 other families with lists for upcoming occasions,
    analyzed or not: each statement reads about its family's rows (the demo family's 600
    items, 30 lists, 12 persons), never another family's lists or persons. Joined by key
    alone, a custom plan or one without statistics hashed every family's `gift_lists`,
    `occasions` and `gifts` (178,000 rows read beside 2,500 families: bench/NOTES.md)."""
    statements = []  # after the caller's row: compiled, then the executor's
    for query, accel in ((MONEY, True), (MONEY, False), (SUMMARIES, False)):
        settings = make_settings(demo, result_cache_bytes=0, accel=accel)
        statements += (await statements_of(demo, query, settings))[1:]
    assert any("""(SELECT ('{"dashboard":' || """ in s for s, _ in statements)
    conn = await asyncpg.connect(_dsn(demo), statement_cache_size=0)
    try:
        await conn.execute(OTHER_FAMILIES + OTHER_MONEY)
        await conn.execute("ANALYZE")
        read: dict[str, dict[str, float]] = {}
        for state in ("analyzed", "not analyzed"):
            if state == "not analyzed":
                await forget_statistics(demo)
            for statement, params in statements:
                # EXPLAIN with the values: the custom plan, as a statement's first runs get
                out = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + statement,
                                          *params)
                report = json.loads(out) if isinstance(out, str) else out
                read.setdefault(state, {})[statement[:90]] = rows_read(report[0]["Plan"])
    finally:
        await conn.close()
    # The compiled dashboard reads ~2,600 rows (the family's items twice, with their gifts
    # and lists); each of the executor's statements at most ~1,100.
    for state, counts in read.items():
        for statement, n in counts.items():
            limit = 4_000 if statement.startswith("SELECT CASE WHEN octet_length") else 2_000
            assert n < limit, (state, statement, n, counts)
