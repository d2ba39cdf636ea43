"""Real-PostgreSQL fixtures: embedded (pgserver) by default, or GIFTGRAPH_TEST_DATABASE_URL.

One database is created and migrated per test session; every test starts from empty
tables (every row deleted), so tests never see each other's rows.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from giftgraph.app import create_app
from giftgraph.config import Settings
from giftgraph.db.embedded import EmbeddedPostgres
from giftgraph.db.migrate import upgrade
from tests.support import ACCEL, serving

TABLES = ("events", "comments", "list_items", "gift_lists", "gifts", "occasions", "persons",
          "known_networks", "refresh_tokens", "users", "families", "persisted_documents")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "accel: tests a fast path itself (giftgraph.accel: a contract test, a "
        "compiled statement count); skipped when GIFTGRAPH_ACCEL=false")
    # SIGTERM (`kill`, a CI's timeout) ends the run as Ctrl-C does: the session's fixtures
    # are torn down, the embedded PostgreSQL with them (it was left running, orphaned).
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With the fast paths off, the tests of a fast path itself are skipped (the rest run
    on the plain paths and must pass unchanged)."""
    if ACCEL:
        return
    skip = pytest.mark.skip(reason="tests a fast path (giftgraph.accel); GIFTGRAPH_ACCEL=false")
    for item in items:
        if item.get_closest_marker("accel") is not None:
            item.add_marker(skip)


APOLLO = Path(__file__).resolve().parent.parent / "examples" / "apollo"
FULL_COLLECTION_EVERY = 100  # tests


def pytest_runtest_setup(item: pytest.Item) -> None:
    """What earlier tests left is frozen before each test (`gc.freeze`), so the collector's
    full collections during a test scan only that test's objects. Servers in this process
    paused for a full collection of the whole suite's heap: 0.9-1.1 s each in the second
    half of a run (measured with gc.callbacks), enough to fail a test's 1 s bound or starve
    a family's live budget (two CI failures). Every `FULL_COLLECTION_EVERY` tests,
    everything is collected once, between tests, so cycles among frozen objects are freed
    too."""
    item.session.stash[_TESTS_RUN] = run = item.session.stash.get(_TESTS_RUN, 0) + 1
    if run % FULL_COLLECTION_EVERY == 0:
        gc.unfreeze()
    gc.collect()
    gc.freeze()


_TESTS_RUN = pytest.StashKey[int]()


@pytest.fixture
def node() -> str:
    """The node binary, with the Apollo examples' packages installed; checked before any
    server starts, so a skip costs nothing."""
    found = shutil.which("node")
    if found and (APOLLO / "node_modules" / "@apollo" / "client").exists():
        return found
    if os.environ.get("GIFTGRAPH_REQUIRE_NODE") == "1":
        pytest.fail("node and examples/apollo/node_modules (npm ci --prefix examples/apollo) "
                    "are required (GIFTGRAPH_REQUIRE_NODE=1)")
    pytest.skip("node or examples/apollo/node_modules missing "
                "(run `npm ci --prefix examples/apollo`)")


