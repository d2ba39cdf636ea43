"""Fault injection with real processes: PostgreSQL and Redis stopped and started under load.

* PostgreSQL: this module starts its OWN PostgreSQL (pgserver, in a temporary data directory
  that survives restarts), migrates a database in it and runs the service under uvicorn
  against it. The tests stop that server for ~2 s while clients keep working, then start it
  again on the same data directory: nothing hangs, every failure is a coded GraphQL error
  (no bare 500, no SQL or driver text), `/health` says 503 while the database is away, the
  pool recovers within seconds, committed data is consistent, and a `familyEvents`
  subscriber misses no committed event and sees none twice (live, and resuming with `since`).
  While the database is down, every kind of caller (token holders, login/signUp, sockets in
  connection_init) is told to retry, never that its credentials are wrong.
* Redis: a private `redis-server` on a free port (never the machine's shared one) holds the
  login throttle of two instances. The budget is shared; with Redis stopped the limiter
  fails open (no hang, no 5xx), also when Redis hangs instead of refusing (SIGSTOP); once
  Redis is back the limits apply again. Skipped without
  `redis-server`, unless GIFTGRAPH_REQUIRE_REDIS=1 (then it fails).

Broker (broadcaster) outages for subscriptions are covered by test_scaleout.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pgserver
import psutil
import pytest
from sqlalchemy import literal, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from websockets.exceptions import ConnectionClosed

from giftgraph.db.engine import Database, create_database
from giftgraph.db.migrate import upgrade
from giftgraph.db.models import Family
from giftgraph.db.session import OperationDb, Prepared, execute_in, unavailable
from giftgraph.errors import AppliedUnanswered, OutcomeUnknown
from tests.conftest import make_settings
from tests.integration.test_live import WsClient, listeners, listening, signup
from tests.support import (
    RedisServer,
    free_port,
    redis_binary,
    service_env,
    start_service,
    stop,
    wait_healthy,
)

pytestmark = pytest.mark.timeout(90)

REQUEST_TIMEOUT = 5.0  # seconds; a request that needs this long counts as hung
OUTAGE_SECONDS = 2.0
RECOVERY_SECONDS = 5.0  # after the restart, everything works again within this
PASSWORD = "long password"  # tests.integration.test_live.signup's
JSON_ACCEPT = {"Accept": "application/json"}
ALLOWED_OUTAGE_CODES = frozenset({"INTERNAL_SERVER_ERROR"})
# Text that must never reach a client: driver, ORM, SQL, OS and socket details.
LEAK_MARKERS = ("asyncpg", "sqlalchemy", "psycopg", "traceback", "select ", "insert into",
                "sqlstate", "errno", ".s.pgsql", "connectionrefused", "connection refused",
                "postgres", "pg_", "background on this error", "redis", 'file "')

CREATE_PERSON = "mutation($i: PersonInput!) { createPerson(input: $i) { id name } }"
READ = "query { me { id } persons(first: 5) { totalCount edges { node { id name } } } }"
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }"
FAMILY_EVENTS = ("subscription($s: String) "
                 "{ familyEvents(since: $s) { seq kind entityType entityId node { id } } }")
EVENTS_PAGE = """query($a: String) { events(first: 100, after: $a) {
  edges { node { seq kind entityType entityId } } pageInfo { hasNextPage endCursor } } }"""
PERSON_NAMES = """query($a: String) { persons(first: 100, after: $a) {
  totalCount edges { node { id name } } pageInfo { hasNextPage endCursor } } }"""


# Processes -----------------------------------------------------------------------------


class OwnPostgres:
    """A private PostgreSQL (pgserver) whose data directory survives stop/start."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: Any = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is None:
            # cleanup_mode="stop": cleanup() stops the server (pg_ctl -w stop, fast mode)
            # and keeps the data directory, so get_server() starts it again on the same data.
            self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()

    def dsn(self, database: str) -> str:
        """A libpq/asyncpg DSN (unix socket in the data directory)."""
        assert self._server is not None, "the server is stopped"
        return str(self._server.get_uri(database=database))

    def url(self, database: str) -> str:
        return self.dsn(database).replace("postgresql://", "postgresql+asyncpg://", 1)


@dataclass
class Service:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _spawn(database_url: str, log: Path, extra_env: dict[str, str]) -> Service:
    port = free_port()
    env = service_env(database_url, **{"GIFTGRAPH_BROADCAST_URL": "memory://",
                                       "GIFTGRAPH_RATE_LIMIT_STORAGE_URL": "memory://",
                                       **extra_env})
    with log.open("wb") as out:
        proc = start_service(port, env, out)
    return Service(f"http://127.0.0.1:{port}", proc, log)


