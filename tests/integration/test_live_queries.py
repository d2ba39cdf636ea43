"""Live queries (`subscription { live { … } }`) over graphql-transport-ws against uvicorn in
this process (its live layer readable): results at once and after changes, shared
executions, precise invalidation, errors, isolation, limits and revocation."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import graphql
import httpx
import pytest
from sqlalchemy import event
from websockets.exceptions import ConnectionClosed

from tests.conftest import APOLLO, make_settings
from tests.integration.test_live import WsClient
from tests.integration.test_live_features import Server, running
from tests.integration.test_scaleout import instances
from tests.integration.test_socket_credentials import _expiring
from tests.support import serving

PERSONS = "subscription { live { persons { totalCount edges { node { name } } } } }"
CREATE_PERSON = "mutation($n: String!) { createPerson(input: {name: $n}) { id } }"
ADD_COMMENT = ("mutation($t: ID!) { addComment(input: {target: PERSON, targetId: $t, "
               "body: \"hi\"}) { id } }")


@pytest.fixture
async def srv(database_url: str) -> AsyncIterator[Server]:
    # A generous live budget: one run slowed by the machine (CI measured 1.1 s) would
    # otherwise leave its family waiting seconds for the next; the budget's own test below
    # runs with the defaults.
    async with running(make_settings(database_url, live_interval_ms=100,
                                     live_seconds_per_family=1000.0,
                                     live_seconds_per_process=1000.0)) as server:
        yield server


@pytest.fixture
async def budgeted(database_url: str) -> AsyncIterator[Server]:
    async with running(make_settings(database_url, live_interval_ms=100)) as server:
        yield server


def queries(srv: Server) -> Any:
    return srv.live.queries


async def next_result(client: WsClient, op: str, timeout: float = 5) -> dict[str, Any]:  # noqa: ASYNC109
    message = await client.receive(timeout)
    assert message["type"] == "next", message
    assert message["id"] == op, message
    return message["payload"]  # type: ignore[no-any-return]


async def silent(client: WsClient, seconds: float) -> None:
    """Nothing arrives for `seconds`."""
    try:
        message = await client.receive(seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message {message}")


async def closed_with(client: WsClient) -> int:
    """The close code the server sends (messages before it skipped)."""
    async def drain() -> None:
        while True:
            await client.receive(5)

    with pytest.raises(ConnectionClosed) as closed:
        await drain()
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code


async def connect(srv: Server, token: str) -> WsClient:
    return await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})


async def idle(srv: Server, within: float = 5) -> None:
    """Until no live query is running an execution."""
    deadline = time.monotonic() + within
    while any(q.lock.locked() for q in queries(srv).queries.values()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_result_at_once_then_after_each_relevant_change(srv: Server) -> None:
    token, _ = await srv.signup("a@example.com")
    client = await connect(srv, token)
    op = await client.subscribe(PERSONS)
    first = await next_result(client, op)
    assert first == {"data": {"live": {"persons": {"totalCount": 0, "edges": []}}}}
    person = (await srv.gql(CREATE_PERSON, {"n": "Ann"}, token))["createPerson"]["id"]
    second = await next_result(client, op)
    assert second["data"]["live"]["persons"] == {"totalCount": 1,
                                                 "edges": [{"node": {"name": "Ann"}}]}
    # A comment is no change of persons: no execution at all, nothing sent.
    await idle(srv)
    before = queries(srv).executions
    await srv.gql(ADD_COMMENT, {"t": person}, token)
    await silent(client, 0.5)
    assert queries(srv).executions == before
    assert queries(srv).skipped >= 1
    metrics = (await srv.http.get("/metrics")).text
    assert "giftgraph_live_queries 1.0" in metrics
    assert f"giftgraph_live_query_executions {float(before)}" in metrics
    await client.ws.close()


async def test_one_execution_per_change_shared_by_subscribers(srv: Server) -> None:
    token, _ = await srv.signup("b@example.com")
    clients = [await connect(srv, token) for _ in range(5)]
    ops = [await c.subscribe(PERSONS) for c in clients]
    firsts = [await next_result(c, op) for c, op in zip(clients, ops, strict=True)]
    assert all(f == firsts[0] for f in firsts)
    assert len(queries(srv).queries) == 1
    await idle(srv)
    before = queries(srv).executions
    await srv.gql(CREATE_PERSON, {"n": "Bo"}, token)
    texts = [await asyncio.wait_for(c.ws.recv(), 5) for c in clients]
    assert len(set(texts)) == 1  # the same bytes for every subscriber
    result = json.loads(texts[0])
    assert result["payload"]["data"]["live"]["persons"]["totalCount"] == 1
    await idle(srv)
    assert queries(srv).executions == before + 1
    for c in clients:
        await c.ws.close()


async def test_complete_lets_the_live_query_go(srv: Server) -> None:
    token, _ = await srv.signup("complete@example.com")
    client = await connect(srv, token)
    op = await client.subscribe(PERSONS)
    await next_result(client, op)
    assert len(queries(srv).queries) == 1
    await client.ws.send(json.dumps({"id": op, "type": "complete"}))
    deadline = time.monotonic() + 5
    while queries(srv).queries or queries(srv).families:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await srv.gql(CREATE_PERSON, {"n": "Nobody watching"}, token)
    await silent(client, 0.3)
    await client.ws.close()


async def test_changes_in_a_burst_fold_into_one_result_per_interval(srv: Server) -> None:
    token, _ = await srv.signup("c@example.com")
    client = await connect(srv, token)
    op = await client.subscribe(PERSONS)
    await next_result(client, op)
    await asyncio.gather(*(srv.gql(CREATE_PERSON, {"n": f"P{i}"}, token) for i in range(10)))
    seen = []
    while True:
        result = await next_result(client, op)
        seen.append(result["data"]["live"]["persons"]["totalCount"])
        if seen[-1] == 10:
            break
    assert len(seen) < 10  # folded, and in order
    assert seen == sorted(set(seen))
    await client.ws.close()


SIGN_UP = ("mutation($i: SignUpInput!) { signUp(input: $i) { accessToken refreshToken "
           "user { id } } }")
REGISTER = ("mutation($i: RegisterUserInput!) { registerUser(input: $i) { id } }")
LOGIN = "mutation($e: String!) { login(email: $e, password: \"long password\") { accessToken } }"


async def test_variables_fragments_and_aliases(srv: Server) -> None:
    token, _ = await srv.signup("v@example.com")
    for name in ("A", "B", "C"):
        await srv.gql(CREATE_PERSON, {"n": name}, token)
    client = await connect(srv, token)
    op = await client.subscribe(
        "subscription($n: Int, $show: Boolean = true) { now: live { ...P } } "
        "fragment P on Query { persons(first: $n) @include(if: $show) "
        "{ edges { node { ...N } } } } fragment N on Person { name }", {"n": 2})
    first = await next_result(client, op)
    assert first["data"]["now"]["persons"]["edges"] == [{"node": {"name": "A"}},
                                                        {"node": {"name": "B"}}]
    await srv.gql(CREATE_PERSON, {"n": "0"}, token)  # sorts first: the page changes
    second = await next_result(client, op)
    assert second["data"]["now"]["persons"]["edges"] == [{"node": {"name": "0"}},
                                                         {"node": {"name": "A"}}]
    await idle(srv)
    # Another page size is another live query (another execution); the same one is shared.
    other = await client.subscribe(
        "subscription($n: Int) { live { persons(first: $n) { totalCount } } }", {"n": 1})
    assert (await next_result(client, other))["data"]["live"]["persons"]["totalCount"] == 4
    assert len(queries(srv).queries) == 2
    await client.ws.close()


async def test_errors_arrive_as_results_and_the_subscription_goes_on(srv: Server) -> None:
    token, _ = await srv.signup("e@example.com")
    client = await connect(srv, token)
    op = await client.subscribe(
        'subscription { live { persons { totalCount } nope: node(id: "bad") { id } } }')
    first = await next_result(client, op)
    assert first["data"]["live"] == {"persons": {"totalCount": 0}, "nope": None}
    assert [(e["path"], e["extensions"]["code"]) for e in first["errors"]] == \
        [(["live", "nope"], "NOT_FOUND")]
    assert "traceId" in first["errors"][0]["extensions"]
    await srv.gql(CREATE_PERSON, {"n": "Ann"}, token)
    second = await next_result(client, op)
    assert second["data"]["live"] == {"persons": {"totalCount": 1}, "nope": None}
    assert second["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    # A non-null root field that fails nulls the whole selection (as in a query): the
    # result is `data: null` with the error, and the subscription still goes on, sending
    # nothing while the result stays the same.
    whole = await client.subscribe(
        'subscription { live { persons { totalCount } gifts(after: "no cursor") { '
        'totalCount } } }')
    result = await next_result(client, whole)
    assert result["data"] is None
    assert [(e["path"], e["extensions"]["code"]) for e in result["errors"]] == \
        [(["live", "gifts"], "BAD_USER_INPUT")]
    assert "Traceback" not in str(result)
    await idle(srv)
    await srv.gql(CREATE_PERSON, {"n": "Bo"}, token)
    third = await next_result(client, op)
    assert third["data"]["live"]["persons"] == {"totalCount": 2}
    await silent(client, 0.5)  # the failing one: the same result, not sent again
    await client.ws.close()


async def test_isolation_and_the_callers_own_me(srv: Server) -> None:
    alice, _ = await srv.signup("alice@example.com")
    mallory, _ = await srv.signup("mallory@example.com")
    await srv.gql(REGISTER, {"i": {"email": "bob@example.com", "password": "long password",
                                   "displayName": "Bob"}}, alice)
    bob = (await srv.gql(LOGIN, {"e": "bob@example.com"}))["login"]["accessToken"]
    query = "subscription { live { me { displayName } family { name } persons { totalCount } } }"
    clients = {name: await connect(srv, tok)
               for name, tok in (("alice", alice), ("bob", bob), ("mallory", mallory))}
    ops = {name: await c.subscribe(query) for name, c in clients.items()}
    firsts = {name: (await next_result(c, ops[name]))["data"]["live"]
              for name, c in clients.items()}
    assert firsts["alice"]["me"] == {"displayName": "alice"}
    assert firsts["bob"]["me"] == {"displayName": "Bob"}
    assert firsts["mallory"]["me"] == {"displayName": "mallo"}
    assert len(queries(srv).queries) == 3  # `me`: one per user, never one per family
    await srv.gql(CREATE_PERSON, {"n": "Secret"}, mallory)
    got = await next_result(clients["mallory"], ops["mallory"])
    assert got["data"]["live"]["persons"] == {"totalCount": 1}
    await silent(clients["alice"], 0.4)
    await silent(clients["bob"], 0.1)
    # Bob renames himself: each of the family's live queries runs, Bob's `me` changes;
    # Alice's result is the same as before, so she gets nothing.
    await srv.gql('mutation($id: ID!) { updateUser(id: $id, input: {displayName: "Robert"}) '
                  '{ id } }', {"id": (await srv.gql("{ me { id } }", token=bob))["me"]["id"]},
                  bob)
    renamed = await next_result(clients["bob"], ops["bob"])
    assert renamed["data"]["live"]["me"] == {"displayName": "Robert"}
    await silent(clients["alice"], 0.4)
    for c in clients.values():
        await c.ws.close()


async def test_after_a_reconnect_the_first_result_is_current(srv: Server) -> None:
    token, _ = await srv.signup("r@example.com")
    keeper = await connect(srv, token)  # keeps the shared live query open meanwhile
    kept = await keeper.subscribe(PERSONS)
    await next_result(keeper, kept)
    client = await connect(srv, token)
    op = await client.subscribe(PERSONS)
    await next_result(client, op)
    await client.ws.close()
    await srv.gql(CREATE_PERSON, {"n": "Late"}, token)
    client = await connect(srv, token)
    op = await client.subscribe(PERSONS)
    assert (await next_result(client, op))["data"]["live"]["persons"]["totalCount"] == 1
    await client.ws.close()
    await keeper.ws.close()


async def test_distinct_live_queries_per_family_are_bounded(database_url: str) -> None:
    settings = make_settings(database_url, max_live_queries_per_family=2)
    async with running(settings) as srv:
        token, _ = await srv.signup("l@example.com")
        other, _ = await srv.signup("other@example.com")
        client = await connect(srv, token)
        query = "subscription($n: Int) { live { persons(first: $n) { totalCount } } }"
        for n in (1, 2):
            op = await client.subscribe(query, {"n": n})
            assert "data" in await next_result(client, op)
        op = await client.subscribe(query, {"n": 3})
        refused = await next_result(client, op)
        assert refused["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert "Traceback" not in str(refused)
        assert await client.receive() == {"id": op, "type": "complete"}
        # The same live query again joins the one open; another family has its own bound.
        again = await client.subscribe(query, {"n": 1})
        assert "data" in await next_result(client, again)
        elsewhere = await connect(srv, other)
        op = await elsewhere.subscribe(query, {"n": 3})
        assert "data" in await next_result(elsewhere, op)
        metrics = (await srv.http.get("/metrics")).text
        assert 'giftgraph_admission_refused_total{bound="live_queries_per_family"} 1.0' \
            in metrics
        await client.ws.close()
        await elsewhere.ws.close()


async def test_logout_closes_a_live_query_socket(srv: Server) -> None:
    data = await srv.gql(SIGN_UP, {"i": {"familyName": "F", "email": "o@example.com",
                                         "password": "long password", "displayName": "O"}})
    token, refresh = data["signUp"]["accessToken"], data["signUp"]["refreshToken"]
    client = await connect(srv, token)
    op = await client.subscribe(PERSONS)
    await next_result(client, op)
    await srv.gql("mutation($t: String!) { logout(refreshToken: $t) }", {"t": refresh})
    assert await closed_with(client) == 4403
    deadline = time.monotonic() + 5
    while queries(srv).queries:  # its live query is let go with it
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


MULTIPART = 'multipart/mixed;boundary="graphql";subscriptionSpec="1.0",application/json'
SSE = "text/event-stream"


@pytest.mark.parametrize(("path", "accept"), [("/graphql", MULTIPART), ("/graphql/stream", SSE)])
async def test_over_http_multipart_and_sse(srv: Server, path: str, accept: str) -> None:
    token, _ = await srv.signup("h@example.com")
    mallory, _ = await srv.signup("hm@example.com")
    headers = {"Accept": accept, "Content-Type": "application/json",
               "Authorization": f"Bearer {token}"}
    async with srv.http.stream("POST", path, headers=headers, timeout=10,
                               json={"query": PERSONS}) as r:
        assert r.status_code == 200
        lines = r.aiter_lines()
        first = await asyncio.wait_for(_payload(lines, accept == SSE), 10)
        assert first == {"data": {"live": {"persons": {"totalCount": 0, "edges": []}}}}
        await srv.gql(CREATE_PERSON, {"n": "Other family"}, mallory)
        await srv.gql(CREATE_PERSON, {"n": "Cy"}, token)
        second = await asyncio.wait_for(_payload(lines, accept == SSE), 10)
        assert second["data"]["live"]["persons"]["edges"] == [{"node": {"name": "Cy"}}]
    async with srv.http.stream("POST", path, headers={**headers, "Authorization": ""},
                               timeout=10, json={"query": PERSONS}) as r:
        assert r.status_code == 401


async def _payload(lines: AsyncIterator[str], sse: bool) -> dict[str, Any]:
    """The next result of a multipart or graphql-sse stream (heartbeats skipped)."""
    async for line in lines:
        text = line.strip()
        if sse and text.startswith("data:") and text[5:].strip():
            return json.loads(text[5:])  # type: ignore[no-any-return]
        if not sse and text.startswith("{") and text != "{}":
            return json.loads(text)["payload"]  # type: ignore[no-any-return]
    raise AssertionError("the stream ended")


@pytest.fixture
def served(database_url: str) -> Iterator[str]:
    with serving(database_url, GIFTGRAPH_LIVE_INTERVAL_MS="100") as base:
        yield base


def test_real_clients_graphql_ws_and_apollo(node: str, served: str) -> None:
    """The graphql-ws reference client and Apollo Client's `subscribe` (GraphQLWsLink) both
    get the current result, then the changed one (examples/apollo/live-query.mjs)."""
    proc = subprocess.run(  # noqa: S603 - node, our own script
        [node, str(APOLLO / "live-query.mjs"), served], capture_output=True, text=True,
        timeout=60, check=False)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    line = next(li for li in proc.stdout.splitlines() if li.startswith("LIVE "))
    assert json.loads(line.removeprefix("LIVE ")) == {"apollo": [0, 1], "graphqlWs": [0, 1]}


async def test_the_costs_of_a_familys_live_queries_are_bounded_together(
        database_url: str) -> None:
    settings = make_settings(database_url, max_live_cost_per_family=60)
    async with running(settings) as srv:
        token, _ = await srv.signup("cost@example.com")
        client = await connect(srv, token)
        cheap = await client.subscribe("subscription { live { family { name } } }")
        assert "data" in await next_result(client, cheap)
        # 100 nodes x 2 fields: more than the family's live budget, alone.
        costly = await client.subscribe("subscription { live { persons(first: 100) { edges { "
                                        "node { name relationship } } } } }")
        refused = await next_result(client, costly)
        assert refused["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert refused["errors"][0]["extensions"]["cost"] > 60
        assert await client.receive() == {"id": costly, "type": "complete"}
        # The same selection over a small page fits.
        small = await client.subscribe(
            "subscription { live { persons(first: 5) { edges { node { name relationship } } } } }")
        assert "data" in await next_result(client, small)
        metrics = (await srv.http.get("/metrics")).text
        assert 'giftgraph_admission_refused_total{bound="live_cost_per_family"} 1.0' \
            in metrics
        await client.ws.close()


NESTED = ("subscription { live { lists { edges { node { name items { edges { node { status "
          "gift { name } } } } } } } } }")


async def _statements_per_change(srv: Server, token: str, clients: list[WsClient],
                                 ops: list[str], name: str) -> list[str]:
    """The SQL statements the live queries' own tasks run for one change."""
    lst = (await srv.gql('mutation { createList(input: {name: "X", kind: IDEAS}) { id } }',
                         token=token))["createList"]["id"]
    for client, op in zip(clients, ops, strict=True):
        await next_result(client, op)
    await idle(srv)
    tasks = {q.task for q in queries(srv).queries.values()}
    mutation = 'mutation($l: ID!, $n: String!) { updateList(id: $l, input: {name: $n}) { id } }'
    engine = srv.app.state.giftgraph.db().engine.sync_engine
    statements: list[str] = []

    def direct(statement: str) -> None:  # run on asyncpg directly (OperationDb.fetch)
        if asyncio.current_task() in tasks:
            statements.append(statement)

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        direct(statement)

    event.listen(engine, "before_cursor_execute", before)
    hooks = srv.app.state.giftgraph.db().statement_hooks
    hooks.append(direct)
    try:
        await srv.gql(mutation, {"l": lst, "n": name}, token)
        for client, op in zip(clients, ops, strict=True):
            await next_result(client, op)
        await idle(srv)
    finally:
        event.remove(engine, "before_cursor_execute", before)
        hooks.remove(direct)
    return statements