def _dsn(url: str) -> str:
    """A plain libpq/asyncpg DSN for a SQLAlchemy-style URL."""
    u = make_url(url).set(drivername="postgresql")
    return u.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server's admin URL: the env's, or an embedded one for this session."""
    env = os.environ.get("GIFTGRAPH_TEST_DATABASE_URL")
    if env:
        yield env
        return
    # Not under pytest's basetemp: a later pytest session on the same machine removes all
    # but the newest three of those, data directory and all, while this one still runs.
    root = Path(tempfile.mkdtemp(prefix="giftgraph-test-pg-"))
    embedded = EmbeddedPostgres(root)
    embedded.start()
    try:
        yield embedded.admin_url()
    finally:
        embedded.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test session (dropped afterwards)."""
    name = f"giftgraph_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(_dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        # No wait for the disk at each COMMIT (a crash could lose the last few, which no
        # test needs): on a loaded CI machine a commit's flush stalled up to seconds, and
        # tests that time a change from its mutation to its effect measured the disk.
        await admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    finally:
        await admin.close()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    await upgrade(url)
    yield url
    admin = await asyncpg.connect(_dsn(server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def empty_database(server_url: str) -> AsyncIterator[str]:
    """A database of its own, never migrated (dropped afterwards): for migration tests."""
    name = f"giftgraph_scratch_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(_dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    admin = await asyncpg.connect(_dsn(server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "jwt_secret": "test-secret-that-is-long-enough-0123456789",
        # Cheap hashing keeps the suite fast; production uses argon2's defaults.
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "argon2_parallelism": 1,
        # Tests make many changes quickly; the rate-limit tests set their own budgets.
        "mutation_rate": "100000/minute",
        "family_mutation_rate": "100000/minute",
        "login_rate": "100000/minute",
        "login_ip_rate": "100000/minute",
        "signup_ip_rate": "100000/minute",
        # Tests send many requests of one family at once (races); the admission tests set
        # their own.
        "max_requests_per_caller": 64,
        # Fuzzing and the bounds' tests send refused requests in a row; the pacing's own
        # tests set their own.
        "refusal_rate": 100000.0,
        "refusal_burst": 100000,
        "analysis_seconds_per_caller": 100000.0,  # fuzzing sends new documents in a row
        "analysis_burst_seconds": 100000.0,
        "family_mutation_burst": 100000,
        "family_subscription_start_burst": 100000,
        "token_ip_rate": "100000/minute",
        "socket_connect_ip_rate": "100000/minute",
        "max_subscriptions_per_user": 1_000_000,
        "accel": ACCEL,  # GIFTGRAPH_ACCEL from the environment (tests.support)
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(autouse=True)
async def clean_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Empty every table before each test that uses the database."""
    if "database_url" not in request.fixturenames:
        yield
        return
    url = request.getfixturevalue("database_url")
    conn = await asyncpg.connect(_dsn(url))
    try:
        # DELETE, children before parents (TABLES' order): a test leaves a few rows, and
        # TRUNCATE's new files cost ~30 ms a test (51 s of a run of the suite).
        await conn.execute("; ".join(f"DELETE FROM {table}" for table in TABLES))  # noqa: S608 - fixed names
    finally:
        await conn.close()
    yield


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Any]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@dataclass
class GQLResult:
    status: int
    body: dict[str, Any]

    @property
    def data(self) -> Any:
        assert not self.body.get("errors"), self.body.get("errors")
        return self.body["data"]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return self.body.get("errors") or []

    @property
    def codes(self) -> list[str]:
        return [e.get("extensions", {}).get("code") for e in self.errors]


class GQL:
    """A GraphQL-over-HTTP client bound to a token (or anonymous)."""

    def __init__(self, http: httpx.AsyncClient, token: str | None = None) -> None:
        self.http = http
        self.token = token

    def as_(self, token: str | None) -> GQL:
        return GQL(self.http, token)

    async def __call__(self, query: str, variables: dict[str, Any] | None = None,
                       **kw: Any) -> GQLResult:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        r = await self.http.post("/graphql", json={"query": query, "variables": variables or {}},
                                 headers=headers, **kw)
        return GQLResult(r.status_code, r.json())


@pytest.fixture
async def http(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
def gql(http: httpx.AsyncClient) -> GQL:
    return GQL(http)


SIGN_UP = """
mutation($input: SignUpInput!) {
  signUp(input: $input) { accessToken refreshToken expiresIn user { id email role } }
}"""


@dataclass
class Account:
    client: GQL
    token: str
    refresh: str
    user_id: str
    email: str
    password: str


async def sign_up(gql: GQL, family: str = "Family", email: str | None = None,
                  password: str = "correct horse battery") -> Account:
    email = email or f"{uuid.uuid4().hex[:8]}@example.com"
    r = await gql(SIGN_UP, {"input": {"familyName": family, "email": email,
                                      "password": password, "displayName": "Admin"}})
    payload = r.data["signUp"]
    return Account(gql.as_(payload["accessToken"]), payload["accessToken"],
                   payload["refreshToken"], payload["user"]["id"], email, password)


@pytest.fixture
async def alice(gql: GQL) -> Account:
    """The ADMIN of a first family."""
    return await sign_up(gql, "Alice's family")


@pytest.fixture
async def mallory(gql: GQL) -> Account:
    """The ADMIN of another family: must never see or touch Alice's data."""
    return await sign_up(gql, "Mallory's family")


@pytest.fixture
def server(database_url: str) -> Iterator[str]:
    """The service under uvicorn in its own process, on a free port; yields its base URL."""
    # The fan-out test opens 1,000 sockets as one user.
    with serving(database_url, GIFTGRAPH_MAX_SOCKETS_PER_USER="5000") as base:
        yield base


