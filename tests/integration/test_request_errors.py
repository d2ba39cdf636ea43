"""Request errors: the operation to run, subscriptions over HTTP, the token limit, the
traceId of every error (HTTP request errors and socket refusals), suggestions in production."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from giftgraph.app import create_app
from tests.conftest import GQL, Account, make_settings, sign_up
from tests.integration.test_live import WsClient
from tests.support import serving

GQL_RESPONSE = "application/graphql-response+json"
MANY = "Must provide operation name if query contains multiple operations."
CREATE_THEN_READ = 'mutation B { createPerson(input: {name: "x"}) { id } } query A { me { id } }'
SUBSCRIPTION = "subscription { familyEvents { seq } }"


async def persons(account: Account) -> int:
    r = await account.client("{ persons { totalCount } }")
    return int(r.data["persons"]["totalCount"])


@pytest.mark.parametrize(("accept", "status"), [(GQL_RESPONSE, 400), ("application/json", 200)])
async def test_several_operations_need_a_name_over_http(
    http: httpx.AsyncClient, alice: Account, accept: str, status: int,
) -> None:
    headers = {"authorization": f"Bearer {alice.token}", "accept": accept}
    r = await http.post("/graphql", json={"query": CREATE_THEN_READ}, headers=headers)
    assert r.status_code == status, r.text
    body = r.json()
    assert "data" not in body
    assert [e["message"] for e in body["errors"]] == [MANY]
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert body["errors"][0]["extensions"]["traceId"]
    assert await persons(alice) == 0  # the mutation did not run
    r = await http.get("/graphql", headers=headers,
                       params={"query": "query A { me { id } } query B { __typename }"})
    assert r.status_code == status
    assert r.json()["errors"][0]["message"] == MANY
    named = await http.post("/graphql", json={"query": CREATE_THEN_READ, "operationName": "A"},
                            headers=headers)
    assert named.json()["data"]["me"]["id"] == alice.user_id  # a name chooses, as before
    assert await persons(alice) == 0


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize(("accept", "status"), [(GQL_RESPONSE, 400), ("application/json", 200)])
async def test_subscription_over_http_is_a_request_error(
    http: httpx.AsyncClient, method: str, accept: str, status: int,
) -> None:
    kw: dict[str, Any] = ({"json": {"query": SUBSCRIPTION}} if method == "POST"
                          else {"params": {"query": SUBSCRIPTION}})
    r = await http.request(method, "/graphql", headers={"accept": accept}, **kw)
    assert r.status_code == status, r.text
    body = r.json()
    assert "data" not in body
    error = body["errors"][0]
    assert error["message"] == (
        "Subscriptions are served over WebSocket (graphql-transport-ws) at /graphql, as "
        'multipart HTTP there (Accept: multipart/mixed;subscriptionSpec="1.0") and as '
        "graphql-sse at /graphql/stream")
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["traceId"]
    metrics = (await http.get("/metrics")).text
    assert 'giftgraph_graphql_errors_total{code="INTERNAL_SERVER_ERROR"}' not in metrics
    assert 'giftgraph_graphql_errors_total{code="BAD_USER_INPUT"} 1.0' in metrics


async def test_token_limit_is_query_too_complex(http: httpx.AsyncClient, alice: Account) -> None:
    r = await alice.client("{ me { " + " ".join(["id"] * 3000) + " } }")
    assert r.codes == ["QUERY_TOO_COMPLEX"], r.body
    extensions = r.errors[0]["extensions"]
    assert extensions["measure"] == "tokens"
    assert extensions["limit"] == 2000
    assert extensions["actual"] > extensions["limit"]
    assert extensions["traceId"]
    assert "data" not in r.body
    r2 = await http.post("/graphql", json={"query": "{ me { " + " id" * 3000 + " } }"},
                         headers={"accept": GQL_RESPONSE})
    assert r2.status_code == 400  # a request error: nothing ran
    under = await alice.client("{ me { " + " ".join(["id"] * 100) + " } }")
    assert under.errors == []


@pytest.fixture
async def capped_http(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(database_url, max_body_bytes=2000))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


async def test_an_answer_without_errors_goes_out_as_written_and_one_with_errors_is_told(
        http: httpx.AsyncClient, alice: Account, monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer with no errors goes out as `encode_json` wrote it, neither searched nor
    decoded again, even where its data spells `"errors"` (an alias), and it is not counted
    as a refusal; an answer with errors is still decoded, its request errors told apart
    (400 under graphql-response+json) and its refusals counted."""
    from giftgraph.web import http as web_http

    decoded: list[bytes] = []
    loads = web_http.orjson.loads

    def spy(raw: Any) -> Any:  # (orjson's own `loads`: requests' bodies are read by it too)
        if not bytes(raw).startswith(b'{"query"'):
            decoded.append(bytes(raw))
        return loads(raw)

    monkeypatch.setattr(web_http.orjson, "loads", spy)
    headers = {"authorization": f"Bearer {alice.token}"}
    r = await http.post("/graphql", json={"query": "{ errors: me { id } }"}, headers=headers)
    assert r.status_code == 200
    assert r.content.startswith(b'{"data":{"errors":{"id":')
    assert b'"errors":[' not in r.content
    assert decoded == []  # nothing of the answer decoded again
    r = await http.post("/graphql", json={"query": "{ me { nope } }"},
                        headers={**headers, "accept": "application/graphql-response+json"})
    assert r.status_code == 400
    assert "data" not in r.json()
    assert len(decoded) == 1  # `finish` reads the errors (a 400 is a refusal as it stands)


