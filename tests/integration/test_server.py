"""End to end over real sockets: the service run by uvicorn, driven by the `gql` client."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport

from giftgraph.db.migrate import head_revisions
from tests.support import free_port, service_env, stop, unread_stream, wait_healthy


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

    async with httpx.AsyncClient(base_url=server) as http:
        health = (await http.get("/health")).json()
        ide = await http.get("/graphql", headers={"Accept": "text/html"})
    assert health == {"status": "healthy", "db": "connected",
                      "schema": ",".join(sorted(head_revisions())), "broadcast": "connected"}
    assert ide.status_code == 200
    assert "graphiql" in ide.text.lower()


def test_serve_exits_on_sigterm_while_a_subscription_stream_is_open(database_url: str) -> None:
    """An HTTP subscription stream never ends by itself: on SIGTERM, `giftgraph serve`
    waited for it forever (uvicorn's graceful shutdown has no bound unless given one);
    it now closes it after GIFTGRAPH_SHUTDOWN_TIMEOUT_SECONDS and exits."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env(database_url, GIFTGRAPH_SHUTDOWN_TIMEOUT_SECONDS="1")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed args
        [sys.executable, "-m", "giftgraph.cli", "serve", "--host", "127.0.0.1",
         "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(base, proc, time.monotonic() + 60)
        token = httpx.post(f"{base}/graphql", json={"query": (
            'mutation { signUp(input: {familyName: "S", email: "sigterm@example.com", '
            'password: "long enough pw", displayName: "S"}) { accessToken } }')}
        ).json()["data"]["signUp"]["accessToken"]
        with unread_stream(base, token, "subscription { familyEvents { seq } }"):
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
            assert time.monotonic() - started < 10
    finally:
        stop(proc)