async def test_one_change_is_the_same_statements_for_one_subscriber_or_five(
        srv: Server) -> None:
    """Shared: five subscribers cost the statements of one; with the fast paths on, the
    nested selection is the compiled read's one statement (after the result cache's
    version check)."""
    token, _ = await srv.signup("s@example.com")
    clients = [await connect(srv, token) for _ in range(5)]
    ops = [await c.subscribe(NESTED) for c in clients]
    for client, op in zip(clients, ops, strict=True):
        await next_result(client, op)  # the result at subscription
    five = await _statements_per_change(srv, token, clients, ops, "five")
    for c in clients[1:]:
        await c.ws.close()
    await wait_for_watchers(srv, 1)
    one = await _statements_per_change(srv, token, clients[:1], ops[:1], "one")
    assert len(five) == len(one), (five, one)
    if srv.app.state.giftgraph.fast.executor:
        # the result cache's version check, then the compiled read: one statement
        assert len(one) == 2, one
        assert "max(events.seq)" in one[0]
        assert """SELECT ('{"lists":' || """ in one[1]  # the compiled statement writes the JSON
    else:
        assert 1 < len(one) <= 6, one  # field by field: lists, then a batch per relation
    await clients[0].ws.close()


async def wait_for_watchers(srv: Server, count: int) -> None:
    deadline = time.monotonic() + 5
    while sum(len(q.watchers) for q in queries(srv).queries.values()) != count:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


