"""Operation: health, masking of unexpected errors, settings, committed SDL."""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt
import pytest
from pydantic import ValidationError

from giftgraph.app import create_app
from giftgraph.config import DEFAULT_JWT_SECRET, Settings
from giftgraph.db.migrate import head_revisions
from giftgraph.schema.schema import build_schema
from tests.conftest import Account, make_settings

ROOT = Path(__file__).resolve().parents[2]
DEAD_DB = "postgresql://postgres@127.0.0.1:1/nothing"


async def test_health_reports_connected_db(http: httpx.AsyncClient) -> None:
    r = await http.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "healthy", "db": "connected",
                        "schema": ",".join(sorted(head_revisions())), "broadcast": "connected"}


async def test_health_is_200_after_the_server_dropped_pooled_connections(
        database_url: str) -> None:
    """A connection used within the pool's idle window is not pinged: if the server dropped
    it meanwhile (a restart), the health check's statement finds out, the pool is renewed,
    and the check asks once more instead of reporting a healthy database as down."""
    import asyncpg

    from tests.conftest import _dsn

    app = create_app(make_settings(database_url, db_ping_after_idle_seconds=60))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/health")).status_code == 200
            admin = await asyncpg.connect(_dsn(database_url))
            try:
                ended = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND application_name = 'giftgraph'")
            finally:
                await admin.close()
            assert ended >= 1
            r = await client.get("/health")
            assert r.status_code == 200, r.json()
            assert r.json()["db"] == "connected"


@pytest.fixture
async def dead_db_client() -> httpx.AsyncClient:
    app = create_app(make_settings(DEAD_DB))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client  # type: ignore[misc]


async def test_health_is_503_when_db_unreachable(dead_db_client: httpx.AsyncClient) -> None:
    r = await dead_db_client.get("/health")
    assert r.status_code == 503
    assert r.json()["db"] == "disconnected"


async def test_db_failure_is_masked_with_code_and_trace_id(
    dead_db_client: httpx.AsyncClient,
) -> None:
    settings = make_settings(DEAD_DB)
    token = jwt.encode({"sub": "00000000-0000-0000-0000-000000000001",
                        "fam": "00000000-0000-0000-0000-000000000002", "role": "ADMIN",
                        "typ": "access", "pst": "stamp", "iat": 1, "exp": 4_000_000_000},
                       settings.jwt_secret, algorithm="HS256")
    for query, headers in (
        ("{ me { id } }", {"Authorization": f"Bearer {token}"}),
        ('mutation { login(email: "a@b.co", password: "whatever1") { accessToken } }', {}),
    ):
        r = await dead_db_client.post("/graphql", json={"query": query}, headers=headers)
        body = r.text
        error = r.json()["errors"][0]
        assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
        assert error["extensions"]["traceId"]
        for leak in ("asyncpg", "Traceback", "127.0.0.1", "Connect", "sqlalchemy", "postgres"):
            assert leak not in body, (leak, body)


def test_production_refuses_default_or_missing_jwt_secret() -> None:
    for secret in (DEFAULT_JWT_SECRET, "", "short"):
        with pytest.raises(ValidationError, match="JWT_SECRET"):
            Settings(_env_file=None, environment="production", jwt_secret=secret)  # type: ignore[call-arg]
    ok = Settings(_env_file=None, environment="production", jwt_secret="x" * 40)  # type: ignore[call-arg]
    assert ok.is_production


def test_settings_read_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIFTGRAPH_ACCESS_TOKEN_TTL_SECONDS", "60")
    monkeypatch.setenv("GIFTGRAPH_CORS_ORIGINS", '["https://app.example"]')
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.access_token_ttl_seconds == 60
    assert s.cors_origins == ["https://app.example"]


def test_committed_schema_matches_code() -> None:
    committed = (ROOT / "schema.graphql").read_text()
    assert committed == build_schema().as_str() + "\n", (
        "schema.graphql is stale: run `giftgraph export-schema`"
    )


async def test_access_token_expires_in_matches_settings(alice: Account) -> None:
    claims = jwt.decode(alice.token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert claims["typ"] == "access"