@contextlib.contextmanager
def services(database_url: str, logs: list[Path],
             extra_env: dict[str, str] | None = None) -> Iterator[list[Service]]:
    """One uvicorn process per log file, on free ports, all healthy; terminated after."""
    started: list[Service] = []
    try:
        for log in logs:
            started.append(_spawn(database_url, log, extra_env or {}))
        deadline = time.monotonic() + 30
        for svc in started:
            wait_healthy(svc.base, svc.proc, deadline, f":\n{svc.log_tail()}")
        yield started
    finally:
        for svc in started:
            if svc.proc.poll() is None:
                svc.proc.terminate()
        for svc in started:
            stop(svc.proc)


# Fixtures: one private PostgreSQL + one service for the database outage tests ------------


@pytest.fixture(scope="module")
def own_pg() -> Iterator[OwnPostgres]:
    # Not under pytest's basetemp: as root, pgserver runs postgres as another user and opens
    # the parent directories to it, and every pytest session that starts meanwhile makes
    # /tmp/pytest-of-<user> private again (0700), which would lock postgres out at restart.
    root = Path(tempfile.mkdtemp(prefix="giftgraph-faults-"))
    pg = OwnPostgres(root / "pgdata")
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
async def own_db(own_pg: OwnPostgres) -> str:
    name = "giftgraph_faults"
    admin = await asyncpg.connect(own_pg.dsn("postgres"), timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = own_pg.url(name)
    await upgrade(url)
    return url


@pytest.fixture(scope="module")
def own_service(own_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    log = tmp_path_factory.mktemp("faults-log") / "service.log"
    with services(own_db, [log]) as (svc,):
        yield svc


@contextlib.asynccontextmanager
async def outage(pg: OwnPostgres) -> AsyncIterator[None]:
    """PostgreSQL is stopped inside; started again (same data) on the way out, always."""
    await asyncio.to_thread(pg.stop)
    try:
        yield
    finally:
        await asyncio.to_thread(pg.start)


# Clients -------------------------------------------------------------------------------


@dataclass
class Call:
    """One GraphQL request as the client saw it."""

    op: str
    started: float
    ended: float
    status: int | None = None
    body: Any = None
    text: str = ""
    transport_error: str | None = None
    name: str | None = None  # createPerson: the unique name sent

    @property
    def ok(self) -> bool:
        return (self.status == 200 and isinstance(self.body, dict)
                and not self.body.get("errors") and bool(self.body.get("data")))

    @property
    def codes(self) -> list[Any]:
        errors = self.body.get("errors") if isinstance(self.body, dict) else None
        return [(e.get("extensions") or {}).get("code") for e in errors or []]

    def problems(self, allowed_codes: frozenset[str]) -> list[str]:
        """What is wrong with this answer, if anything (an error itself may be fine)."""
        where = f"{self.op} at +{self.started:.2f}s"
        if self.transport_error is not None:
            return [f"{where}: no HTTP answer ({self.transport_error})"]
        found: list[str] = []
        if self.ended - self.started >= REQUEST_TIMEOUT:
            found.append(f"{where}: took {self.ended - self.started:.2f} s")
        if not isinstance(self.body, dict) or not ("data" in self.body or "errors" in self.body):
            return [*found, f"{where}: HTTP {self.status} without a GraphQL body: "
                            f"{self.text[:200]!r}"]
        if self.status != 200:
            found.append(f"{where}: HTTP {self.status} (application/json expects 200): "
                         f"{self.text[:300]}")
        errors = self.body.get("errors") or []
        for error in errors:
            ext = error.get("extensions") or {}
            if ext.get("code") not in allowed_codes:
                found.append(f"{where}: error code {ext.get('code')!r}: {error}")
            if not ext.get("traceId"):
                # e.g. an exception escaping an extension hook (RequestScope's teardown):
                # it replaces the whole result, unformatted and unlogged.
                found.append(f"{where}: error without traceId (it escaped FormatErrors): "
                             f"{error}")
        leaked = json.dumps(errors).lower()
        found += [f"{where}: error text leaks {marker!r}: {errors}"
                  for marker in LEAK_MARKERS if marker in leaked]
        return found


async def gql(http: httpx.AsyncClient, op: str, query: str, variables: dict[str, Any],
              token: str | None = None, name: str | None = None, t0: float = 0.0,
              base: str = "") -> Call:
    """POST one operation (to `base`, or the client's own base URL); never raises."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.monotonic()
    try:
        r = await http.post(f"{base}/graphql", json={"query": query, "variables": variables},
                            headers=headers)
    except httpx.HTTPError as exc:
        return Call(op, started - t0, time.monotonic() - t0, transport_error=repr(exc),
                    name=name)
    ended = time.monotonic()
    try:
        body: Any = r.json()
    except ValueError:
        body = None
    return Call(op, started - t0, ended - t0, r.status_code, body, r.text, name=name)


async def wait_health(base: str, status_code: int, db: str, within: float) -> dict[str, Any]:
    """Poll `/health` until it answers `status_code` with `db`; every poll is bounded."""
    deadline = time.monotonic() + within
    last: Any = None
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as http:
        while True:
            started = time.monotonic()
            try:
                r = await http.get(f"{base}/health")
                last = (r.status_code, r.json())
                if r.status_code == status_code and last[1].get("db") == db:
                    return last[1]  # type: ignore[no-any-return]
            except httpx.HTTPError as exc:
                last = repr(exc)
            assert time.monotonic() - started < REQUEST_TIMEOUT, f"/health hung: {last}"
            assert time.monotonic() < deadline, \
                f"{base}/health never answered {status_code} db={db} within {within} s: {last}"
            await asyncio.sleep(0.1)


async def all_pages(http: httpx.AsyncClient, token: str, query: str,
                    root: str) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(100):
        call = await gql(http, root, query, {"a": after}, token)
        assert call.ok, call.body
        conn = call.body["data"][root]
        nodes += [edge["node"] for edge in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            return nodes
        after = conn["pageInfo"]["endCursor"]
    raise AssertionError(f"{root}: too many pages")


def _email(who: str) -> str:
    return f"{who}-{uuid.uuid4().hex[:8]}@faults.example.com"


def _failures(calls: list[Call], allowed: frozenset[str] = ALLOWED_OUTAGE_CODES) -> list[str]:
    return [p for c in calls for p in c.problems(allowed)]


# PostgreSQL restarted under load ---------------------------------------------------------


async def _load_worker(n: int, http: httpx.AsyncClient, token: str, email: str, tag: str,
                       stop: asyncio.Event, calls: list[Call], t0: float) -> None:
    """Mutations, queries and logins back to back until `stop` (each at most 5 s)."""
    for i in itertools.count():
        if stop.is_set():
            return
        if i % 2 == 0:
            name = f"{tag}-w{n}-{i}"
            calls.append(await gql(http, "createPerson", CREATE_PERSON,
                                   {"i": {"name": name, "interests": ["faults"]}}, token,
                                   name, t0))
        elif i % 6 == 1:
            calls.append(await gql(http, "login", LOGIN, {"e": email, "p": PASSWORD}, None,
                                   None, t0))
        else:
            calls.append(await gql(http, "read", READ, {}, token, None, t0))
        await asyncio.sleep(0.03)


async def test_postgres_restart_under_load(own_pg: OwnPostgres, own_service: Service) -> None:
    base = own_service.base
    email = _email("load")
    token = signup(base, email)
    tag = uuid.uuid4().hex[:8]
    calls: list[Call] = []
    stop = asyncio.Event()
    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=base, timeout=REQUEST_TIMEOUT,
                                 headers=JSON_ACCEPT) as http:
        workers = [asyncio.create_task(_load_worker(n, http, token, email, tag, stop, calls, t0))
                   for n in range(4)]
        try:
            await asyncio.sleep(2.0)  # steady load first
            t_stop = time.monotonic() - t0
            async with outage(own_pg):
                t_down = time.monotonic() - t0
                during = await wait_health(base, 503, "disconnected", within=3)
                await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - t0 - t_down)))
            t_up = time.monotonic() - t0
            after = await wait_health(base, 200, "connected", within=RECOVERY_SECONDS)
            t_healthy = time.monotonic() - t0
            # Keep the load on past the recovery budget: the tail must be all successes.
            await asyncio.sleep(max(0.0, t_up + RECOVERY_SECONDS + 1.5 - (time.monotonic() - t0)))
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*workers), REQUEST_TIMEOUT + 5)
        assert own_service.proc.poll() is None, f"the service died:\n{own_service.log_tail()}"

        failed = [c for c in calls if not c.ok]
        report = (f"{len(calls)} calls, {len(failed)} failed; stop at +{t_stop:.2f}s, "
                  f"down at +{t_down:.2f}s, up at +{t_up:.2f}s, healthy at +{t_healthy:.2f}s")
        assert during == {"status": "unhealthy", "db": "disconnected", "schema": "unknown",
                          "broadcast": "connected"}, during
        assert after["status"] == "healthy", after
        # No hang, no bare 500, no leak: every failure is a coded, masked GraphQL error.
        problems = _failures(calls)
        assert not problems, f"{report}\n" + "\n".join(problems[:20])
        # The outage really happened, and nothing failed outside it.
        assert [c for c in calls if c.ok and c.ended < t_stop], report
        assert failed, f"no request failed during the outage: {report}"
        early = [c for c in failed if c.ended < t_stop]
        assert not early, f"failures before the database stopped: {early[:3]}"
        # Recovery: a request succeeds soon after the restart, and then everything does.
        first_ok = min((c.ended for c in calls if c.ok and c.started >= t_up), default=None)
        assert first_ok is not None, report
        assert first_ok - t_up < RECOVERY_SECONDS, report
        tail = [c for c in calls if c.started >= t_up + RECOVERY_SECONDS]
        assert tail, report
        late = [(c.op, round(c.started - t_up, 2), c.body) for c in tail if not c.ok]
        assert not late, f"still failing {RECOVERY_SECONDS} s after the restart: {late[:5]}"
        # A token holder's request made while the database was fully down says "retry"
        # (in-flight ones cut at the stop may be plain masked errors; logins: see below).
        settled = [c for c in failed
                   if c.op != "login" and t_down <= c.started and c.ended <= t_up]
        assert settled, report
        not_retryable = [c.body for c in settled
                         if c.body["errors"][0].get("extensions", {}).get("retryable") is not True]
        assert not not_retryable, not_retryable[:3]
        # The log says so sparsely: at most a line a second for each kind of caller (each
        # failed request logged one, with SQLAlchemy's statement text), and never a
        # statement.
        log_text = own_service.log.read_text(errors="replace")
        lines = [ln for ln in log_text.splitlines() if "database unavailable" in ln]
        assert lines, own_service.log_tail()
        assert len(lines) <= 4 * (t_up - t_down + RECOVERY_SECONDS + 2), lines[:10]
        assert len(lines) < len(failed), (len(lines), len(failed))
        # Each of those records whole (its line and any after it up to the next record's):
        # no statement in it.
        records = re.split(r"\n(?=\d{4}-\d\d-\d\dT)", log_text)
        outage_lines = [r for r in records if "database unavailable" in r]
        assert not [r for r in outage_lines if "[SQL" in r or "SELECT" in r], outage_lines[:3]

        # Consistency: a person exists iff its createPerson succeeded, with its one event.
        persons = {p["name"]: p["id"] for p in await all_pages(http, token, PERSON_NAMES,
                                                                "persons")}
        events = await all_pages(http, token, EVENTS_PAGE, "events")
    creates = [c for c in calls if c.op == "createPerson"]
    ok_names = {c.name for c in creates if c.ok}
    failed_names = {c.name for c in creates if not c.ok}
    assert ok_names, report
    assert failed_names, report
    lost = ok_names - persons.keys()
    assert not lost, f"createPerson succeeded but the person is gone: {sorted(lost)[:5]}"
    ghosts = persons.keys() - ok_names
    assert not ghosts - failed_names, f"persons nobody created: {sorted(ghosts)[:5]}"
    assert not ghosts, (f"{len(ghosts)} createPerson reported failure but committed: "
                        f"{sorted(ghosts)[:5]}")
    added = [e["entityId"] for e in events
             if e["kind"] == "ADDED" and e["entityType"] == "Person"]
    assert sorted(added) == sorted(persons.values()), "one ADDED event per committed person"
    seqs = [int(e["seq"]) for e in events]
    assert len(set(seqs)) == len(seqs), "duplicate event seqs"
    # And the database agrees with the API, read directly.
    conn = await asyncpg.connect(own_pg.dsn("giftgraph_faults"), timeout=10)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM persons WHERE name LIKE $1",
                                     f"{tag}-%")
    finally:
        await conn.close()
    assert stored == len(ok_names), report


# What clients are told while PostgreSQL is away -----------------------------------------

# A socket refused because of an outage must not look like bad credentials (4403 makes a
# client drop its token): 1011 internal error, 1013 try again later, or graphql-ws's 4500.
RETRYABLE_CLOSE_CODES = frozenset({1011, 1013, 4500})
SIGN_UP = ("mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }")


async def test_postgres_outage_is_retryable_for_every_client(own_pg: OwnPostgres,
                                                             own_service: Service) -> None:
    """While the database is down every kind of caller gets a coded, retryable answer:
    token holders, anonymous callers (login, signUp) and sockets in connection_init."""
    base = own_service.base
    email = _email("retry")
    token = signup(base, email)
    found: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=REQUEST_TIMEOUT,
                                 headers=JSON_ACCEPT) as http:
        async with outage(own_pg):
            await wait_health(base, 503, "disconnected", within=3)
            attempts = [
                await gql(http, "read", READ, {}, token),
                await gql(http, "createPerson", CREATE_PERSON, {"i": {"name": "x"}}, token),
                await gql(http, "login", LOGIN, {"e": email, "p": PASSWORD}),
                await gql(http, "signUp", SIGN_UP, {"i": {
                    "familyName": "F", "email": _email("new"), "password": PASSWORD,
                    "displayName": "D"}}),
            ]
            for call in attempts:
                found += call.problems(ALLOWED_OUTAGE_CODES)
                errors = call.body.get("errors") if isinstance(call.body, dict) else None
                if not errors or (errors[0].get("extensions") or {}).get("retryable") is not True:
                    found.append(f"{call.op}: expected INTERNAL_SERVER_ERROR with retryable, "
                                 f"got {call.body}")
            started = time.monotonic()
            try:
                client = await WsClient.connect(base, {"authorization": f"Bearer {token}"})
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                reason = exc.rcvd.reason if exc.rcvd else None
                if code not in RETRYABLE_CLOSE_CODES:
                    found.append(f"connection_init: closed {code} {reason!r}, expected one of "
                                 f"{sorted(RETRYABLE_CLOSE_CODES)}")
            except TimeoutError:
                found.append("connection_init: no answer within 5 s")
            else:
                found.append("connection_init: acknowledged while the database is down")
                await client.ws.close()
            if time.monotonic() - started >= REQUEST_TIMEOUT:
                found.append("connection_init: took 5 s or more")
        await wait_health(base, 200, "connected", within=RECOVERY_SECONDS)
        # And once it is back, the same token works again (it was never the token's fault).
        client, _ = await _connect_when_up(base, token, RECOVERY_SECONDS)
        await client.ws.close()
        assert (await gql(http, "read", READ, {}, token)).ok
    assert not found, "\n".join(found)


# No committed event lost across a PostgreSQL outage ------------------------------------


async def _record(client: WsClient, op: str, seqs: list[int], other: list[Any]) -> None:
    """Record the seqs a subscription delivers until its socket closes (or cancelled)."""
    while True:
        try:
            msg = json.loads(await client.ws.recv())
        except ConnectionClosed as exc:
            other.append(("closed", exc.rcvd.code if exc.rcvd else None))
            return
        if msg["type"] == "ping":
            await client.ws.send(json.dumps({"type": "pong"}))
        elif msg["type"] == "next" and msg["id"] == op and not msg["payload"].get("errors"):
            seqs.append(int(msg["payload"]["data"]["familyEvents"]["seq"]))
        elif msg["type"] != "pong":
            other.append(msg)


async def _connect_when_up(base: str, token: str, within: float) -> tuple[WsClient, float]:
    """A socket as soon as connection_init is acknowledged again; the seconds it took."""
    started = time.monotonic()
    while True:
        try:
            return await WsClient.connect(base, {"authorization": f"Bearer {token}"}), \
                time.monotonic() - started
        except (ConnectionClosed, OSError, TimeoutError):
            assert time.monotonic() - started < within, "no socket after the restart"
            await asyncio.sleep(0.2)


async def _writer(http: httpx.AsyncClient, token: str, tag: str, stop: asyncio.Event,
                  calls: list[Call]) -> None:
    for i in itertools.count():
        if stop.is_set():
            return
        name = f"{tag}-{i}"
        calls.append(await gql(http, "createPerson", CREATE_PERSON, {"i": {"name": name}},
                               token, name))
        await asyncio.sleep(0.05)


async def test_no_committed_event_lost_across_postgres_outage(own_pg: OwnPostgres,
                                                              own_service: Service) -> None:
    base = own_service.base
    token = signup(base, _email("events"))
    tag = uuid.uuid4().hex[:8]
    calls: list[Call] = []
    stop = asyncio.Event()
    clients: list[WsClient] = []
    readers: list[asyncio.Task[None]] = []
    steady_seqs: list[int] = []
    dropped_seqs: list[int] = []
    resumed_seqs: list[int] = []
    other: dict[str, list[Any]] = {"steady": [], "dropped": [], "resumed": []}
    async with httpx.AsyncClient(base_url=base, timeout=REQUEST_TIMEOUT,
                                 headers=JSON_ACCEPT) as http:
        try:
            baseline = max((int(e["seq"]) for e in await all_pages(http, token, EVENTS_PAGE,
                                                                   "events")), default=0)
            # `steady` keeps its socket through the outage; `dropped` loses it when the
            # database goes away and resumes afterwards with since = the last seq it saw.
            before = await listeners(base)
            steady = await WsClient.connect(base, {"authorization": f"Bearer {token}"})
            clients.append(steady)
            s_op = await steady.subscribe(FAMILY_EVENTS, {})
            dropped = await WsClient.connect(base, {"authorization": f"Bearer {token}"})
            clients.append(dropped)
            d_op = await dropped.subscribe(FAMILY_EVENTS, {})
            await listening(base, before + 2)
            readers += [
                asyncio.create_task(_record(steady, s_op, steady_seqs, other["steady"])),
                asyncio.create_task(_record(dropped, d_op, dropped_seqs, other["dropped"])),
            ]
            writer = asyncio.create_task(_writer(http, token, tag, stop, calls))
            try:
                await asyncio.sleep(1.5)
                async with outage(own_pg):
                    await asyncio.wait_for(dropped.ws.close(), 2)
                    await asyncio.wait_for(readers[1], 2)
                    await asyncio.sleep(OUTAGE_SECONDS)
                await wait_health(base, 200, "connected", within=RECOVERY_SECONDS)
                await asyncio.sleep(1.5)  # writes after the recovery, live to `steady`
            finally:
                stop.set()
                await asyncio.wait_for(writer, REQUEST_TIMEOUT + 5)

            assert dropped_seqs, "the dropped subscriber saw nothing before the outage"
            resumed, reconnect_seconds = await _connect_when_up(base, token, RECOVERY_SECONDS)
            clients.append(resumed)
            r_op = await resumed.subscribe(FAMILY_EVENTS, {"s": str(dropped_seqs[-1])})
            readers.append(asyncio.create_task(
                _record(resumed, r_op, resumed_seqs, other["resumed"])))
            await asyncio.sleep(0.3)
            for i in range(2):  # and it continues live
                call = await gql(http, "createPerson", CREATE_PERSON,
                                 {"i": {"name": f"{tag}-after-{i}"}}, token, f"{tag}-after-{i}")
                assert call.ok, call.body
                calls.append(call)

            events = await all_pages(http, token, EVENTS_PAGE, "events")
            expected = sorted(s for e in events if (s := int(e["seq"])) > baseline)
            for _ in range(50):  # at most 5 s for the last deliveries
                if set(expected) <= set(steady_seqs) \
                        and set(expected) <= set(dropped_seqs + resumed_seqs):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # room for a duplicate to show up
            persons = {p["name"]: p["id"] for p in await all_pages(http, token, PERSON_NAMES,
                                                                    "persons")}
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            for client in clients:
                with contextlib.suppress(Exception):  # already closed
                    await asyncio.wait_for(client.ws.close(), 2)

    failed = [c for c in calls if not c.ok]
    assert failed, "no write failed: the outage did not happen"
    problems = _failures(calls)
    assert not problems, "\n".join(problems[:20])
    ok_names = {c.name for c in calls if c.ok}
    assert ok_names <= persons.keys(), sorted(ok_names - persons.keys())[:5]
    person_events = sorted(e["entityId"] for e in events if int(e["seq"]) > baseline
                           and e["kind"] == "ADDED" and e["entityType"] == "Person")
    assert person_events == sorted(persons.values()), "one event per committed person"

    assert not other["steady"], other["steady"]
    assert not other["resumed"], other["resumed"]
    assert reconnect_seconds < RECOVERY_SECONDS
    # Live through the outage: every committed event, in seq order, exactly once.
    assert steady_seqs == expected, (
        f"missing {sorted(set(expected) - set(steady_seqs))}, "
        f"extra {sorted(set(steady_seqs) - set(expected))}, "
        f"order ok: {steady_seqs == sorted(steady_seqs)}")
    # Resumed with `since`: the two halves are exactly the committed events.
    assert all(s > dropped_seqs[-1] for s in resumed_seqs), resumed_seqs
    assert dropped_seqs + resumed_seqs == expected, (
        f"missing {sorted(set(expected) - set(dropped_seqs + resumed_seqs))}, "
        f"duplicates {len(dropped_seqs + resumed_seqs) - len(set(dropped_seqs + resumed_seqs))}")


# Redis restarted: the shared login throttle ---------------------------------------------


@dataclass
class Logins:
    http: httpx.AsyncClient
    email: str
    calls: list[Call] = field(default_factory=list)

    async def login(self, svc: Service) -> Call:
        call = await gql(self.http, f"login via {svc.base}", LOGIN,
                         {"e": self.email, "p": PASSWORD}, base=svc.base)
        self.calls.append(call)
        return call


def _limited(call: Call) -> bool:
    if call.codes != ["RATE_LIMITED"]:
        return False
    retry = call.body["errors"][0]["extensions"].get("retryAfter")
    return isinstance(retry, int) and 1 <= retry <= 60


async def test_login_throttle_shared_through_redis_survives_restart(
        database_url: str, tmp_path: Path) -> None:
    redis = RedisServer(redis_binary(), free_port())
    redis.start()
    try:
        env = {"GIFTGRAPH_RATE_LIMIT_STORAGE_URL": redis.url,
               "GIFTGRAPH_LOGIN_RATE": "3/minute",
               "GIFTGRAPH_LOGIN_IP_RATE": "1000/minute"}
        with services(database_url, [tmp_path / "a.log", tmp_path / "b.log"], env) as (a, b):
            email = _email("throttle")
            token = signup(a.base, email)
            async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, headers=JSON_ACCEPT) as http:
                logins = Logins(http, email)
                # One budget for both instances: 2 on A + 1 on B pass, the 4th (on B) doesn't.
                for svc in (a, a, b):
                    call = await logins.login(svc)
                    assert call.ok, call.body
                fourth = await logins.login(b)
                assert _limited(fourth), fourth.body
                assert _limited(await logins.login(a)), "A must see B's hits too"

                # Redis goes away: the limiter fails open, promptly, on both instances (this
                # email is over its budget, so each login passing proves the fail-open).
                await asyncio.to_thread(redis.stop)
                down: list[Call] = []
                for svc in (a, b, a, b, a):
                    down.append(await logins.login(svc))
                    down.append(await gql(http, f"createPerson via {svc.base}", CREATE_PERSON,
                                          {"i": {"name": "during redis outage"}}, token,
                                          base=svc.base))
                    down.append(await gql(http, f"read via {svc.base}", READ, {}, token,
                                          base=svc.base))
                health = await wait_health(a.base, 200, "connected", within=2)
                assert health["status"] == "healthy"
                slow = [(c.op, round(c.ended - c.started, 2)) for c in down
                        if c.ended - c.started > 2.5]
                assert not slow, f"requests slowed by the dead Redis: {slow}"
                assert not _failures(down, frozenset()), _failures(down, frozenset())[:5]

                # Redis is back (empty): the limits apply again, shared again.
                await asyncio.to_thread(redis.start)
                after = [await logins.login(svc) for svc in (a, b, a, b)]
                assert [c.ok for c in after[:3]] == [True] * 3, [c.body for c in after]
                assert _limited(after[3]), after[3].body

                # Redis hangs (SIGSTOP: connections open, nothing answers): each limiter hit
                # waits out its 1 s socket timeout, then fails open. Slow, but no hang.
                await asyncio.to_thread(redis.freeze)
                frozen = [await logins.login(a),
                          await gql(http, "createPerson (frozen Redis)", CREATE_PERSON,
                                    {"i": {"name": "during a frozen redis"}}, token,
                                    base=b.base)]
                redis.thaw()
                assert not _failures(frozen, frozenset()), _failures(frozen, frozenset())[:5]
                assert all(c.ok for c in frozen), [c.body for c in frozen]
                # Thawed: the budget kept in Redis applies again at once.
                assert _limited(await logins.login(b)), "limits apply once Redis answers"
                assert a.proc.poll() is None, a.log_tail()
                assert b.proc.poll() is None, b.log_tail()
    finally:
        redis.stop()


# A database that stops answering (connections open, nothing comes back) -----------------


@contextlib.contextmanager
def frozen(pg: OwnPostgres) -> Iterator[None]:
    """Every PostgreSQL process stopped (SIGSTOP) inside: a frozen host, or a network path
    that drops everything; continued on the way out, always."""
    pgdata = pg.pgdata
    postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    processes = [postmaster, *postmaster.children(recursive=True)]
    for process in processes:
        process.suspend()
    try:
        yield
    finally:
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.resume()


async def test_a_frozen_database_is_retryable_not_a_hang(
        own_pg: OwnPostgres, own_db: str, tmp_path: Path) -> None:
    """No answer at all from PostgreSQL: requests and connection_init, more at once than the
    pool has connections, end
    with their retryable answer (1013 for a socket) within about the time the database has
    to answer (`statement_timeout` + 2 s, db/watchdog.py), not one such wait after another;
    they hung for as long as it stayed frozen (adversary, 2026-11-26: no answer within
    70 s). Once it answers again, so does the service."""
    # A pool of 2: most requests queue for a connection (the pool's own wait is 30 s).
    env = {"GIFTGRAPH_STATEMENT_TIMEOUT_MS": "1000", "GIFTGRAPH_DB_PING_AFTER_IDLE_SECONDS": "0",
           "GIFTGRAPH_DB_POOL_SIZE": "2"}
    with services(own_db, [tmp_path / "frozen.log"], env) as (svc,):
        token = signup(svc.base, _email("frozen"))
        auth = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=svc.base, timeout=30,
                                     headers=JSON_ACCEPT) as http:
            assert (await gql(http, "read", READ, {}, token)).ok
            await (await WsClient.connect(svc.base, auth)).ws.close()  # the lane's connection

            async def refused() -> int | None:
                with pytest.raises(ConnectionClosed) as closed:
                    await WsClient.connect(svc.base, auth, timeout=20)
                return closed.value.rcvd.code if closed.value.rcvd is not None else None

            with frozen(own_pg):
                started = time.monotonic()
                calls = await asyncio.gather(
                    *[gql(http, "read", READ, {}, token) for _ in range(8)],
                    gql(http, "createPerson", CREATE_PERSON, {"i": {"name": "frozen"}}, token),
                    refused(), refused())
                took = time.monotonic() - started
            for call in calls[:9]:
                assert isinstance(call, Call), call
                assert call.body is not None, call
                errors = call.body.get("errors") or [{}]
                assert (errors[0].get("extensions") or {}).get("retryable") is True, call.body
            assert calls[9:] == [1013, 1013]
            # 3 s to answer, checked every 0.375 s; then 2 s for those queued behind (a
            # margin for a loaded machine)
            assert took < 12, took
            await wait_health(svc.base, 200, "connected", within=RECOVERY_SECONDS)
            assert (await gql(http, "read", READ, {}, token)).ok
            await (await WsClient.connect(svc.base, auth)).ws.close()
            cut = [line for line in (await http.get("/metrics")).text.splitlines()
                   if line.startswith("giftgraph_db_connections_cut ")]
            assert cut, "the watchdog's count is exported"
            assert float(cut[0].split()[1]) >= 1, cut


async def wait_answering(database: Database) -> None:
    """Until a statement is answered (the silence after a freeze has ended)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            async with database.read_engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            return
        except (DBAPIError, TimeoutError, PoolTimeout):
            assert time.monotonic() < deadline, "the database never answered again"
            await asyncio.sleep(0.2)


async def test_a_commit_lost_to_a_frozen_database_is_not_called_retryable(
        own_pg: OwnPostgres, own_db: str) -> None:
    """The connection is closed (db/watchdog.py) while the COMMIT waits on a frozen
    database: PostgreSQL may still apply it when it runs again (the adversary saw 4 of 120
    such changes applied), so the answer must not tell the client to retry it."""
    database = create_database(own_db, make_settings(own_db, statement_timeout_ms=500))
    database.watch()
    try:
        async with database.engine.begin() as connection:
            await connection.execute(text("CREATE TABLE IF NOT EXISTS commit_probe (note text)"))
        async def insert(into: str, freeze: contextlib.ExitStack | None = None) -> None:
            db = OperationDb(database)
            try:
                async with db.write() as session:
                    await session.execute(text(f"INSERT INTO {into} VALUES ('lost')"))  # noqa: S608
                    if freeze is not None:
                        freeze.enter_context(frozen(own_pg))  # the COMMIT meets a frozen database
            finally:
                await db.end()

        with contextlib.ExitStack() as freeze, pytest.raises(OutcomeUnknown) as lost:
            await insert("commit_probe", freeze)
        assert lost.value.extensions.get("retryable") is False
        # The unit's last statements (an ORM flush) cut before any COMMIT was sent: nothing
        # applied, and the client may retry (not "it may have been applied").
        async def add_family(freeze: contextlib.ExitStack) -> None:
            db = OperationDb(database)
            try:
                async with db.write() as session:
                    await session.execute(text("SELECT 1"))  # the unit's connection, open
                    session.add(Family(name="never applied"))  # sent by the flush
                    freeze.enter_context(frozen(own_pg))
            finally:
                await db.end()

        await wait_answering(database)
        with contextlib.ExitStack() as freeze, pytest.raises(DBAPIError) as unsent:
            await add_family(freeze)
        assert unavailable(unsent.value)
        # A statement that fails before the COMMIT is the body's error, as before.
        with pytest.raises(DBAPIError):
            await insert("no_such_table")
    finally:
        await database.watchdog.stop()
        await database.dispose()


async def test_a_direct_units_commit_lost_to_a_frozen_database_is_not_called_retryable(
        own_pg: OwnPostgres, own_db: str) -> None:
    """`write_direct` (no ORM session) as `write` above: a COMMIT cut by the watchdog on a
    frozen database is OutcomeUnknown, a statement cut before it the body's error (the
    client may retry), and the connection goes back to no pool inside its transaction."""
    database = create_database(own_db, make_settings(own_db, statement_timeout_ms=500))
    database.watch()
    probe = Prepared(text("INSERT INTO commit_probe VALUES ('lost') RETURNING note"))
    try:
        async with database.engine.begin() as connection:
            await connection.execute(text("CREATE TABLE IF NOT EXISTS commit_probe (note text)"))
            await connection.execute(text("TRUNCATE commit_probe"))

        async def insert(freeze_at: str, freeze: contextlib.ExitStack) -> None:
            db = OperationDb(database)
            try:
                async with db.write_direct() as unit:
                    if freeze_at == "statement":
                        freeze.enter_context(frozen(own_pg))
                    await execute_in(unit, probe, {})
                    if freeze_at == "commit":
                        freeze.enter_context(frozen(own_pg))
            finally:
                await db.end()

        with contextlib.ExitStack() as freeze, pytest.raises(OutcomeUnknown) as lost:
            await insert("commit", freeze)
        assert lost.value.extensions.get("retryable") is False
        await wait_answering(database)
        with contextlib.ExitStack() as freeze, pytest.raises(DBAPIError) as unsent:
            await insert("statement", freeze)
        assert unavailable(unsent.value)
        await wait_answering(database)
        async with database.engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            assert driver is not None
            assert not driver.is_in_transaction()
    finally:
        await database.watchdog.stop()
        await database.dispose()


async def test_a_read_after_a_commit_lost_to_a_frozen_database_is_not_called_retryable(
        own_pg: OwnPostgres, own_db: str) -> None:
    """The change is committed, then the database stops answering before the payload is
    read: resending the operation would apply it twice (adversary, 2026-11-27: 10 of 495
    'retryable' answers were committed), so the answer says it was applied."""
    database = create_database(own_db, make_settings(own_db, statement_timeout_ms=500))
    database.watch()
    db = OperationDb(database)
    try:
        async with db.write() as session:
            await session.execute(text("CREATE TABLE IF NOT EXISTS commit_probe (note text)"))
            await session.execute(text("INSERT INTO commit_probe VALUES ('applied')"))
        with frozen(own_pg), pytest.raises(AppliedUnanswered) as unanswered:
            await db.scalar(select(literal(1)))  # the payload's read
        assert unanswered.value.extensions.get("retryable") is False
    finally:
        await db.end()
        await database.watchdog.stop()
        await database.dispose()
