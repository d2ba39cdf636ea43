"""End to end over real sockets: the service run by uvicorn, driven by the `gql` client."""

from __future__ import annotations

import httpx
import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport

from giftgraph.db.migrate import head_revisions


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
