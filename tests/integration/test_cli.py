"""`giftgraph user create | reset-password` and `giftgraph serve`'s first lines, on a real
database: a user the command creates logs in through the API, and a password it resets ends
every session of theirs as a password change through the API does."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import orjson
import pytest
from sqlalchemy.engine import make_url

from giftgraph.cli.users import create_user, reset_password
from giftgraph.db import models as m
from giftgraph.ids import encode_id
from giftgraph.live.hub import Hub
from tests.conftest import GQL, SIGN_UP, Account, _dsn, make_settings, sign_up
from tests.support import free_port, service_env, stop

LOGIN = """
mutation($email: String!, $password: String!) {
  login(email: $email, password: $password) { accessToken refreshToken user { email role } }
}"""
REFRESH = "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken } }"
ME = "{ me { email role family { name } } }"


def giftgraph(database_url: str, *args: str, stdin: str | None = None,
              **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter, fixed args
        [sys.executable, "-m", "giftgraph.cli", *args], input=stdin, capture_output=True,
        text=True, timeout=120, check=False, env=service_env(database_url, **env))


async def token_epoch(database_url: str, email: str) -> int:
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        return int(await conn.fetchval("SELECT token_epoch FROM users WHERE email = $1", email))
    finally:
        await conn.close()


async def test_user_create_makes_an_admin_and_a_member_who_log_in(
        database_url: str, gql: GQL) -> None:
    done = await asyncio.to_thread(
        giftgraph, database_url, "user", "create", "ann@example.com", "--name", "Ann",
        "--new-family", "The Smiths", "--currency", "EUR", "--password-stdin",
        stdin="ann-password-1\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("created ADMIN ann@example.com in the new family "
                                  "'The Smiths' (family ID ")
    assert "ann-password-1" not in done.stdout + done.stderr

    done = await asyncio.to_thread(
        giftgraph, database_url, "user", "create", "ben@example.com", "--name", "Ben",
        "--family", "The Smiths", "--password-stdin", stdin="ben-password-1\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("created MEMBER ben@example.com in the family 'The Smiths'")

    for email, password, role in (("ann@example.com", "ann-password-1", "ADMIN"),
                                  ("ben@example.com", "ben-password-1", "MEMBER")):
        payload = (await gql(LOGIN, {"email": email, "password": password})).data["login"]
        me = (await gql.as_(payload["accessToken"])(ME)).data["me"]
        assert me == {"email": email, "role": role, "family": {"name": "The Smiths"}}
    # As signUp and registerUser: each is an event of the family's.
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        kinds = await conn.fetch("SELECT kind, entity_type FROM events ORDER BY seq")
    finally:
        await conn.close()
    assert [(r["kind"], r["entity_type"]) for r in kinds] == [("ADDED", "User")] * 2


async def test_user_create_finds_the_family_by_id_and_refuses_what_the_api_refuses(
        database_url: str, gql: GQL) -> None:
    settings = make_settings(database_url)
    first = await create_user(settings, database_url, email="a@example.com", display_name="A",
                              password="password-a1", new_family="Twins")
    await create_user(settings, database_url, email="b@example.com", display_name="B",
                      password="password-b1", new_family="Twins")
    made = await create_user(settings, database_url, email="c@example.com", display_name="C",
                             password="password-c1", family=encode_id("Family", first.family_id),
                             role=m.Role.ADMIN)
    assert (made.family_id, made.role, made.new_family) == (first.family_id, m.Role.ADMIN, False)
    made = await create_user(settings, database_url, email="d@example.com", display_name="D",
                             password="password-d1", family=str(first.family_id))
    assert made.family_id == first.family_id

    cases: list[tuple[list[str], str, int, str]] = [
        (["e@example.com", "--name", "E", "--family", "Twins"], "password-e1\n", 1,
         "giftgraph user create: --family: 2 families are named 'Twins'; name one by its ID: "),
        (["e@example.com", "--name", "E", "--family", "Nobody"], "password-e1\n", 1,
         "giftgraph user create: --family: no family has the ID or name 'Nobody'"),
        (["A@example.com", "--name", "A", "--new-family", "X"], "password-a2\n", 1,
         "giftgraph user create: A@example.com: an account with this email already exists"),
        (["not-an-email", "--name", "E", "--new-family", "X"], "short\n", 2,
         "giftgraph user create: EMAIL: must be an email address"),
        (["e@example.com", "--name", "E", "--new-family", "X", "--role", "MEMBER"],
         "password-e1\n", 2, "giftgraph user create: --role: the first member of a new family"),
        (["e@example.com", "--name", "E", "--new-family", "X"], "", 2,
         "giftgraph user create: no password on standard input"),
    ]
    for args, stdin, code, said in cases:
        done = await asyncio.to_thread(giftgraph, database_url, "user", "create", *args,
                                       "--password-stdin", stdin=stdin)
        assert (done.returncode, done.stderr.startswith(said)) == (code, True), \
            (args, done.stderr)
        assert "Traceback" not in done.stderr
    # No password at all: not typed (no terminal), not on standard input.
    done = await asyncio.to_thread(giftgraph, database_url, "user", "create", "e@example.com",
                                   "--name", "E", "--new-family", "X", stdin="")
    assert done.returncode == 2
    assert "--password-stdin" in done.stderr


async def test_reset_password_ends_every_session_as_the_api_does(
        database_url: str, gql: GQL) -> None:
    alice: Account = await sign_up(gql, "Alice's family")
    other = (await gql(LOGIN, {"email": alice.email, "password": alice.password})).data["login"]
    epoch = await token_epoch(database_url, alice.email)

    done = await asyncio.to_thread(
        giftgraph, database_url, "user", "reset-password", alice.email.upper(),
        "--password-stdin", stdin="a-new-password-1\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        f"password reset for {alice.email}: 2 refresh token(s) revoked, every access token "
        "issued before stops working")
    assert await token_epoch(database_url, alice.email) == epoch + 1

    for token in (alice.token, other["accessToken"]):
        assert (await gql.as_(token)(ME)).codes == ["UNAUTHENTICATED"]
    for refresh in (alice.refresh, other["refreshToken"]):
        assert (await gql(REFRESH, {"t": refresh})).codes == ["UNAUTHENTICATED"]
    assert (await gql(LOGIN, {"email": alice.email, "password": alice.password})).codes == \
        ["UNAUTHENTICATED"]
    assert (await gql(LOGIN, {"email": alice.email, "password": "a-new-password-1"})).data

    done = await asyncio.to_thread(giftgraph, database_url, "user", "reset-password",
                                   "nobody@example.com", "--password-stdin",
                                   stdin="a-new-password-1\n")
    assert (done.returncode, done.stderr) == (
        1, "giftgraph user reset-password: nobody@example.com: no user has this email\n")
    done = await asyncio.to_thread(giftgraph, database_url, "user", "reset-password",
                                   alice.email, "--password-stdin", stdin="short\n")
    assert (done.returncode, done.stderr) == (
        2, "giftgraph user reset-password: password: must be at least 8 "
           "characters\n")


async def test_reset_password_closes_sockets_on_every_instance(
        database_url: str, gql: GQL, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a shared broadcaster (postgres://), a running instance hears the revocation
    and closes the user's sockets, as for a password changed through the API."""
    alice = await sign_up(gql, "Alice's family")
    instance = Hub("postgres://", database_url)
    closed: asyncio.Queue[uuid.UUID] = asyncio.Queue()

    async def close_sockets(user_id: uuid.UUID, chain: Any = None) -> None:
        closed.put_nowait(user_id)

    monkeypatch.setattr(instance, "_close_sockets", close_sockets)
    await instance.connect()
    try:
        settings = make_settings(database_url, broadcast_url="postgres://")
        reset = await reset_password(settings, database_url, email=alice.email,
                                     password="a-new-password-2")
        assert reset.sockets_closed
        assert await asyncio.wait_for(closed.get(), 10) == reset.user_id
    finally:
        await instance.disconnect()


