"""Event `seq` counts per family: 1, 2, 3, … with no gap (not even for a rollback), in
commit order; Event IDs, `since` and the migration of an existing log."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select

from giftgraph.db import models as m
from giftgraph.db.migrate import upgrade
from giftgraph.events import record
from giftgraph.ids import encode_id
from tests.conftest import Account, _dsn
from tests.integration.test_live import WsClient
from tests.integration.test_replay import received, serving

CREATE_PERSON = 'mutation($n: String!) { createPerson(input: {name: $n}) { id } }'
FAMILY_EVENTS = "{ events(first: 100) { edges { node { id seq } } } }"


async def seqs_of(database_url: str) -> dict[uuid.UUID, list[int]]:
    """Every family's stored seqs, in order."""
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        rows = await conn.fetch("SELECT family_id, seq FROM events ORDER BY family_id, seq")
    finally:
        await conn.close()
    families: dict[uuid.UUID, list[int]] = {}
    for row in rows:
        families.setdefault(row["family_id"], []).append(row["seq"])
    return families


async def test_two_families_writing_interleaved_each_count_from_one(
        alice: Account, mallory: Account, database_url: str) -> None:
    for i in range(6):
        for account in (alice, mallory):
            await account.client(CREATE_PERSON, {"n": f"P{i}"})
        if i % 2:  # a change that writes events on several topics at once
            gl = (await alice.client('mutation { createList(input: {name: "L", kind: IDEAS})'
                                     " { id } }")).data["createList"]["id"]
            await alice.client('mutation($l: ID!) { addListItem(listId: $l, input: {gift: '
                               '{name: "G"}}) { id } }', {"l": gl})
    families = await seqs_of(database_url)
    assert len(families) == 2
    for seqs in families.values():
        assert seqs == list(range(1, len(seqs) + 1)), seqs

    alice_events = [e["node"] for e in
                    (await alice.client(FAMILY_EVENTS)).data["events"]["edges"]]
    mallory_events = [e["node"] for e in
                      (await mallory.client(FAMILY_EVENTS)).data["events"]["edges"]]
    newest_first = [int(e["seq"]) for e in mallory_events]
    assert newest_first == sorted(set(newest_first), reverse=True), newest_first
    # The same seq in two families, and still two IDs, each NOT_FOUND to the other family.
    assert {e["seq"] for e in alice_events} & {e["seq"] for e in mallory_events}
    assert not {e["id"] for e in alice_events} & {e["id"] for e in mallory_events}
    node = "query($id: ID!) { node(id: $id) { id ... on Event { seq } } }"
    for event in alice_events[:3]:
        mine = await alice.client(node, {"id": event["id"]})
        assert mine.data["node"] == event
        theirs = await mallory.client(node, {"id": event["id"]})
        assert theirs.codes == ["NOT_FOUND"], theirs.body
    for bad in (encode_id("Event", "1"), encode_id("Event", "x:1"),
                encode_id("Event", f"{uuid.uuid4()}:1"), encode_id("Event", f"{uuid.uuid4()}:")):
        assert (await alice.client(node, {"id": bad})).codes == ["NOT_FOUND"]


async def test_a_rolled_back_transaction_leaves_no_gap(alice: Account, app: Any,
                                                       database_url: str) -> None:
    person = (await alice.client(CREATE_PERSON, {"n": "Ann"})).data["createPerson"]
    [before] = (await seqs_of(database_url)).values()
    sessions = app.state.giftgraph.db().sessions
    async with sessions() as session, session.begin():
        row = await session.scalar(select(m.Person))
        assert row is not None
        written = await record(session, family_id=row.family_id, actor_id=None,
                               kind=m.EventKind.UPDATED, entity=row, topics=["x:y"])
        assert [e.seq for e in written] == [before[-1] + 1, before[-1] + 2]
        await session.rollback()
    await alice.client('mutation($id: ID!) { updatePerson(id: $id, input: {notes: "n"}) '
                       "{ id } }", {"id": person["id"]})
    [after] = (await seqs_of(database_url)).values()
    assert after == list(range(1, len(after) + 1)), after
    assert len(after) > len(before)


