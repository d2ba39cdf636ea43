"""End to end over real sockets: the service run by uvicorn, driven by the `gql` client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(database_url: str) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "GIFTGRAPH_DATABASE_URL": database_url,
        "GIFTGRAPH_ENVIRONMENT": "test",
        "GIFTGRAPH_ARGON2_TIME_COST": "1",
        "GIFTGRAPH_ARGON2_MEMORY_KIB": "1024",
        "GIFTGRAPH_ARGON2_PARALLELISM": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "giftgraph.asgi:create",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "server exited during startup"
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_served_api_end_to_end(server: str) -> None:
    anon = HTTPXAsyncTransport(url=f"{server}/graphql")
    async with Client(transport=anon) as session:
        payload = (await session.execute(gql(
            "mutation { signUp(input: {familyName: \"E2E\", email: \"e2e@example.com\","
            " password: \"long enough pw\", displayName: \"E\"}) { accessToken user { email } } }"
        )))["signUp"]
        assert payload["user"]["email"] == "e2e@example.com"
        with pytest.raises(TransportQueryError) as err:
            await session.execute(gql("{ me { id } }"))
        assert err.value.errors[0]["extensions"]["code"] == "UNAUTHENTICATED"

    authed = HTTPXAsyncTransport(url=f"{server}/graphql",
                                 headers={"Authorization": f"Bearer {payload['accessToken']}"})
    async with Client(transport=authed) as session:
        person = (await session.execute(gql(
            'mutation { createPerson(input: {name: "Grandma"}) { id name } }')))["createPerson"]
        request = gql("query($id: ID!) { node(id: $id) { ... on Person { name } } }")
        request.variable_values = {"id": person["id"]}
        found = await session.execute(request)
        assert found["node"] == {"name": "Grandma"}
        me = await session.execute(gql("{ me { email family { name } } }"))
        assert me["me"] == {"email": "e2e@example.com", "family": {"name": "E2E"}}

    health = httpx.get(f"{server}/health").json()
    assert health == {"status": "healthy", "db": "connected", "broadcast": "connected"}
    ide = httpx.get(f"{server}/graphql", headers={"Accept": "text/html"})
    assert ide.status_code == 200 and "graphiql" in ide.text.lower()