def test_serve_says_where_its_data_lives_and_its_addresses(database_url: str) -> None:
    port = free_port()
    with_password = make_url(database_url).set(password="pa55word-not-shown")
    url = with_password.render_as_string(hide_password=False)
    env = {k: v for k, v in service_env(url).items() if k != "XDG_RUNTIME_DIR"}
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed args
        [sys.executable, "-m", "giftgraph.cli", "serve", "--port", str(port)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().decode().rstrip("\n") for _ in range(4)]
    finally:
        stop(proc)
    err = proc.communicate()[1].decode()
    host = make_url(database_url)
    assert lines[0].startswith("GiftGraph "), (lines, err)
    port_shown = f":{host.port}" if host.port else ""
    # a host name, or (the embedded server) a socket directory in the URL's query
    at = host.host or host.query["host"]
    assert lines[1] == (f"database: PostgreSQL at {at}{port_shown}, database "
                        f"{host.database} (GIFTGRAPH_DATABASE_URL)")
    assert lines[2:] == [f"app:       http://127.0.0.1:{port}/",
                         f"GraphiQL:  http://127.0.0.1:{port}/graphql"]
    assert "pa55word" not in "\n".join(lines) + err
    assert "XDG_RUNTIME_DIR" not in err


def test_serve_listens_before_it_loads_the_app(database_url: str) -> None:
    """After a restart the clients that come back while the app is still loading wait in
    the listen queue and are served, rather than refused: `serve` listens first (before its
    schema check and banner, which come before the app's imports)."""
    import select
    import time

    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed args
        [sys.executable, "-m", "giftgraph.cli", "serve", "--port", str(port)],
        env=service_env(database_url, GIFTGRAPH_LOG_JSON="true"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while True:
            try:
                early = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except ConnectionRefusedError:
                assert proc.poll() is None
                assert time.monotonic() < deadline
                time.sleep(0.005)
        with early:
            # Nothing printed yet: the banner comes after the schema check.
            assert select.select([proc.stdout], [], [], 0)[0] == []
            early.sendall(b"GET /health HTTP/1.1\r\nHost: giftgraph\r\n\r\n")
            answer = early.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert proc.stdout.readline().startswith(b"GiftGraph ")
    finally:
        stop(proc)
    # uvicorn's access line is one of ours: the same JSON, written by the log thread.
    lines = [orjson.loads(line) for line in proc.communicate()[1].splitlines()
             if line.startswith(b"{")]
    access = [line for line in lines if line.get("logger") == "uvicorn.access"]
    assert any('"GET /health HTTP/1.1" 200' in line["event"] for line in access), lines


@pytest.mark.parametrize("access_log", [True, False])
def test_the_access_log_setting_covers_requests_and_sockets(database_url: str,
                                                            access_log: bool) -> None:
    """`GIFTGRAPH_ACCESS_LOG=false`: requests and sockets are served and their operations
    logged, but uvicorn writes no line per request (our log set-up must not give it a
    handler back) and none per WebSocket (accepted, opened, closed); on, it writes both."""
    import websockets.sync.client

    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed args
        [sys.executable, "-m", "giftgraph.cli", "serve", "--port", str(port)],
        env=service_env(database_url, GIFTGRAPH_LOG_JSON="true",
                        GIFTGRAPH_ACCESS_LOG=str(access_log).lower()),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"GiftGraph ")
        signed = httpx.post(f"http://127.0.0.1:{port}/graphql", timeout=30, json={
            "query": SIGN_UP, "variables": {"input": {
                "familyName": "Logs", "email": f"{uuid.uuid4().hex[:8]}@example.com",
                "password": "correct horse battery", "displayName": "Admin"}}})
        token = signed.json()["data"]["signUp"]["accessToken"]
        for _ in range(2):
            r = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": "{ __typename }"},
                           timeout=30)
            assert r.json() == {"data": {"__typename": "Query"}}, r.text
        with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/graphql",
                                            subprotocols=["graphql-transport-ws"]) as ws:
            ws.send(orjson.dumps({"type": "connection_init",
                                  "payload": {"token": token}}).decode())
            assert orjson.loads(ws.recv(timeout=30))["type"] == "connection_ack"
    finally:
        stop(proc)
    lines = [orjson.loads(line) for line in proc.communicate()[1].splitlines()
             if line.startswith(b"{")]
    assert sum(line.get("event") == "graphql.operation" for line in lines) == 3, lines
    access = [line for line in lines if line.get("logger") == "uvicorn.access"]
    sockets = [line for line in lines if line.get("logger") == "uvicorn.error" and (
        '"WebSocket /graphql" [accepted]' in line["event"]
        or line["event"] in ("connection open", "connection closed"))]
    assert any(line.get("logger") == "uvicorn.error" for line in lines), lines
    if access_log:
        assert len(access) == 3, lines
        assert len(sockets) >= 2, lines  # accepted, open (closed: when the server closes)
    else:
        assert access == [], lines
        assert sockets == [], lines


