"""`subscription_cost_per_family`: the measured costs of a family's open subscriptions in one
process, together, taken when each starts and given back when it ends (completed, its
socket or stream closed), over graphql-transport-ws and graphql-sse alike; live queries
are bounded on their own."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import make_settings
from tests.integration.test_live_features import Server, running
from tests.integration.test_live_queries import _payload, connect, next_result

# 84 + 50 each (20 items x their fields below an event, and a subscription's own 50): one
# fits a budget of 200, two don't.
PAGE = ("subscription($f: Int) { familyEvents { seq node { ... on GiftList { "
        "items(first: $f) { edges { node { id status } } } } } } }")
SMALL = "subscription { familyEvents { seq kind entityType } }"  # 4 + 50
LIVE = "subscription { live { persons(first: 20) { edges { node { name relationship } } } } }"
CREATE_LIST = "mutation { createList(input: {name: \"L\", kind: WISHLIST}) { id } }"


@pytest.fixture
async def srv(database_url: str) -> AsyncIterator[Server]:
    async with running(make_settings(database_url,
                                     max_subscription_cost_per_family=200)) as server:
        yield server


def held(srv: Server) -> dict[Any, int]:
    return dict(srv.live.costs.held)


async def until_held(srv: Server, expected: list[int], within: float = 5) -> None:
    deadline = time.monotonic() + within
    while sorted(held(srv).values()) != expected:
        assert time.monotonic() < deadline, held(srv)
        await asyncio.sleep(0.02)


async def test_a_familys_subscriptions_are_bounded_together_and_given_back(
        srv: Server) -> None:
    token, _ = await srv.signup("cost@example.com")
    other, _ = await srv.signup("other@example.com")
    client = await connect(srv, token)
    first = await client.subscribe(PAGE, {"f": 20})
    await until_held(srv, [134])
    # Another selection of the same family passes its budget: refused, with its cost.
    second = await client.subscribe(PAGE, {"f": 19})
    refused = await next_result(client, second)
    assert refused["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert refused["errors"][0]["extensions"]["limit"] == 200
    assert refused["errors"][0]["extensions"]["cost"] == 80 + 50  # 19 items
    assert await client.receive() == {"id": second, "type": "complete"}
    assert held(srv) == {next(iter(held(srv))): 134}  # the refused one holds nothing
    # What is left fits; a live query is not counted here (live_cost_per_family); another
    # family has its own budget.
    small = await client.subscribe(SMALL)
    live = await client.subscribe(LIVE)
    assert "data" in await next_result(client, live)
    elsewhere = await connect(srv, other)
    await elsewhere.subscribe(PAGE, {"f": 20})
    await until_held(srv, [134, 188])
    # The accepted ones deliver.
    await srv.gql(CREATE_LIST, token=token)
    got = {(await client.receive())["id"] for _ in range(2)}
    assert got == {first, small}
    # Completed: given back, and the family may start another.
    await client.ws.send(json.dumps({"id": first, "type": "complete"}))
    await until_held(srv, [54, 134])
    again = await client.subscribe(PAGE, {"f": 20})
    await until_held(srv, [134, 188])
    await srv.gql(CREATE_LIST, token=token)
    got = {(await client.receive())["id"] for _ in range(2)}
    assert got == {again, small}
    # A closed socket gives back all it held.
    await client.ws.close()
    await until_held(srv, [134])
    await elsewhere.ws.close()
    await until_held(srv, [])
    metrics = (await srv.http.get("/metrics")).text
    assert 'giftgraph_admission_refused_total{bound="subscription_cost_per_family"} 1.0' \
        in metrics


async def test_an_http_stream_holds_its_cost_while_it_runs(srv: Server) -> None:
    token, _ = await srv.signup("sse@example.com")
    client = await connect(srv, token)
    await client.subscribe(PAGE, {"f": 20})
    await until_held(srv, [134])
    headers = {"Accept": "text/event-stream", "Content-Type": "application/json",
               "Authorization": f"Bearer {token}"}
    body = {"query": PAGE, "variables": {"f": 20}}
    async with srv.http.stream("POST", "/graphql/stream", headers=headers, timeout=10,
                               json=body) as r:
        refused = await asyncio.wait_for(_payload(r.aiter_lines(), True), 10)
    assert refused["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    await client.ws.close()
    await until_held(srv, [])
    async with srv.http.stream("POST", "/graphql/stream", headers=headers, timeout=10,
                               json=body) as r:
        assert r.status_code == 200
        await until_held(srv, [134])
        lines = r.aiter_lines()
        await srv.gql(CREATE_LIST, token=token)
        event = await asyncio.wait_for(_payload(lines, True), 10)
        assert event["data"]["familyEvents"]["node"]["items"]["edges"] == []
    await until_held(srv, [])


PAGES = ("subscription { familyEvents { seq node { ... on GiftList { "
         + " ".join(f"p{i}: items(first: 100) {{ edges {{ node {{ id status }} }} }}"
                    for i in range(4)) + " } } } }")


async def test_a_familys_renders_are_paid_for_when_its_events_are_published(
        database_url: str) -> None:
    """A family's event costs it its subscriptions' measured costs as it is published,
    before any render runs (a burst of its mutations had queued thousands of renders
    before the first was charged); a render then uses what was paid for it. Four pages
    of 100 items cost ~1,250, though the list has none: the prepaid values, not the
    render's handful, are what the family owes."""
    settings = make_settings(database_url, answer_values_rate=100,
                             answer_values_burst=1_000_000)
    async with running(settings) as srv:
        token, _ = await srv.signup("prepaid@example.com")
        client = await connect(srv, token)
        op = await client.subscribe(PAGES)
        deadline = time.monotonic() + 5
        while not held(srv):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        (family, cost), = held(srv).items()
        assert cost > 1_000
        values = srv.app.state.giftgraph.answer_values
        key = f"family:{family}"

        def owed() -> float:
            bucket = values.buckets.get(key)
            return 0 if bucket is None else 1_000_000 - bucket.tokens

        before = owed()
        await srv.gql(CREATE_LIST, token=token)  # one event on the family's topic
        prepaid = owed() - before
        assert cost <= prepaid < cost + 100  # and its own answer's few values
        event = await client.receive()
        assert event["id"] == op
        assert event["payload"]["data"]["familyEvents"]["node"] == {
            f"p{i}": {"edges": []} for i in range(4)}
        await asyncio.sleep(0.2)  # rendered: paid for already, nothing more owed
        assert owed() - before < cost + 100
        await client.ws.close()
