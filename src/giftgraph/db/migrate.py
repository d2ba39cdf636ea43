"""Run Alembic migrations programmatically (used by `giftgraph migrate` and `serve`), and
tell whether a database is at this code's head revision (`serve`, `/health`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from giftgraph.db.engine import async_url

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return cfg


async def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at `url` to `revision` inside one connection."""
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            # Serialise concurrent migrators (several instances starting at once).
            await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7421001)")

            def _upgrade(sync_conn: object) -> None:
                cfg = alembic_config(url)
                cfg.attributes["connection"] = sync_conn
                command.upgrade(cfg, revision)

            await conn.run_sync(_upgrade)
    finally:
        await engine.dispose()


@lru_cache(maxsize=1)
def _scripts() -> tuple[frozenset[str], frozenset[str]]:
    """The head revisions of this code's migration scripts, and every revision they know."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    scripts = ScriptDirectory.from_config(cfg)
    return (frozenset(scripts.get_heads()),
            frozenset(s.revision for s in scripts.walk_revisions()))


def head_revisions() -> frozenset[str]:
    """What `giftgraph migrate` brings a database to (read from the scripts, once)."""
    return _scripts()[0]


async def database_revisions(conn: AsyncConnection) -> frozenset[str]:
    """The revisions recorded in the database (empty: never migrated)."""
    if not await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL")):
        return frozenset()
    return frozenset((await conn.execute(text("SELECT version_num FROM alembic_version")))
                     .scalars())


async def schema_revisions(url: str) -> frozenset[str]:
    """`database_revisions` of the database at `url`, over a connection of its own."""
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            return await database_revisions(conn)
    finally:
        await engine.dispose()


def schema_state(revisions: frozenset[str]) -> str:
    """What /health says of a database's schema: its revision when it is this code's head;
    `outdated` when it is older or was never migrated; `unknown` when this code has no
    such revision (a newer release migrated it)."""
    heads, known = _scripts()
    if revisions == heads:
        return ",".join(sorted(heads))
    if revisions <= known:
        return "outdated"
    return "unknown"


def describe(revisions: frozenset[str]) -> str:
    """`0001`, `0001,0002`, or `never migrated`, for messages."""
    return ",".join(sorted(revisions)) or "never migrated"