def test_serve_on_a_busy_port_says_so_in_one_line(database_url: str) -> None:
    """Before any banner or migration: one line naming the address, exit code 2."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = giftgraph(database_url, "serve", "--port", str(port))
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"giftgraph serve: 127.0.0.1:{port} is not free (Address already in use); choose "
        "another with --port (or GIFTGRAPH_PORT)"], done.stderr


def test_the_embedded_database_is_the_same_from_any_directory() -> None:
    """Without GIFTGRAPH_DATABASE_URL the data lives in the user's data directory: a command
    run from another directory finds the same database, and nothing warns on the way."""
    # Not under pytest's basetemp (see test_faults.own_pg: pgserver, as root, opens the
    # parent directories to the user it runs postgres as).
    root = Path(tempfile.mkdtemp(prefix="giftgraph-cli-"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GIFTGRAPH_") and k != "XDG_RUNTIME_DIR"}
    env.update(XDG_DATA_HOME=str(root / "xdg"), GIFTGRAPH_ARGON2_TIME_COST="1",
               GIFTGRAPH_ARGON2_MEMORY_KIB="1024", GIFTGRAPH_ARGON2_PARALLELISM="1")
    try:
        results = []
        for where in ("here", "there"):
            (root / where).mkdir()
            results.append(subprocess.run(
                [sys.executable, "-m", "giftgraph.cli", "user", "create", "eve@example.com",
                 "--name", "Eve", "--new-family", "Eves", "--password-stdin"],
                input="eve-password-1\n", cwd=root / where, env=env, capture_output=True,
                text=True, timeout=120, check=False))
        first, second = results
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith("created ADMIN eve@example.com")
        assert (second.returncode, second.stderr) == (
            1, "giftgraph user create: eve@example.com: an account with this email already "
               "exists\n")
        assert (root / "xdg" / "giftgraph" / "pgdata").is_dir()
        assert not (root / "here" / ".giftgraph").exists()
        assert "XDG_RUNTIME_DIR" not in first.stderr + second.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_user_commands_need_a_migrated_database(empty_database: str) -> None:
    done = giftgraph(empty_database, "user", "reset-password", "a@example.com",
                     "--password-stdin", stdin="a-password-1\n")
    assert done.returncode == 2
    assert done.stderr.startswith("giftgraph user reset-password: the database is at schema "
                                  "revision ")
    assert done.stderr.endswith("run `giftgraph migrate` first\n")