def test_a_change_through_another_instance_updates_the_live_query(database_url: str) -> None:
    """Two processes sharing the database and PostgreSQL's LISTEN/NOTIFY: a live query on
    one gets the change committed through the other."""
    async def scenario(first: str, second: str) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            body = (await http.post(f"{first}/graphql", json={"query": SIGN_UP, "variables": {
                "i": {"familyName": "F", "email": "x@example.com", "password": "long password",
                      "displayName": "X"}}})).json()
            token = body["data"]["signUp"]["accessToken"]
            client = await WsClient.connect(second, {"authorization": f"Bearer {token}"})
            op = await client.subscribe(PERSONS)
            assert (await next_result(client, op))["data"]["live"]["persons"]["totalCount"] == 0
            await http.post(f"{first}/graphql", json={"query": CREATE_PERSON,
                                                      "variables": {"n": "Far"}},
                            headers={"Authorization": f"Bearer {token}"})
            result = await next_result(client, op, timeout=10)
            assert result["data"]["live"]["persons"]["edges"] == [{"node": {"name": "Far"}}]
            await client.ws.close()

    with instances(database_url, "postgres://") as (first, second):
        asyncio.run(scenario(first, second))


async def test_a_query_marked_live_over_the_socket(srv: Server) -> None:
    """`query @live` (graphql-live-query's convention) is the live query of its selection,
    its results the query's own."""
    token, _ = await srv.signup("at-live@example.com")
    client = await connect(srv, token)
    op = await client.subscribe(
        "query People($n: Int) @live { persons(first: $n) { totalCount } "
        'nope: node(id: "bad") { id } }', {"n": 5})
    first = await next_result(client, op)
    assert first["data"] == {"persons": {"totalCount": 0}, "nope": None}
    assert [(e["path"], e["extensions"]["code"]) for e in first["errors"]] == \
        [(["nope"], "NOT_FOUND")]
    await srv.gql(CREATE_PERSON, {"n": "Live"}, token)
    second = await next_result(client, op)
    assert second["data"]["persons"] == {"totalCount": 1}
    # Without @live a query over the socket is one result, then complete, as before.
    plain = await client.subscribe("{ persons { totalCount } }")
    assert (await next_result(client, plain))["data"] == {"persons": {"totalCount": 1}}
    assert await client.receive() == {"id": plain, "type": "complete"}
    await client.ws.close()


