"""Refusals that cost little: a caller whose budget is spent is refused before the costly
steps of its request (giftgraph.admission)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import websockets

from giftgraph.app import create_app
from tests.conftest import GQL, make_settings, sign_up
from tests.integration.test_documents import refused_metric
from tests.integration.test_live import PROTOCOL, WsClient
from tests.integration.test_live_features import running
from tests.support import serving

CREATE = 'mutation {{ createPerson(input: {{name: "{0}"}}) {{ id }} }}'
# Not valid against the schema: graphql-core's validation would answer BAD_USER_INPUT.
INVALID = 'mutation { createPerson(input: {name: "x", nosuchfield: 1}) { nosuchfield } }'


@pytest.fixture
async def budget_http(database_url: str, request: pytest.FixtureRequest
                      ) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(database_url, **request.param))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http


@pytest.mark.parametrize("budget_http", [{"mutation_rate": "2/minute"}], indirect=True)
async def test_a_spent_caller_is_refused_before_validation(
        budget_http: httpx.AsyncClient) -> None:
    """Once the budget is spent, a mutation is RATE_LIMITED before graphql-core validates
    it: a document it never saw before (a flood's differ in a literal) is not validated."""
    account = await sign_up(GQL(budget_http), "Spent")
    # With room left, validation answers as always (and an invalid document spends nothing).
    assert set((await account.client(INVALID)).codes) == {"BAD_USER_INPUT"}
    for name in ("a", "b"):
        assert (await account.client(CREATE.format(name))).errors == []
    refused = await account.client(INVALID)
    assert refused.codes == ["RATE_LIMITED"], refused.body
    assert refused.errors[0]["extensions"]["retryAfter"] >= 1
    assert "data" not in refused.body  # a request error: nothing ran
    # Queries are not mutations: the spent caller still reads.
    count = await account.client("{ persons { totalCount } }")
    assert count.data["persons"]["totalCount"] == 2
    metrics = (await budget_http.get("/metrics")).text
    assert refused_metric(metrics, "mutation_rate") == 1


@pytest.mark.parametrize("budget_http", [{"family_mutation_rate": "3/minute"}],
                         indirect=True)
async def test_a_spent_family_is_refused_before_validation(
        budget_http: httpx.AsyncClient) -> None:
    admin = await sign_up(GQL(budget_http), "Spent family")
    for name in ("a", "b", "c"):
        assert (await admin.client(CREATE.format(name))).errors == []
    refused = await admin.client(INVALID)
    assert refused.codes == ["RATE_LIMITED"], refused.body
    metrics = (await budget_http.get("/metrics")).text
    assert refused_metric(metrics, "family_mutation_rate") == 1
    # Another family's budget is its own.
    other = await sign_up(GQL(budget_http), "Other family")
    assert (await other.client(CREATE.format("d"))).errors == []


@pytest.mark.parametrize("budget_http", [{"refusal_burst": 2, "refusal_rate": 0.2,
                                          "request_wait_seconds": 0.5}], indirect=True)
async def test_a_caller_refused_again_and_again_waits_before_its_body_is_read(
        budget_http: httpx.AsyncClient) -> None:
    """Past its burst of refusals, a caller's next request waits for its turn before
    anything of it is read: here longer than the wait, so it is RATE_LIMITED however
    valid it is. Another family goes past at once."""
    flood = await sign_up(GQL(budget_http), "Flood")
    other = await sign_up(GQL(budget_http), "Other")
    for _ in range(2):
        assert set((await flood.client("{ nosuchfield }")).codes) == {"BAD_USER_INPUT"}

    read = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        read = True
        yield b'{"query": "{ me { id } }"}'

    r = await budget_http.post("/graphql", content=body(), headers={
        "authorization": f"Bearer {flood.token}", "content-type": "application/json"})
    error = r.json()["errors"][0]
    assert error["extensions"]["code"] == "RATE_LIMITED", r.json()
    assert error["extensions"]["retryAfter"] >= 1
    assert not read  # refused before its body was read
    assert (await other.client("{ me { id } }")).errors == []
    metrics = (await budget_http.get("/metrics")).text
    assert refused_metric(metrics, "refusals_per_caller") == 1


@pytest.mark.parametrize("budget_http", [{"refusal_burst": 1, "refusal_rate": 20.0}],
                         indirect=True)
async def test_a_paced_caller_runs_once_its_turn_comes(budget_http: httpx.AsyncClient
                                                       ) -> None:
    """A caller out of refusal tokens waits for the next one, then runs as ever; what is
    not refused gives its token back."""
    account = await sign_up(GQL(budget_http), "Paced")
    assert set((await account.client("{ nosuchfield }")).codes) == {"BAD_USER_INPUT"}
    for _ in range(3):  # each waits ~50 ms for a token, runs, and gives it back
        assert (await account.client("{ me { id } }")).errors == []
    metrics = (await budget_http.get("/metrics")).text
    assert refused_metric(metrics, "refusals_per_caller") >= 1


@pytest.mark.parametrize("budget_http", [{"family_mutation_rate": "6/minute",
                                          "family_mutation_burst": 2,
                                          "request_wait_seconds": 0.3}], indirect=True)
async def test_a_family_spends_its_budget_at_an_even_pace(
        budget_http: httpx.AsyncClient) -> None:
    """Past its burst, a family's next mutation waits for its turn (here one field per
    10 s: longer than the wait, so RATE_LIMITED), though its minute's budget has room;
    nothing of it ran and nothing of the budget was spent. Another family goes at once."""
    admin = await sign_up(GQL(budget_http), "Even")
    two = 'mutation { a: createPerson(input: {name: "a"}) { id } ' \
          'b: createPerson(input: {name: "b"}) { id } }'
    assert (await admin.client(two)).errors == []
    waited = await admin.client(CREATE.format("c"))
    assert waited.codes == ["RATE_LIMITED"], waited.body
    assert waited.errors[0]["extensions"]["retryAfter"] >= 1
    assert (await admin.client("{ persons { totalCount } }")).data["persons"][
        "totalCount"] == 2
    other = await sign_up(GQL(budget_http), "Other")
    assert (await other.client(CREATE.format("d"))).errors == []
    metrics = (await budget_http.get("/metrics")).text
    assert refused_metric(metrics, "family_mutation_pace") == 1
    assert refused_metric(metrics, "family_mutation_rate") == 0


@pytest.mark.parametrize("budget_http", [{"family_mutation_rate": "6/minute",
                                          "family_mutation_burst": 1,
                                          "request_wait_seconds": 2}], indirect=True)
async def test_mutations_waiting_for_their_familys_turn_hold_no_connection(
        budget_http: httpx.AsyncClient) -> None:
    """A mutation that waits for its family's turn has read its caller already: it gives
    that read's connection back first. Else one family's queue of mutations held the pool
    and every other family's requests waited for a connection."""
    admin = await sign_up(GQL(budget_http), "Queued")
    assert (await admin.client(CREATE.format("first"))).errors == []  # the burst
    waiting = [asyncio.create_task(admin.client(CREATE.format(f"w{i}"))) for i in range(3)]
    try:
        # They reach their wait in milliseconds and wait 2 s (a turn is 10 s away).
        await asyncio.sleep(1.0)
        metrics = (await budget_http.get("/metrics")).text
        held = [line for line in metrics.splitlines()
                if line.startswith("giftgraph_db_pool_checked_out ")]
        assert held == ["giftgraph_db_pool_checked_out 0.0"], held  # was 3.0
    finally:
        answers = await asyncio.gather(*waiting)
    assert [a.codes for a in answers] == [["RATE_LIMITED"]] * 3  # all of them waited
    assert refused_metric((await budget_http.get("/metrics")).text,
                          "family_mutation_pace") == 3


@pytest.fixture
def paced_server(database_url: str) -> Iterator[str]:
    with serving(database_url, GIFTGRAPH_FAMILY_SUBSCRIPTION_START_BURST="2",
                 GIFTGRAPH_FAMILY_SUBSCRIPTION_START_RATE="0.5") as base:
        yield base


async def test_a_family_starts_its_socket_operations_at_a_pace(paced_server: str) -> None:
    """Two operations start at once over a family's sockets; the third waits its turn
    (the socket is not read meanwhile), then runs. Another family's start at once."""
    async with httpx.AsyncClient(base_url=paced_server, timeout=10) as http:
        account = await sign_up(GQL(http), "Starts")
        other = await sign_up(GQL(http), "Other starts")
    first = await WsClient.connect(paced_server, {"authorization": f"Bearer {account.token}"})
    second = await WsClient.connect(paced_server, {"authorization": f"Bearer {account.token}"})
    elsewhere = await WsClient.connect(paced_server, {"authorization": f"Bearer {other.token}"})
    try:
        for client in (first, second):  # the burst: answered at once
            sent = await client.subscribe("{ __typename }")
            assert (await client.receive())["id"] == sent
            assert (await client.receive())["type"] == "complete"
        sent = await first.subscribe("{ __typename }")
        with pytest.raises(TimeoutError):
            await first.receive(timeout=0.8)  # waits for the family's next turn
        sent_elsewhere = await elsewhere.subscribe("{ __typename }")
        assert (await elsewhere.receive(timeout=1))["id"] == sent_elsewhere
        assert (await first.receive(timeout=5))["id"] == sent  # then runs
    finally:
        for client in (first, second, elsewhere):
            await client.ws.close()
    async with httpx.AsyncClient(base_url=paced_server, timeout=10) as http:
        metrics = (await http.get("/metrics")).text
    assert refused_metric(metrics, "subscription_starts_per_family") >= 1


async def test_an_ip_refused_again_and_again_waits_before_its_handshake(
        database_url: str) -> None:
    """Past its burst of refused sockets, an IP's next handshake waits for its turn
    before its socket budget is even looked at: here longer than the wait, so it is
    refused (403) without spending or counting the budget again."""
    settings = make_settings(database_url, socket_connect_ip_rate="1/minute",
                             refusal_burst=1, refusal_rate=0.1, request_wait_seconds=0.3)
    async with running(settings) as srv:
        url = srv.base.replace("http", "ws") + "/graphql"
        opened = await websockets.connect(url, subprotocols=[PROTOCOL])  # type: ignore[list-item]
        for _ in range(2):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(url, subprotocols=[PROTOCOL])  # type: ignore[list-item]
            assert refused.value.response.status_code == 403
        await opened.close()
        async with httpx.AsyncClient(base_url=srv.base, timeout=10) as http:
            metrics = (await http.get("/metrics")).text
    assert refused_metric(metrics, "socket_connect_rate") == 1  # the second only
    assert refused_metric(metrics, "refusals_per_caller") == 1  # the third waited


async def test_a_callers_large_new_documents_are_analysed_one_at_a_time(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large new documents sent at once over one socket (nothing bounds a socket's
    operations in flight the way HTTP's are) take their turns (`admission.checks.Turns`):
    never two of one caller in the analysis thread's queue. Before, each passed the
    allowance before any was charged, and a few families queued seconds of work ahead of
    everyone else's."""
    from giftgraph.admission import checks

    inside, most = 0, 0
    real = checks.analysed

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        try:
            return await real(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            inside -= 1

    monkeypatch.setattr(checks, "analysed", counted)
    async with running(make_settings(database_url)) as srv:
        token, _ = await srv.signup("turns@example.com")
        client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
        padding = "#" + "p" * 98 + "\n"
        ops = [await client.subscribe(padding * 25 + f"query Q{n} {{ me {{ id }} }}")
               for n in range(6)]
        answered = set()
        while answered != set(ops):
            message = await client.receive(10)
            if message.get("type") == "next":
                assert message["payload"]["data"]["me"]["id"]
                answered.add(message["id"])
        assert most == 1
        assert checks.ANALYSIS_TURNS.keys == {}  # every turn given back
        await client.ws.close()