async def test_http_request_errors_carry_a_logged_trace_id(
    capped_http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture,
) -> None:
    account = await sign_up(GQL(capped_http), "Traced")
    auth = {"authorization": f"Bearer {account.token}"}
    cases: list[tuple[dict[str, Any], int]] = [
        ({"method": "POST", "content": "{not json",
          "headers": {"content-type": "application/json"}}, 400),
        ({"method": "POST", "content": "[1]", "headers": {"content-type": "application/json"}},
         400),
        ({"method": "POST", "content": '{"query": "{ me { id } }"}',
          "headers": {"content-type": "text/plain"}}, 415),
        ({"method": "GET", "params": {"query": 'mutation { createPerson(input: {name: "X"})'
                                               " { id } }"}}, 405),
        ({"method": "POST", "json": {"query": "{ me { id } }"},
          "headers": {"accept": "text/xml"}}, 406),
        ({"method": "POST", "json": {"query": "{ __typename }", "pad": "x" * 5000}}, 413),
        ({"method": "POST", "json": {"query": "{ me { id } }", "operationName": "Nope"}}, 400),
    ]
    logger = logging.getLogger("giftgraph")
    logger.addHandler(caplog.handler)
    try:
        seen = set()
        for request, status in cases:
            caplog.clear()
            headers = {**auth, **request.pop("headers", {})}
            r = await capped_http.request(**request, url="/graphql", headers=headers)
            assert r.status_code == status, (request, r.text)
            error = r.json()["errors"][0]
            trace_id = error["extensions"]["traceId"]
            assert error["extensions"]["code"] == "BAD_USER_INPUT"
            assert trace_id
            assert trace_id not in seen  # a fresh one per request
            seen.add(trace_id)
            assert any(trace_id in r.getMessage() for r in caplog.records), (status, trace_id)
    finally:
        logger.removeHandler(caplog.handler)


@pytest.mark.parametrize("query", [
    "{ lists(kind: WISHLISTT) { totalCount } }",
    "{ lists(kindd: WISHLIST) { totalCount } }",
    "query($k: ListKind) { lists(kind: $k) { totalCount } }",
    "query($k: ListKindd) { lists(kind: $k) { totalCount } }",
])
async def test_production_hides_every_suggestion(database_url: str, query: str) -> None:
    production = make_settings(database_url, environment="production", jwt_secret="p" * 40)
    for settings, suggested in ((production, False), (make_settings(database_url), True)):
        app = create_app(settings)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            r = await http.post("/graphql", json={"query": query,
                                                  "variables": {"k": "WISHLISTT"}})
        errors = r.json()["errors"]
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT", errors
        assert ("Did you mean" in r.text) is suggested, r.text


@pytest.fixture
def capped_server(database_url: str) -> Iterator[str]:
    with serving(database_url, GIFTGRAPH_MAX_SUBSCRIPTIONS_PER_CONNECTION="2") as base:
        yield base


async def test_over_a_socket(capped_server: str) -> None:
    """Several operations without a name, the token limit and the subscription limit, each
    an `error` message with a code and a traceId; the socket stays open."""
    async with httpx.AsyncClient(base_url=capped_server, timeout=10) as http:
        account = await sign_up(GQL(http), "Socket")
        client = await WsClient.connect(capped_server,
                                        {"authorization": f"Bearer {account.token}"})
        try:
            many = await client.subscribe(CREATE_THEN_READ)
            msg = await client.receive()
            assert (msg["type"], msg["id"]) == ("error", many), msg
            assert msg["payload"][0]["message"] == MANY
            assert msg["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"
            assert msg["payload"][0]["extensions"]["traceId"]

            long = await client.subscribe("{ me { " + " id" * 3000 + " } }")
            msg = await client.receive()
            assert (msg["type"], msg["id"]) == ("error", long), msg
            extensions = msg["payload"][0]["extensions"]
            assert (extensions["code"], extensions["measure"]) == ("QUERY_TOO_COMPLEX", "tokens")
            assert extensions["traceId"]

            for _ in range(2):
                await client.subscribe(SUBSCRIPTION)
            third = await client.subscribe(SUBSCRIPTION)
            msg = await client.receive()
            assert (msg["type"], msg["id"]) == ("error", third), msg
            error = msg["payload"][0]
            assert error["message"] == "Subscription limit reached"
            assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
            assert (error["extensions"]["limit"], error["extensions"]["actual"]) == (2, 3)
            assert error["extensions"]["traceId"]
        finally:
            await client.ws.close()
        r = await http.post("/graphql", json={"query": "{ persons { totalCount } }"},
                            headers={"authorization": f"Bearer {account.token}"})
        assert r.json()["data"]["persons"]["totalCount"] == 0  # the mutation did not run
