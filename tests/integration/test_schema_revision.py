"""An external database not at this code's head revision: `/health` says so (503), and
`giftgraph serve` refuses to start until `giftgraph migrate` has run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx

from giftgraph.app import create_app
from giftgraph.db.migrate import head_revisions, upgrade
from tests.conftest import _dsn, make_settings
from tests.support import free_port, service_env, stop

HEAD = ",".join(sorted(head_revisions()))


async def _health(url: str) -> httpx.Response:
    app = create_app(make_settings(url))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        return await http.get("/health")


async def test_health_reports_the_schema_revision(empty_database: str) -> None:
    r = await _health(empty_database)
    assert r.status_code == 503
    assert r.json() == {"status": "unhealthy", "db": "connected", "schema": "outdated",
                        "broadcast": "connected"}
    await upgrade(empty_database, "0001")  # an older release's schema
    r = await _health(empty_database)
    assert r.status_code == 503
    assert r.json()["schema"] == "outdated"
    await upgrade(empty_database)
    r = await _health(empty_database)
    assert r.status_code == 200
    assert r.json() == {"status": "healthy", "db": "connected", "schema": HEAD,
                        "broadcast": "connected"}


async def test_health_is_503_for_a_revision_this_code_does_not_know(empty_database: str) -> None:
    await upgrade(empty_database)
    conn = await asyncpg.connect(_dsn(empty_database))
    try:  # as a newer release's `migrate` would leave it
        await conn.execute("UPDATE alembic_version SET version_num = 'f00dfeed'")
    finally:
        await conn.close()
    r = await _health(empty_database)
    assert r.status_code == 503
    assert r.json()["schema"] == "unknown"


def _serve(url: str) -> subprocess.Popen[bytes]:
    command = shutil.which("giftgraph", path=str(Path(sys.executable).parent)) or "giftgraph"
    return subprocess.Popen(  # noqa: S603 - our own console script, fixed args
        [command, "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        env=service_env(url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def test_serve_refuses_a_database_never_migrated(empty_database: str) -> None:
    proc = _serve(empty_database)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 2, out
    lines = out.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "never migrated" in lines[0]
    assert "run `giftgraph migrate` first" in lines[0]
    assert HEAD in lines[0]