async def test_a_query_marked_live_is_parsed_once_however_often_it_comes(
        srv: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rewrite of `query @live` parses as the operation's own parse does (the same
    cache, charged to the family's analysis allowance): the same document again is
    parsed no more (it was parsed on the loop, uncharged, every time)."""
    from giftgraph.admission import checks

    parsed: list[str] = []

    def counted(source: Any, **kwargs: Any) -> Any:
        parsed.append(getattr(source, "body", source))
        return checks.parse.__wrapped__(source, **kwargs)  # type: ignore[attr-defined]

    counted.__wrapped__ = checks.parse  # type: ignore[attr-defined]
    monkeypatch.setattr(checks, "parse", counted)
    from giftgraph.live import directive

    printed: list[str] = []

    def print_counted(node: Any, **kwargs: Any) -> str:
        text: str = graphql.print_ast(node, **kwargs)
        printed.append(text)
        return text

    monkeypatch.setattr(directive, "print_ast", print_counted)
    token, _ = await srv.signup("parsed-once@example.com")
    client = await connect(srv, token)
    query = "query Once @live { persons { totalCount } }"
    for _ in range(3):
        op = await client.subscribe(query)
        assert (await next_result(client, op))["data"] == {"persons": {"totalCount": 0}}
        await client.ws.send(json.dumps({"id": op, "type": "complete"}))
    assert parsed.count(query) == 1, parsed
    # Its rewrite is made of the parsed query's nodes, never parsed from its printed text.
    assert [p for p in parsed if p.startswith("subscription Once")] == []
    # ... and printed once: the printing, as long as a parse, was not charged to anyone.
    assert len(printed) == 1, printed
    await client.ws.close()


async def test_a_query_marked_live_has_its_errors_placed_in_its_own_text(srv: Server) -> None:
    """A validation error's `locations` point into the document the client sent, not into
    its rewrite as a subscription (which starts `subscription Where { live {`). An error of
    the shared execution has its path and no `locations`: they would be places in the
    selection's printed document, which nobody sent."""
    token, _ = await srv.signup("live-places@example.com")
    client = await connect(srv, token)
    wrong = await client.subscribe("query Where @live {\n  persons { totalCount }\n"
                                   "  nope\n}")
    refused = await client.receive()
    assert (refused["type"], refused["id"]) == ("error", wrong)
    [error] = refused["payload"]
    assert "nope" in error["message"]
    assert error["locations"] == [{"line": 3, "column": 3}]
    # The same document laid out otherwise (it prints alike) has its own places.
    other = await client.subscribe("query Where @live { persons { totalCount } nope }")
    refused = await client.receive()
    assert (refused["type"], refused["id"]) == ("error", other)
    assert refused["payload"][0]["locations"] == [{"line": 1, "column": 44}]
    op = await client.subscribe('query Where @live {\n  persons { totalCount }\n'
                                '    gone: node(id: "bad") { id }\n}')
    first = await next_result(client, op)
    assert [(e["path"], e.get("locations")) for e in first["errors"]] == [(["gone"], None)]
    wrapped = await client.subscribe('subscription {\n  live {\n  gone: node(id: "bad") '
                                     '{ id } } }')
    assert [(e["path"], e.get("locations")) for e in
            (await next_result(client, wrapped))["errors"]] == [(["live", "gone"], None)]
    await client.ws.close()


async def test_the_bounds_of_every_subscription_hold_for_live_queries(
        database_url: str) -> None:
    settings = make_settings(database_url, max_subscriptions_per_connection=1,
                             max_query_cost=50)
    async with running(settings) as srv:
        token, _ = await srv.signup("bounds@example.com")
        client = await connect(srv, token)
        # Over the cost bound: refused before anything runs, as any document.
        costly = await client.subscribe(
            "subscription { live { persons(first: 100) { edges { node { name } } } } }")
        refused = await client.receive()
        assert (refused["type"], refused["id"]) == ("error", costly), refused
        assert refused["payload"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        assert not queries(srv).queries
        # One operation per socket: a second live query is refused.
        cheap = "subscription { live { family { name } } }"
        first = await client.subscribe(cheap)
        await next_result(client, first)
        second = await client.subscribe(cheap)
        msg = await client.receive()
        assert (msg["type"], msg["id"]) == ("error", second), msg
        assert msg["payload"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        # Bad input: a clear error with a code, never a trace.
        other = await connect(srv, token)
        bad = await other.subscribe("subscription { live { persons { nope } } }")
        msg = await other.receive()
        assert (msg["type"], msg["id"]) == ("error", bad), msg
        assert msg["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert "Traceback" not in json.dumps(msg)
        await client.ws.close()
        await other.ws.close()


async def test_a_live_query_socket_closes_when_its_token_expires(srv: Server) -> None:
    token, _ = await srv.signup("expires@example.com")
    client = await connect(srv, _expiring(token, 2))
    op = await client.subscribe(PERSONS)
    await next_result(client, op)
    assert await closed_with(client) == 4401
    deadline = time.monotonic() + 5
    while queries(srv).queries:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_a_family_whose_live_queries_took_too_long_waits_its_turn_alone(
        budgeted: Server) -> None:
    """Live runs are charged what they took (`live_seconds`): a family whose runs used its
    share waits for its next one, its changes folded into one later result; another family
    goes on at once. Here the first family's runs are made to have taken 50 s."""
    srv = budgeted
    token, _ = await srv.signup("heavy@example.com")
    other, _ = await srv.signup("light@example.com")
    heavy = await connect(srv, token)
    op = await heavy.subscribe(PERSONS)
    assert (await next_result(heavy, op))["data"]["live"]["persons"]["totalCount"] == 0
    (family,) = {str(key[0]) for key in queries(srv).queries}
    light = await connect(srv, other)
    light_op = await light.subscribe(PERSONS)
    await next_result(light, light_op)
    await idle(srv)
    budget = queries(srv).budget
    budget.charge(family, 50.0)
    budget.charge("", -50.0)  # the process's budget is not what this test spends
    for name in ("A", "B"):
        await srv.gql(CREATE_PERSON, {"n": name}, token)
    await srv.gql(CREATE_PERSON, {"n": "C"}, other)
    assert (await next_result(light, light_op))["data"]["live"]["persons"]["totalCount"] == 1
    await silent(heavy, 1.0)  # its turn is ~500 s away
    metrics = (await srv.http.get("/metrics")).text
    assert 'giftgraph_admission_refused_total{bound="live_seconds"} 1.0' in metrics
    budget.charge(family, -50.0)  # its share back: the next look lets it run
    late = await next_result(heavy, op)
    assert late["data"]["live"]["persons"]["totalCount"] == 2  # both changes, in one result
    await silent(heavy, 0.5)
    await heavy.ws.close()
    await light.ws.close()


async def test_a_comment_on_an_item_updates_a_live_item_comment_count(srv: Server) -> None:
    """`ListItem.commentCount` reads comments: a live query of it runs again when one is
    added (a comment is its own entity type, not a change of the item)."""
    token, _ = await srv.signup("counted@example.com")
    gl = (await srv.gql("mutation { createList(input: {name: \"W\", kind: WISHLIST}) { id } }",
                        {}, token))["createList"]["id"]
    item = (await srv.gql("mutation($l: ID!) { addListItem(listId: $l, input: {gift: {name: "
                          "\"Kite\"}}) { id } }", {"l": gl}, token))["addListItem"]["id"]
    client = await connect(srv, token)
    op = await client.subscribe(
        "subscription { live { lists { edges { node { items { edges { node { commentCount }"
        " } } } } } } }")
    counts = lambda r: [e["node"]["commentCount"] for e in  # noqa: E731
                        r["data"]["live"]["lists"]["edges"][0]["node"]["items"]["edges"]]
    assert counts(await next_result(client, op)) == [0]
    await srv.gql("mutation($t: ID!) { addComment(input: {target: LIST_ITEM, targetId: $t, "
                  "body: \"blue\"}) { id } }", {"t": item}, token)
    assert counts(await next_result(client, op)) == [1]
    await client.ws.close()


async def test_the_bytes_a_familys_live_queries_keep_are_bounded(database_url: str) -> None:
    # 64 KiB a family: each live query below keeps its result of ~24 KB.
    settings = make_settings(database_url, live_interval_ms=50, max_response_bytes=32 * 1024,
                             max_live_bytes_per_family=64 * 1024,
                             live_seconds_per_family=1000.0, live_seconds_per_process=1000.0)
    async with running(settings) as srv:
        token, _ = await srv.signup("kept@example.com")
        other, _ = await srv.signup("kept2@example.com")
        create = "mutation($i: GiftInput!) { createGift(input: $i) { id } }"
        for t in (token, other):
            for k in range(6):
                await srv.gql(create, {"i": {"name": f"g{k}", "description": "x" * 4000}}, t)
        query = ("subscription($n: Int) { live { gifts(first: $n) { edges { node { "
                 "description } } } } }")
        client = await connect(srv, token)
        kept = [await client.subscribe(query, {"n": n}) for n in (6, 7)]
        for op in kept:
            assert len(str((await next_result(client, op))["data"])) > 24_000
        # A third, distinct one: its result would take the family past its bound.
        over = await client.subscribe(query, {"n": 8})
        refused = await next_result(client, over)
        assert refused["data"] is None
        assert refused["errors"][0]["extensions"]["code"] == "RATE_LIMITED", refused
        assert "Traceback" not in str(refused)
        family = next(iter(queries(srv).kept.by_family.values()))
        assert family <= 64 * 1024
        # Another family keeps its own.
        elsewhere = await connect(srv, other)
        theirs = await elsewhere.subscribe(query, {"n": 8})
        assert (await next_result(elsewhere, theirs))["data"] is not None
        # The refused one goes on: once one is closed and the family changes a gift, it fits.
        await client.ws.send(json.dumps({"id": kept[0], "type": "complete"}))
        await idle(srv)
        await srv.gql(create, {"i": {"name": "g3"}}, token)
        for _ in range(3):
            message = await client.receive(5)
            if message["id"] == over:
                break
        assert message["payload"]["data"]["live"]["gifts"]["edges"], message
        metrics = (await srv.http.get("/metrics")).text
        assert 'giftgraph_admission_refused_total{bound="live_bytes"} 1.0' in metrics
        await client.ws.close()
        await elsewhere.ws.close()
        for _ in range(50):
            if not queries(srv).kept.by_family:
                break
            await asyncio.sleep(0.05)
        assert queries(srv).kept.by_family == {}
        assert queries(srv).kept.total == 0
