"""The database pool keeps the connections a burst needed: requests at a steady concurrency
above what the pool keeps would each so often open a new PostgreSQL connection (a backend
started, authentication, every statement prepared again on it). At W1's c=16 with a pool
of 10 and an overflow of 10, 4% of requests did (bench/NOTES.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import event, text

from giftgraph.config import Settings
from giftgraph.db.engine import create_database
from tests.conftest import make_settings
from tests.integration.test_live import WsClient
from tests.integration.test_live_features import running


async def test_bursts_above_ten_connections_open_none_after_the_first(database_url: str) -> None:
    settings = make_settings(database_url)  # the pool's defaults
    assert settings.db_pool_size >= 16
    database = create_database(database_url, settings)
    opened: list[Any] = []
    event.listen(database.engine.sync_engine, "connect", lambda *_: opened.append(1))
    inside: list[int] = []
    all_in, held = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with database.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            inside.append(1)
            if len(inside) == 16:
                all_in.set()
            await held.wait()  # all 16 checked out at once

    async def burst() -> None:
        inside.clear()
        all_in.clear()
        held.clear()
        tasks = [asyncio.create_task(hold()) for _ in range(16)]
        await asyncio.wait_for(all_in.wait(), 30)
        held.set()
        await asyncio.gather(*tasks)

    try:
        await burst()
        assert len(opened) == 16
        for _ in range(3):
            await burst()
        assert len(opened) == 16  # each burst found its connections kept
    finally:
        await database.dispose()


def test_the_default_pool_has_no_overflow_to_close() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.db_pool_size, settings.db_max_overflow) == (20, 0)


async def test_a_kept_connection_keeps_at_most_50_statements(database_url: str) -> None:
    """Each prepared statement stays in its PostgreSQL backend for the connection's life,
    and the pool now keeps its connections: asyncpg's cache (the direct statements, the
    compiled reads among them) holds 50 a connection, as many as 10 connections' 100."""
    database = create_database(database_url, make_settings(database_url))
    try:
        async with database.engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            assert driver is not None
            for n in range(120):
                await driver.fetch(f"SELECT {n} AS n")
            held = await driver.fetchval("SELECT count(*) FROM pg_prepared_statements")
    finally:
        await database.dispose()
    assert 50 <= held <= 60, held  # (the count's own, and evicted ones closed lazily)


async def test_the_pool_connections_compile_nothing_just_in_time(database_url: str) -> None:
    """JIT off on the app's connections: PostgreSQL compiles a statement whose estimated
    cost passes `jit_above_cost`, and estimates without statistics or through LATERAL
    lookups pass it easily (100-140 ms to compile a dashboard statement that runs in 1 ms);
    the server's own default (on) stays for everyone else."""
    database = create_database(database_url, make_settings(database_url))
    try:
        async with database.engine.connect() as connection:
            assert (await connection.execute(text("SHOW jit"))).scalar() == "off"
    finally:
        await database.engine.dispose()


async def test_sockets_authenticate_while_every_pooled_connection_is_busy(
        database_url: str) -> None:
    """A socket's authentication (connection_init) has a lane of its own: after a restart
    every socket comes back at once with its subscriptions, and their starts held the
    pool's connections while the sockets' authentication queued behind them, past the
    pool's timeout ('database unavailable', closed 1013: the sockets came back once
    more). Here every connection of the pool is held; a socket is still acknowledged, and
    a GraphQL request over HTTP still waits for the pool as before."""
    settings = make_settings(database_url, db_pool_size=2, result_cache_bytes=0)
    async with running(settings) as srv:
        token, _ = await srv.signup(f"lane-{time.monotonic_ns()}@example.com")
        database = srv.app.state.giftgraph.database
        held = [await database.engine.connect() for _ in range(settings.db_pool_size)]
        try:
            for connection in held:
                await connection.execute(text("SELECT 1"))
            assert database.engine.sync_engine.pool.checkedout() == settings.db_pool_size
            clients = await asyncio.wait_for(asyncio.gather(*(
                WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
                for _ in range(5))), 10)  # each acknowledged, or this fails
            request = asyncio.create_task(srv.http.post(
                "/graphql", json={"query": "{ me { id } }"},
                headers={"authorization": f"Bearer {token}"}))
            await asyncio.sleep(1)
            assert not request.done()  # HTTP requests still wait for the pool
        finally:
            for connection in held:
                await connection.close()
        assert (await request).json()["data"]["me"]["id"]
        for client in clients:
            await client.ws.close()
