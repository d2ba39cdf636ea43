"""Plans (`giftgraph bench plans`): the compiled statement's SQL time before and after ANALYZE.

A freshly loaded database has no planner statistics until autovacuum gets to it (or
`demo-data`'s own ANALYZE): the planner then guesses, and a statement whose good plan
depends on statistics can be many times slower in that window. This workload times, with
EXPLAIN ANALYZE inside PostgreSQL (no network, no server, a warm connection), W1's nested
query as GiftGraph compiles it and as PostGraphile 5 plans it, on the demo data first with
every statistic forgotten (autovacuum off for the tables, `pg_statistic` rows and
`pg_class` estimates reset, as after a bulk load that nobody analyzed), then after ANALYZE.

GiftGraph's statement is the one its server runs (captured from the app's engine, with its
parameters, cache off); PostGraphile 5's is the one its server sent (read from
`pg_stat_activity`; its one parameter is the family's id).
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from bench import pgl
from bench.harness import dsn
from bench.reads import NESTED
from bench.report import Options, Outcome, Target
from giftgraph.demo import DEMO_EMAIL, DEMO_PASSWORD

ROUNDS = 15
GOAL = 1.5  # ours / PostGraphile 5's, on tables nobody analyzed


async def forget_statistics(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn(url))
    try:
        tables = [r["relname"] for r in await conn.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind = 'r'")]
        for table in tables:
            await conn.execute(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')
        await conn.execute("DELETE FROM pg_statistic WHERE starelid IN (SELECT oid FROM "
                           "pg_class WHERE relnamespace = 'public'::regnamespace)")
        await conn.execute("UPDATE pg_class SET reltuples = -1, relpages = 0, "
                           "relallvisible = 0 WHERE relnamespace = 'public'::regnamespace "
                           "AND relkind IN ('r', 'i')")
    finally:
        await conn.close()


async def statements_of(url: str, query: str, settings: Any = None
                        ) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements GiftGraph's server runs for `query` as the demo user, in order (the
    caller's row first), with their parameters (`settings`: the app's; by default the
    environment's for `url`, result cache off)."""
    from sqlalchemy import event

    from giftgraph.app import create_app
    from giftgraph.config import Settings

    settings = settings or Settings(_env_file=None, database_url=url,  # type: ignore[call-arg]
                                    result_cache_bytes=0)
    app = create_app(settings)
    seen: list[tuple[str, tuple[Any, ...]]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, tuple(parameters or ())))

    async with app.router.lifespan_context(app):
        database = app.state.giftgraph.database
        database.direct_statements = False  # the compiled read through the engine: seen below
        engine = database.engine.sync_engine
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            login = await http.post("/graphql", json={"query": (
                "mutation($e: String!, $p: String!) { login(email: $e, password: $p) "
                "{ accessToken } }"), "variables": {"e": DEMO_EMAIL, "p": DEMO_PASSWORD}})
            token = login.json()["data"]["login"]["accessToken"]
            event.listen(engine, "before_cursor_execute", capture)
            try:
                r = await http.post("/graphql", json={"query": query},
                                    headers={"authorization": f"Bearer {token}"})
            finally:
                event.remove(engine, "before_cursor_execute", capture)
    assert r.status_code == 200, r.text
    assert "errors" not in r.json(), r.text
    return seen


async def ours(url: str, settings: Any = None) -> tuple[str, tuple[Any, ...]]:
    """The statement GiftGraph's server runs for W1's nested query, and its parameters."""
    # The compiled one builds the whole answer: the longest.
    return max(await statements_of(url, NESTED, settings), key=lambda s: len(s[0]))


def theirs(url: str, family: str) -> str | None:
    """The statement PostGraphile 5 sends for its nested query (None: not installed)."""
    if pgl.V5.install() is not None:
        return None
    server = pgl.V5.server(url)
    with server:
        r = httpx.post(f"{server.base}/graphql", json={"query": pgl.V5.query,
                                                       "variables": {"f": family}}, timeout=30)
        assert r.status_code == 200, r.text
        assert "errors" not in r.json(), r.text

        async def last() -> str:
            import asyncpg

            conn = await asyncpg.connect(dsn(url))
            try:
                return str(await conn.fetchval(
                    "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND query ILIKE '%gift_lists%' LIMIT 1"))
            finally:
                await conn.close()

        return asyncio.run(last())