async def test_since_resumes_within_the_family_with_no_gap_and_no_duplicate(
        database_url: str) -> None:
    query = "subscription($s: String) { familyEvents(since: $s) { id seq } }"
    async with serving(database_url) as srv:
        alice, _ = await srv.signup("seq-alice@example.com")
        bob, _ = await srv.signup("seq-bob@example.com")
        await srv.gql(CREATE_PERSON, {"n": "A0"}, alice)
        client = await WsClient.connect(srv.base, {"authorization": f"Bearer {alice}"})
        await client.subscribe(query)
        await srv.listening(1)
        await srv.gql(CREATE_PERSON, {"n": "A1"}, alice)
        [first] = await received(client, 1)
        await client.ws.close()
        for i in range(4):  # missed while away, with another family writing in between
            await srv.gql(CREATE_PERSON, {"n": f"B{i}"}, bob)
            await srv.gql(CREATE_PERSON, {"n": f"A{i + 2}"}, alice)

        client = await WsClient.connect(srv.base, {"authorization": f"Bearer {alice}"})
        await client.subscribe(query, {"s": str(first)})
        replayed = await received(client, 4)
        await srv.gql(CREATE_PERSON, {"n": "B9"}, bob)
        await srv.gql(CREATE_PERSON, {"n": "A9"}, alice)
        [live] = await received(client, 1)
        with pytest.raises(TimeoutError):
            await client.receive(timeout=0.3)

        # A since past the family's newest event (a seq from before seqs counted per family)
        # is no event of this log: refetch, then subscribe without since.
        op = await client.subscribe(query, {"s": str(live + 1)})
        message = await client.receive()
        assert message["id"] == op, message
        [error] = message["payload"]["errors"]
        assert error["extensions"]["fields"] == {
            "since": "no such event: refetch, then subscribe without since"}
        await client.ws.close()
        data = await srv.gql("{ events(first: 100) { edges { node { seq } } } }",
                             token=alice)
    stored = sorted(int(e["node"]["seq"]) for e in data["events"]["edges"])
    assert [first, *replayed, live] == stored[-6:], stored


async def test_the_migration_numbers_existing_events_per_family_in_their_order(
        empty_database: str) -> None:
    url = empty_database
    await upgrade(url, "0002")
    conn = await asyncpg.connect(_dsn(url))
    try:
        families = [uuid.uuid4(), uuid.uuid4()]
        for f in families:
            await conn.execute("INSERT INTO families (id, name, created_at, updated_at) "
                               "VALUES ($1, 'F', now(), now())", f)
        order = [families[i] for i in (0, 1, 1, 0, 1, 0, 0)]
        for f in order:  # one global identity: 1..7, interleaved
            await conn.execute(
                "INSERT INTO events (family_id, topic, kind, entity_type, entity_id, at) "
                "VALUES ($1, 'family', 'ADDED', 'Person', $2, now())", f, uuid.uuid4())
        await upgrade(url)
        rows = await conn.fetch("SELECT id, family_id, seq FROM events ORDER BY id")
    finally:
        await conn.close()
    assert [r["id"] for r in rows] == list(range(1, 8))  # the old numbers, kept as id
    assert [(r["family_id"], r["seq"]) for r in rows] == [
        (families[0], 1), (families[1], 1), (families[1], 2), (families[0], 2),
        (families[1], 3), (families[0], 3), (families[0], 4)]


async def test_two_families_events_with_one_seq_resolve_each_in_its_own_family(
        database_url: str) -> None:
    """Events are rendered in scopes shared per event (one session and DataLoaders, which
    are the family's): two families' events with the same seq must not share one."""
    query = "subscription { familyEvents { seq actor { displayName } } }"
    async with serving(database_url) as srv:
        alice, _ = await srv.signup("alice-scope@example.com")
        bob, _ = await srv.signup("bobby-scope@example.com")
        watchers = []
        for token in (alice, bob):
            client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
            await client.subscribe(query)
            watchers.append(client)
        await srv.listening(2)
        await srv.gql(CREATE_PERSON, {"n": "A"}, alice)
        await srv.gql(CREATE_PERSON, {"n": "B"}, bob)
        got = []
        for client in watchers:
            event = (await client.receive())["payload"]["data"]["familyEvents"]
            got.append(event)
            await client.ws.close()
    assert got[0]["seq"] == got[1]["seq"], got  # both families' third event
    assert [e["actor"] for e in got] == [{"displayName": "alice"}, {"displayName": "bobby"}]


async def test_concurrent_changes_of_one_family_are_numbered_densely(
        alice: Account, mallory: Account, database_url: str) -> None:
    """Concurrent mutations (plain writes, updates, cascades) of two families: each family
    still counts 1..n, every mutation succeeded, and none was numbered twice."""
    people = [(await alice.client(CREATE_PERSON, {"n": f"P{i}"})).data["createPerson"]["id"]
              for i in range(4)]
    gl = (await alice.client('mutation($p: ID!) { createList(input: {name: "L", kind: IDEAS,'
                             " personId: $p}) { id } }", {"p": people[0]})).data["createList"]
    calls = [alice.client(CREATE_PERSON, {"n": f"N{i}"}) for i in range(8)]
    calls += [mallory.client(CREATE_PERSON, {"n": f"M{i}"}) for i in range(8)]
    calls += [alice.client('mutation($id: ID!) { updatePerson(id: $id, input: {notes: "x"})'
                           " { id } }", {"id": p}) for p in people[1:]]
    calls.append(alice.client("mutation($id: ID!) { deletePerson(id: $id) }",
                              {"id": people[0]}))  # unlinks the list: a cascade's events
    results = await asyncio.gather(*calls)
    assert all(not r.errors for r in results), [r.errors for r in results if r.errors]
    assert gl["id"]
    for seqs in (await seqs_of(database_url)).values():
        assert seqs == list(range(1, len(seqs) + 1)), seqs
