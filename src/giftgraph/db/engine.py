"""Engine and session factory, owned by the app's lifespan (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from giftgraph.config import Settings


def async_url(url: str) -> str:
    """Normalise a postgres URL to the asyncpg driver."""
    u = make_url(url)
    if u.drivername in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+asyncpg")
    return u.render_as_string(hide_password=False)


@dataclass
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    async def dispose(self) -> None:
        await self.engine.dispose()


def create_database(url: str, settings: Settings, **engine_kwargs: Any) -> Database:
    connect_args: dict[str, Any] = {"server_settings": {"application_name": "giftgraph"}}
    if settings.statement_timeout_ms:
        connect_args["server_settings"]["statement_timeout"] = str(settings.statement_timeout_ms)
    engine = create_async_engine(
        async_url(url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        # The most recently used connection first: its prepared statements and asyncpg's
        # type codecs (the enums') are warm. FIFO rotated every request over the whole
        # pool, so each connection paid a prepare and a type introspection (~3 ms) per
        # statement, and a lightly used server paid it on nearly every request.
        pool_use_lifo=True,
        connect_args=connect_args,
        **engine_kwargs,
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
    return Database(engine=engine, sessions=sessions)