async def timings(url: str, statements: dict[str, tuple[str, tuple[Any, ...]]]
                  ) -> dict[str, dict[str, float]]:
    """Median planning and execution time (ms) of each statement over ROUNDS by EXPLAIN
    ANALYZE, on one warm connection (as a server's pooled one is) that caches no prepared
    statement: each round is planned anew, as the first run of a new plan is. The
    statements take turns in each round, so that a busy moment of a shared machine
    weighs on all of them alike."""
    import json

    import asyncpg

    plan: dict[str, list[float]] = {key: [] for key in statements}
    execute: dict[str, list[float]] = {key: [] for key in statements}
    conn = await asyncpg.connect(dsn(url), statement_cache_size=0)
    try:
        for k in range(ROUNDS + 2):
            for key, (statement, params) in statements.items():
                out = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + statement,
                                          *params)
                report = json.loads(out)[0] if isinstance(out, str) else out[0]
                if k >= 2:  # two rounds warm the connection's caches
                    plan[key].append(report["Planning Time"])
                    execute[key].append(report["Execution Time"])
    finally:
        await conn.close()
    return {key: {"planning_ms": statistics.median(plan[key]),
                  "execution_ms": statistics.median(execute[key]),
                  "total_ms": statistics.median(
                      p + e for p, e in zip(plan[key], execute[key], strict=True))}
            for key in statements}


def run(database_url: str, opt: Options) -> Outcome:
    family = pgl.family_of(database_url, DEMO_EMAIL)
    asyncio.run(forget_statistics(database_url))
    our_sql, our_params = asyncio.run(ours(database_url))
    their_sql = theirs(database_url, family)
    rows: list[dict[str, Any]] = []
    for state in ("not analyzed", "analyzed"):
        if state == "analyzed":
            import asyncpg

            async def analyze() -> None:
                conn = await asyncpg.connect(dsn(database_url))
                try:
                    await conn.execute("ANALYZE")
                finally:
                    await conn.close()

            asyncio.run(analyze())
        statements = {"giftgraph": (our_sql, our_params)}
        if their_sql is not None:
            import uuid

            statements["postgraphile"] = (their_sql, (uuid.UUID(family),))
        row: dict[str, Any] = {"state": state,
                               **asyncio.run(timings(database_url, statements))}
        if their_sql is not None:
            row["ratio"] = row["giftgraph"]["total_ms"] / row["postgraphile"]["total_ms"]
        rows.append(row)
    table = Table(title=f"Plans: W1 nested, SQL time inside PostgreSQL (median of {ROUNDS}, "
                        "planning + execution)")
    for col in ("tables", "GiftGraph ms", "(planning)", "PostGraphile 5 ms", "(planning)",
                "ratio"):
        table.add_column(col, justify="left" if col == "tables" else "right")
    for r in rows:
        g, p = r["giftgraph"], r.get("postgraphile")
        table.add_row(r["state"], f"{g['total_ms']:.2f}", f"{g['planning_ms']:.2f}",
                      f"{p['total_ms']:.2f}" if p else "—", f"{p['planning_ms']:.2f}" if p
                      else "—", f"{r['ratio']:.2f}x" if p else "—")
    cold = rows[0]
    targets = [Target("compiled statement on unanalyzed tables vs PostGraphile 5's",
                      f"{cold['ratio']:.2f}x" if "ratio" in cold else "not run",
                      f"≤ {GOAL:g}x", cold["ratio"] <= GOAL if "ratio" in cold else None)]
    return Outcome("plans", "Plans", {"rounds": ROUNDS, "query": NESTED,
                                      "giftgraph_sql": our_sql,
                                      "postgraphile_sql": their_sql, "quick": opt.quick},
                   rows, table, targets, plot, [])


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    states = [r["state"] for r in rows]
    ax.bar([i - 0.2 for i in range(len(rows))], [r["giftgraph"]["total_ms"] for r in rows],
           0.4, label="GiftGraph")
    if all("postgraphile" in r for r in rows):
        ax.bar([i + 0.2 for i in range(len(rows))],
               [r["postgraphile"]["total_ms"] for r in rows], 0.4, label="PostGraphile 5")
    ax.set_xticks(range(len(rows)), states)
    ax.set(ylabel="ms in PostgreSQL", title="W1 nested: SQL time by statistics")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
