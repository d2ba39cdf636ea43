"""Subscriptions over plain HTTP: multipart (`POST /graphql`, Apollo Client's HttpLink) and
graphql-sse (`POST /graphql/stream`, the graphql-sse client), authenticated with
`Authorization: Bearer`, held to the socket's bounds and isolation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import make_settings
from tests.integration.test_live import PROTOCOL, WsClient
from tests.integration.test_live_features import Server, _item, running
from tests.integration.test_socket_credentials import _expiring

MULTIPART = 'multipart/mixed;boundary="graphql";subscriptionSpec="1.0",application/json'
SSE = "text/event-stream"
EVENTS = "subscription($l: ID!) { listEvents(listId: $l) { kind node { id } } }"
SIGN_UP = "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }"


@pytest.fixture
async def live(database_url: str) -> AsyncIterator[Server]:
    async with running(make_settings(database_url)) as srv:
        yield srv


async def _token(srv: Server, email: str) -> str:
    data = await srv.gql(SIGN_UP, {"i": {"familyName": "F", "email": email,
                                         "password": "correct horse b", "displayName": "D"}})
    return data["signUp"]["accessToken"]  # type: ignore[no-any-return]


def _post(srv: Server, path: str, accept: str, token: str | None,
          query: str, variables: dict[str, Any]) -> Any:
    headers = {"Accept": accept, "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return srv.http.stream("POST", path, headers=headers, timeout=10,
                           json={"query": query, "variables": variables})


async def _next_payload(lines: AsyncIterator[str], sse: bool) -> dict[str, Any]:
    """The next event's GraphQL result (heartbeats skipped)."""
    async for line in lines:
        text = line.strip()
        if sse and text.startswith("data:") and text[5:].strip():
            return json.loads(text[5:])  # type: ignore[no-any-return]
        if not sse and text.startswith("{") and text != "{}":
            return json.loads(text)["payload"]  # type: ignore[no-any-return]
    raise AssertionError("the stream ended")


@pytest.mark.parametrize(("path", "accept"), [("/graphql", MULTIPART),
                                              ("/graphql/stream", SSE)])
async def test_an_event_over_http(live: Server, path: str, accept: str) -> None:
    token = await _token(live, "a@example.com")
    gl, item = await _item(live, token)
    before = live.subscribers()
    async with _post(live, path, accept, token, EVENTS, {"l": gl}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(accept.split(";")[0].split(",")[0])
        lines = r.aiter_lines()
        await live.listening(before + 1)
        await live.gql('mutation($i: ID!) { setListItemStatus(id: $i, status: SELECTED) '
                       '{ id } }', {"i": item}, token)
        payload = await asyncio.wait_for(_next_payload(lines, accept == SSE), 10)
        assert payload["data"]["listEvents"] == {"kind": "STATUS_CHANGED",
                                                  "node": {"id": item}}
    # The client left: the subscription and its slots are given back at its disconnect,
    # not at the transport's next heartbeat (5 s multipart, 15 s SSE).
    deadline = asyncio.get_running_loop().time() + 3
    while live.subscribers() > before:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(("path", "accept"), [("/graphql", MULTIPART),
                                              ("/graphql/stream", SSE)])
async def test_a_dropped_client_frees_its_slot_at_once(database_url: str, path: str,
                                                       accept: str) -> None:
    """Streams up to the user's limit, their clients gone: the slots are free again well
    before the transport's next heartbeat (5 s multipart, 15 s SSE), so new streams open."""
    limit = 2
    settings = make_settings(database_url, max_sockets_per_user=limit,
                             max_subscriptions_per_user=limit)
    async with running(settings) as srv:
        token = await _token(srv, "d@example.com")
        gl, _ = await _item(srv, token)
        before = srv.subscribers()

        async def open_streams() -> list[tuple[httpx.AsyncClient, Any]]:
            opened = []
            for _ in range(limit):
                client = httpx.AsyncClient(base_url=srv.base, timeout=10)
                r = await client.send(client.build_request(
                    "POST", path, json={"query": EVENTS, "variables": {"l": gl}},
                    headers={"Accept": accept, "Authorization": f"Bearer {token}"}),
                    stream=True)
                opened.append((client, r))
            return opened

        first = await open_streams()
        assert [r.status_code for _, r in first] == [200] * limit
        await srv.listening(before + limit)
        # One more is refused while they are open.
        async with _post(srv, path, accept, token, EVENTS, {"l": gl}) as r:
            assert r.status_code == 429
        loop = asyncio.get_running_loop()
        started = loop.time()
        for client, r in first:  # the clients go away: their connections close
            await r.aclose()
            await client.aclose()
        while srv.subscribers() > before:
            assert loop.time() - started < 2, "a dropped stream still holds its slot"
            await asyncio.sleep(0.02)
        again = await open_streams()
        try:
            assert loop.time() - started < 4  # before the first multipart heartbeat
            for _, r in again:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith(accept.split(";")[0])
            await srv.listening(before + limit)
        finally:
            for client, r in again:
                await r.aclose()
                await client.aclose()


async def test_streams_and_sockets_share_the_users_subscription_bound(
        database_url: str) -> None:
    """`max_subscriptions_per_user` counts a user's operations on sockets and HTTP streams
    together: one over a WebSocket, one over SSE, and the third (multipart) is refused."""
    settings = make_settings(database_url, max_subscriptions_per_user=2)
    async with running(settings) as srv:
        token = await _token(srv, "b@example.com")
        gl, _ = await _item(srv, token)
        before = srv.subscribers()
        ws = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
        try:
            await ws.subscribe(EVENTS, {"l": gl})
            async with _post(srv, "/graphql/stream", SSE, token, EVENTS, {"l": gl}) as r:
                assert r.status_code == 200
                await srv.listening(before + 2)
                async with _post(srv, "/graphql", MULTIPART, token, EVENTS, {"l": gl}) as third:
                    body = json.loads(await third.aread())
                    error = body["errors"][0]["extensions"]
                    assert (error["code"], error["measure"], error["limit"]) == (
                        "QUERY_TOO_COMPLEX", "subscriptions", 2)
        finally:
            await ws.ws.close()


async def test_a_stream_spends_its_ips_new_socket_budget_before_its_token_is_read(
        database_url: str) -> None:
    """Streams and WebSockets spend one budget of new sockets per IP
    (`socket_connect_rate`): with 2 a minute, a socket and an SSE stream take it, and a
    multipart stream, one with a bad token (refused before it is read: not a 401) and
    another socket are refused (429 with Retry-After and RATE_LIMITED; the socket's
    handshake 403), each counted. A stream from another address still opens."""
    from tests.integration.test_socket_admission import metric

    settings = make_settings(database_url, socket_connect_ip_rate="2/minute")
    async with running(settings) as srv:
        token = await _token(srv, "c@example.com")
        gl, _ = await _item(srv, token)
        ws = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
        try:
            async with _post(srv, "/graphql/stream", SSE, token, EVENTS, {"l": gl}) as r:
                assert r.status_code == 200
            for path, accept, bearer in (("/graphql", MULTIPART, token),
                                         ("/graphql/stream", SSE, "not-a-token")):
                async with _post(srv, path, accept, bearer, EVENTS, {"l": gl}) as r:
                    assert r.status_code == 429  # before its body: a stream never ends
                    body = json.loads(await r.aread())
                    assert int(r.headers["retry-after"]) >= 1
                    assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(srv.base.replace("http", "ws") + "/graphql",
                                         subprotocols=[PROTOCOL])  # type: ignore[list-item]
            assert refused.value.response.status_code == 403
            assert await metric(srv.base, "giftgraph_admission_refused_total",
                                "socket_connect_rate") == 3
            elsewhere = httpx.AsyncClient(
                base_url=srv.base, timeout=10,
                transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"))
            async with elsewhere, elsewhere.stream(
                    "POST", "/graphql/stream", json={"query": EVENTS, "variables": {"l": gl}},
                    headers={"Accept": SSE, "Authorization": f"Bearer {token}"}) as r:
                assert r.status_code == 200
        finally:
            await ws.ws.close()


@pytest.mark.parametrize(("path", "accept"), [("/graphql", MULTIPART),
                                              ("/graphql/stream", SSE)])
async def test_since_replays_what_was_missed(live: Server, path: str, accept: str) -> None:
    """As over a socket: `since` a seq, the events after it first (replayed), then live."""
    token = await _token(live, f"s{len(path)}@example.com")
    gl, item = await _item(live, token)
    latest = await live.gql("{ events(first: 1) { edges { node { seq } } } }", token=token)
    since = latest["events"]["edges"][0]["node"]["seq"]
    await live.gql('mutation($i: ID!) { setListItemStatus(id: $i, status: SELECTED) { id } }',
                   {"i": item}, token)  # missed: before the stream opens
    query = ("subscription($l: ID!, $s: String) { listEvents(listId: $l, since: $s) "
             "{ seq kind node { id ... on ListItem { status } } } }")
    async with _post(live, path, accept, token, query, {"l": gl, "s": since}) as r:
        assert r.status_code == 200
        lines = r.aiter_lines()
        missed = await asyncio.wait_for(_next_payload(lines, accept == SSE), 10)
        event = missed["data"]["listEvents"]
        assert (event["kind"], event["node"]["status"]) == ("STATUS_CHANGED", "SELECTED")
        assert int(event["seq"]) > int(since)
        await live.gql('mutation($i: ID!) { setListItemStatus(id: $i, status: PURCHASED) '
                       '{ id } }', {"i": item}, token)
        live_one = await asyncio.wait_for(_next_payload(lines, accept == SSE), 10)
        assert live_one["data"]["listEvents"]["node"]["status"] == "PURCHASED"
        assert int(live_one["data"]["listEvents"]["seq"]) > int(event["seq"])


async def test_auth_isolation_and_request_errors(live: Server) -> None:
    alice = await _token(live, "alice@example.com")
    mallory = await _token(live, "mallory@example.com")
    gl, _ = await _item(live, alice)
    for path, accept in (("/graphql", MULTIPART), ("/graphql/stream", SSE)):
        async with _post(live, path, accept, None, EVENTS, {"l": gl}) as r:
            assert r.status_code == 401
            body = json.loads(await r.aread())
            assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        async with _post(live, path, accept, "not-a-token", EVENTS, {"l": gl}) as r:
            assert r.status_code == 401
        async with _post(live, path, accept, mallory, EVENTS, {"l": gl}) as r:
            # Another family's list: an error, never its events.
            payload = await asyncio.wait_for(_next_payload(r.aiter_lines(), accept == SSE), 10)
            assert payload.get("data") is None
            assert payload["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    # Without a streaming Accept a subscription stays a request error; each transport
    # only where it is served.
    for accept, status in (("application/json", 200),
                           ("application/graphql-response+json", 400)):
        plain = await live.http.post("/graphql", json={"query": EVENTS, "variables": {"l": gl}},
                                     headers={"Authorization": f"Bearer {alice}",
                                              "Accept": accept})
        assert plain.status_code == status
        assert "data" not in plain.json()
        assert plain.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    wrong = await live.http.post("/graphql", json={"query": EVENTS}, headers={
        "Accept": SSE, "Authorization": f"Bearer {alice}"})
    assert wrong.status_code == 406
    wrong = await live.http.post("/graphql/stream", json={"query": EVENTS}, headers={
        "Accept": "application/json", "Authorization": f"Bearer {alice}"})
    assert wrong.status_code == 406


async def test_a_stream_ends_when_its_token_expires(live: Server) -> None:
    token = await _token(live, "e@example.com")
    gl, _ = await _item(live, token)
    short = _expiring(token, 3)
    chunks = []
    async with _post(live, "/graphql/stream", SSE, short, EVENTS, {"l": gl}) as r:
        assert r.status_code == 200
        async with asyncio.timeout(10):  # it ends by itself
            chunks = [chunk async for chunk in r.aiter_text()]
    assert "event: complete" in "".join(chunks)


async def test_a_stream_ends_when_its_session_is_revoked(live: Server) -> None:
    data = await live.gql(
        "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken refreshToken } }",
        {"i": {"familyName": "F", "email": "r@example.com", "password": "correct horse b",
               "displayName": "R"}})
    token, refresh = data["signUp"]["accessToken"], data["signUp"]["refreshToken"]
    gl, _ = await _item(live, token)
    before = live.subscribers()
    async with _post(live, "/graphql", MULTIPART, token, EVENTS, {"l": gl}) as r:
        assert r.status_code == 200
        await live.listening(before + 1)
        assert (await live.gql("mutation($t: String!) { logout(refreshToken: $t) }",
                               {"t": refresh}))["logout"] is True
        async with asyncio.timeout(10):  # it ends, with the transport's completion
            text = "".join([chunk async for chunk in r.aiter_text()])
    assert text.rstrip().endswith("--graphql--")


async def test_a_query_with_only_a_streaming_accept_is_a_request_error(live: Server) -> None:
    token = await _token(live, "q@example.com")
    for path, accept in (("/graphql", MULTIPART.split(",")[0]), ("/graphql/stream", SSE)):
        async with _post(live, path, accept, token, "{ me { id } }", {}) as r:
            body = json.loads(await r.aread())
            assert r.status_code == 400, body
            assert "data" not in body
            assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_document_refused_while_parsing_is_a_request_error(database_url: str) -> None:
    """A syntax error, the token limit, or a caller past its analysis allowance, over
    either streaming transport: a JSON request error with its code, before any stream
    (the parse hook's error had escaped as an ASGI exception: a broken response)."""
    cases = [("subscription { familyEvents { seq }", "BAD_USER_INPUT"),
             ("subscription { familyEvents { seq " + "seq " * 300 + "} }", "QUERY_TOO_COMPLEX")]
    transports = (("/graphql", MULTIPART), ("/graphql/stream", SSE))
    async with running(make_settings(database_url, max_query_tokens=200)) as srv:
        token = await _token(srv, "parse@example.com")
        for path, accept in transports:
            for query, code in cases:
                async with _post(srv, path, accept, token, query, {}) as r:
                    body = json.loads(await r.aread())
                    assert r.status_code == 400, body
                    assert body["errors"][0]["extensions"]["code"] == code, body
                    assert body["errors"][0]["extensions"]["traceId"]
    # Past its allowance, a new document is RATE_LIMITED, with when to retry, before it
    # is parsed (each refused parse is charged too).
    async with running(make_settings(database_url, analysis_seconds_per_caller=0.001,
                                     analysis_burst_seconds=0.001)) as srv:
        token = await _token(srv, "spent@example.com")
        for path, accept in transports:
            for n in range(50):
                async with _post(srv, path, accept, token,
                                 f"subscription {{ familyEvents {{ seq }} }} # {path} {n}",
                                 {}) as r:
                    if r.status_code == 429:
                        body = json.loads(await r.aread())
                        assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
                        assert int(r.headers["retry-after"]) >= 1
                        break
                    assert r.status_code == 200  # a stream: left at once
            else:
                raise AssertionError(f"never refused over {path}")
