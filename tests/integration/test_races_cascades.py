"""A write that points at a row being deleted concurrently, and the changes a delete
cascades to other rows: against a uvicorn server over real HTTP and sockets.

Races: each pair of mutations is sent at once, many times; every response must be success
or the NOT_FOUND an unknown ID gets (never INTERNAL_SERVER_ERROR), and the database must
be consistent afterwards. Cascades: every row a delete changes or removes gets its event
on its own topics, in the same transaction.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from giftgraph.ids import decode_id, encode_id, split_id
from tests.conftest import _dsn
from tests.integration.test_live import WsClient, listening
from tests.support import spy_published

ROUNDS = 20


@dataclass
class Client:
    http: httpx.AsyncClient
    token: str

    async def __call__(self, query: str, variables: dict[str, Any] | None = None
                       ) -> dict[str, Any]:
        r = await self.http.post("/graphql", json={"query": query, "variables": variables or {}},
                                 headers={"Authorization": f"Bearer {self.token}"})
        return r.json()  # type: ignore[no-any-return]

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        body = await self(query, variables)
        assert not body.get("errors"), body["errors"]
        return body["data"]


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors") or []]


def shown(body: dict[str, Any]) -> list[tuple[str, str]]:
    """What a client learns from an error response (not its trace ID)."""
    return [(e["message"], e["extensions"]["code"]) for e in body["errors"]]


def unknown(type_name: str) -> str:
    return encode_id(type_name, uuid.uuid4())


@pytest.fixture
async def http(server: str) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(base_url=server, timeout=30, limits=limits) as client:
        yield client


async def _sign_up(http: httpx.AsyncClient) -> Client:
    r = await http.post("/graphql", json={
        "query": "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
        "variables": {"i": {"familyName": "F", "email": f"{uuid.uuid4().hex[:8]}@example.com",
                            "password": "long password", "displayName": "Admin"}}})
    return Client(http, r.json()["data"]["signUp"]["accessToken"])


@pytest.fixture
async def admin(http: httpx.AsyncClient) -> Client:
    return await _sign_up(http)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        yield conn
    finally:
        await conn.close()


CREATE_GIFT = 'mutation { createGift(input: {name: "G"}) { id } }'
CREATE_PERSON = 'mutation { createPerson(input: {name: "P"}) { id } }'
CREATE_OCCASION = ('mutation { createOccasion(input: {name: "O", kind: BIRTHDAY,'
                   ' date: "2099-01-01"}) { id } }')
CREATE_LIST = ("mutation($p: ID, $o: ID) { createList(input: {name: \"L\", kind: IDEAS,"
               " personId: $p, occasionId: $o}) { id person { id } occasion { id } } }")
ADD_ITEM = ("mutation($l: ID!, $g: ID) { addListItem(listId: $l, input: {giftId: $g})"
            " { id } }")
ADD_NEW_ITEM = ('mutation($l: ID!) { addListItem(listId: $l, input: {gift: {name: "N"}})'
                " { id } }")
DELETE = {t: f"mutation($i: ID!) {{ delete{t}(id: $i) }}"
          for t in ("Gift", "Person", "Occasion", "List", "User", "Comment")}


async def _list(c: Client, person: str | None = None, occasion: str | None = None) -> str:
    return str((await c.data(CREATE_LIST, {"p": person, "o": occasion}))["createList"]["id"])


async def _new(c: Client, mutation: str) -> str:
    data = await c.data(mutation)
    return str(next(iter(data.values()))["id"])


# -- races: a reference against the delete of what it points at ---------------------------

async def test_adding_an_item_for_a_gift_being_deleted(admin: Client,
                                                       db: asyncpg.Connection) -> None:
    """deleteGift and addListItem(giftId) at once: either the delete wins (the add gets the
    NOT_FOUND of an unknown gift) or the add wins (the delete gets CONFLICT: the gift is on
    a list). It was INTERNAL_SERVER_ERROR (a foreign-key violation) nearly every time."""
    gl = await _list(admin)
    missing = await admin(ADD_ITEM, {"l": gl, "g": unknown("Gift")})
    outcomes = set()
    for _ in range(ROUNDS):
        gift = await _new(admin, CREATE_GIFT)
        deleted, added = await asyncio.gather(admin(DELETE["Gift"], {"i": gift}),
                                              admin(ADD_ITEM, {"l": gl, "g": gift}))
        if added.get("errors"):
            assert shown(added) == shown(missing), added
            assert not deleted.get("errors"), deleted
            outcomes.add("delete won")
        else:
            assert codes(deleted) == ["CONFLICT"], deleted
            outcomes.add("add won")
        on_list = await db.fetchval("SELECT count(*) FROM list_items WHERE gift_id = $1",
                                    decode_id(gift, "Gift"))
        assert on_list == (0 if added.get("errors") else 1)
    assert outcomes  # (which wins is up to the scheduler)


async def test_moving_an_item_to_a_gift_being_deleted(admin: Client,
                                                      db: asyncpg.Connection) -> None:
    gl = await _list(admin)
    item = (await admin.data(ADD_NEW_ITEM, {"l": gl}))["addListItem"]["id"]
    move = ("mutation($i: ID!, $g: ID) { updateListItem(id: $i, input: {giftId: $g})"
            " { gift { id } } }")
    missing = await admin(move, {"i": item, "g": unknown("Gift")})
    for _ in range(ROUNDS):
        gift = await _new(admin, CREATE_GIFT)
        deleted, moved = await asyncio.gather(admin(DELETE["Gift"], {"i": gift}),
                                              admin(move, {"i": item, "g": gift}))
        if moved.get("errors"):
            assert shown(moved) == shown(missing), moved
            assert not deleted.get("errors"), deleted
        else:
            assert codes(deleted) == ["CONFLICT"], deleted
            assert moved["data"]["updateListItem"]["gift"]["id"] == gift
    # The item always points at an existing gift (the foreign key guarantees it) and its
    # events are whole: one per topic for every change that committed.
    assert await db.fetchval("SELECT count(*) FROM list_items li JOIN gifts g"
                             " ON g.id = li.gift_id WHERE li.id = $1",
                             decode_id(item, "ListItem")) == 1


@pytest.mark.parametrize("target", ["Person", "Occasion"])
async def test_creating_a_list_for_a_person_or_occasion_being_deleted(
        admin: Client, db: asyncpg.Connection, target: str) -> None:
    """deletePerson/deleteOccasion and createList pointing at it at once: the list is
    created (and unlinked by the delete if that commits after) or NOT_FOUND."""
    create = CREATE_PERSON if target == "Person" else CREATE_OCCASION
    key = "p" if target == "Person" else "o"
    missing = await admin(CREATE_LIST, {key: unknown(target)})
    for _ in range(ROUNDS):
        ref = await _new(admin, create)
        deleted, created = await asyncio.gather(admin(DELETE[target], {"i": ref}),
                                                admin(CREATE_LIST, {key: ref}))
        assert not deleted.get("errors"), deleted
        if created.get("errors"):
            assert shown(created) == shown(missing), created
        else:
            gl = created["data"]["createList"]["id"]
            row = await db.fetchrow("SELECT person_id, occasion_id FROM gift_lists"
                                    " WHERE id = $1", decode_id(gl, "GiftList"))
            assert row[f"{target.lower()}_id"] is None


async def test_moving_a_list_to_a_person_being_deleted(admin: Client,
                                                       db: asyncpg.Connection) -> None:
    gl = await _list(admin)
    move = "mutation($l: ID!, $p: ID) { updateList(id: $l, input: {personId: $p}) { id } }"
    missing = await admin(move, {"l": gl, "p": unknown("Person")})
    for _ in range(ROUNDS):
        person = await _new(admin, CREATE_PERSON)
        deleted, moved = await asyncio.gather(admin(DELETE["Person"], {"i": person}),
                                              admin(move, {"l": gl, "p": person}))
        assert not deleted.get("errors"), deleted
        if moved.get("errors"):
            assert shown(moved) == shown(missing), moved
        assert await db.fetchval("SELECT person_id FROM gift_lists WHERE id = $1",
                                 decode_id(gl, "GiftList")) is None


async def test_adding_an_item_to_a_list_being_deleted(admin: Client,
                                                      db: asyncpg.Connection) -> None:
    gift = await _new(admin, CREATE_GIFT)
    missing = await admin(ADD_ITEM, {"l": unknown("GiftList"), "g": gift})
    for _ in range(ROUNDS):
        gl = await _list(admin)
        deleted, added = await asyncio.gather(admin(DELETE["List"], {"i": gl}),
                                              admin(ADD_ITEM, {"l": gl, "g": gift}))
        assert not deleted.get("errors"), deleted
        if added.get("errors"):
            assert shown(added) == shown(missing), added
    assert await db.fetchval("SELECT count(*) FROM list_items") == 0


async def _member(admin: Client, http: httpx.AsyncClient) -> tuple[str, Client]:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    user = (await admin.data(
        "mutation($i: RegisterUserInput!) { registerUser(input: $i) { id } }",
        {"i": {"email": email, "password": "long password", "displayName": "M"}}
    ))["registerUser"]["id"]
    r = await http.post("/graphql", json={
        "query": "mutation($e: String!) { login(email: $e, password: \"long password\")"
                 " { accessToken } }", "variables": {"e": email}})
    return user, Client(http, r.json()["data"]["login"]["accessToken"])


async def test_assigning_an_item_to_a_member_being_deleted(
        admin: Client, http: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    gl = await _list(admin)
    item = (await admin.data(ADD_NEW_ITEM, {"l": gl}))["addListItem"]["id"]
    assign = "mutation($i: ID!, $u: ID) { assignListItem(id: $i, userId: $u) { id } }"
    missing = await admin(assign, {"i": item, "u": unknown("User")})
    for _ in range(ROUNDS):
        user, _ = await _member(admin, http)
        deleted, assigned = await asyncio.gather(admin(DELETE["User"], {"i": user}),
                                                 admin(assign, {"i": item, "u": user}))
        assert not deleted.get("errors"), deleted
        if assigned.get("errors"):
            assert shown(assigned) == shown(missing), assigned
        assert await db.fetchval("SELECT assignee_id FROM list_items WHERE id = $1",
                                 decode_id(item, "ListItem")) is None


async def test_a_member_deleted_while_making_a_change(
        admin: Client, http: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    """The caller's own row is referenced too (the event's actor, a list's owner): a member
    deleted while their change runs gets UNAUTHENTICATED, as their next request would, or
    the change commits first."""
    for _ in range(ROUNDS // 2):
        user, member = await _member(admin, http)
        deleted, made = await asyncio.gather(
            admin(DELETE["User"], {"i": user}),
            member('mutation { createList(input: {name: "M", kind: IDEAS}) { id } }'))
        assert not deleted.get("errors"), deleted
        assert codes(made) in ([], ["UNAUTHENTICATED"]), made
    # every list has an owner that exists (the foreign key), and every committed list its
    # ADDED event
    assert await db.fetchval(
        "SELECT count(*) FROM gift_lists gl WHERE NOT EXISTS (SELECT 1 FROM events e"
        " WHERE e.entity_id = gl.id AND e.kind = 'ADDED' AND e.topic = 'family')") == 0


async def test_commenting_on_a_person_being_deleted(admin: Client,
                                                    db: asyncpg.Connection) -> None:
    """Comments have no foreign key to their target: a comment added while its target is
    deleted was left behind, on nothing. Now it is NOT_FOUND or deleted with the target."""
    add = ("mutation($t: ID!) { addComment(input: {target: PERSON, targetId: $t, body: \"x\"})"
           " { id } }")
    missing = await admin(add, {"t": unknown("Person")})
    for _ in range(ROUNDS):
        person = await _new(admin, CREATE_PERSON)
        deleted, added = await asyncio.gather(admin(DELETE["Person"], {"i": person}),
                                              admin(add, {"t": person}))
        assert not deleted.get("errors"), deleted
        if added.get("errors"):
            assert shown(added) == shown(missing), added
    assert await db.fetchval("SELECT count(*) FROM comments") == 0


# -- cascades: events for every row a delete changes or removes ---------------------------

async def _events(db: asyncpg.Connection, after: int = 0) -> list[tuple[str, str, str, Any]]:
    """(kind, entity type, topic, payload) of the events after `after`, in order."""
    rows = await db.fetch("SELECT kind::text, entity_type, topic, entity_id, payload"
                          " FROM events WHERE seq > $1 ORDER BY seq", after)
    return [(r["kind"], r["entity_type"], r["topic"],
             encode_id(r["entity_type"], r["entity_id"])) for r in rows]


async def _last_seq(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT coalesce(max(seq), 0) FROM events"))


async def _payload(db: asyncpg.Connection, after: int, gid: str, topic: str) -> Any:
    import json

    raw = await db.fetchval("SELECT payload FROM events WHERE seq > $1 AND entity_id = $2"
                            " AND topic = $3", after, decode_id(gid, gid_type(gid)), topic)
    return json.loads(raw) if isinstance(raw, str) else raw


def gid_type(gid: str) -> str:
    return split_id(gid)[0]


async def test_deleting_a_person_updates_their_lists_live(server: str, admin: Client,
                                                          db: asyncpg.Connection) -> None:
    """listEvents(L) hears that its person is gone: an UPDATED event with the list's new
    state (person null), on the list's topics (and the person's, as a moved list)."""
    person = await _new(admin, CREATE_PERSON)
    occasion = await _new(admin, CREATE_OCCASION)
    gl = await _list(admin, person, occasion)
    other = await _list(admin, person)
    untouched = await _list(admin)
    watcher = await WsClient.connect(server, {"authorization": f"Bearer {admin.token}"})
    await watcher.subscribe("subscription($l: ID!) { listEvents(listId: $l) { kind topic"
                            " entityType node { id ... on GiftList { person { id }"
                            " occasion { id } } } } }", {"l": gl})
    await listening(server, 1)
    before = await _last_seq(db)
    await admin.data(DELETE["Person"], {"i": person})
    event = (await watcher.receive())["payload"]["data"]["listEvents"]
    assert event == {"kind": "UPDATED", "topic": f"list:{gl}", "entityType": "GiftList",
                     "node": {"id": gl, "person": None, "occasion": {"id": occasion}}}
    await watcher.ws.close()
    events = await _events(db, before)
    updated = {(e[2], e[3]) for e in events if e[0] == "UPDATED"}
    assert updated == {
        (f"list:{gl}", gl), (f"person:{person}", gl), (f"occasion:{occasion}", gl), ("family", gl),
        (f"list:{other}", other), (f"person:{person}", other), ("family", other)}
    assert untouched not in {e[3] for e in events}
    assert ("DELETED", "Person", f"person:{person}", person) in events
    assert (await _payload(db, before, gl, "family"))["person_id"] is None


async def test_deleting_an_occasion_updates_its_lists(admin: Client,
                                                      db: asyncpg.Connection) -> None:
    person = await _new(admin, CREATE_PERSON)
    occasion = await _new(admin, CREATE_OCCASION)
    gl = await _list(admin, person, occasion)
    before = await _last_seq(db)
    await admin.data(DELETE["Occasion"], {"i": occasion})
    events = await _events(db, before)
    assert {(e[0], e[2]) for e in events if e[3] == gl} == {
        ("UPDATED", f"list:{gl}"), ("UPDATED", f"person:{person}"),
        ("UPDATED", f"occasion:{occasion}"), ("UPDATED", "family")}
    payload = await _payload(db, before, gl, f"list:{gl}")
    assert payload["occasion_id"] is None
    assert payload["person_id"] == str(decode_id(person, "Person"))
    listed = await admin.data("query($l: ID!) { node(id: $l) { ... on GiftList"
                              " { occasion { id } } } }", {"l": gl})
    assert listed["node"]["occasion"] is None


async def test_deleting_a_list_deletes_its_items_and_comments_with_events(
        server: str, admin: Client, db: asyncpg.Connection) -> None:
    """listItemEvents hears a DELETED for every item removed with its list, and the
    comments on the list and on its items get their DELETED on their comment topics."""
    person = await _new(admin, CREATE_PERSON)
    gl = await _list(admin, person)
    items = [(await admin.data(ADD_NEW_ITEM, {"l": gl}))["addListItem"]["id"]
             for _ in range(3)]
    other_list = await _list(admin)
    kept = (await admin.data(ADD_NEW_ITEM, {"l": other_list}))["addListItem"]["id"]
    comment = ("mutation($t: CommentTarget!, $i: ID!) { addComment(input: {target: $t,"
               " targetId: $i, body: \"c\"}) { id } }")
    on_list = (await admin.data(comment, {"t": "LIST", "i": gl}))["addComment"]["id"]
    on_item = (await admin.data(comment, {"t": "LIST_ITEM", "i": items[0]}))["addComment"]["id"]
    watcher = await WsClient.connect(server, {"authorization": f"Bearer {admin.token}"})
    await watcher.subscribe("subscription { listItemEvents { kind topic entityType entityId"
                            " node { id } } }")
    await listening(server, 1)
    before = await _last_seq(db)
    await admin.data(DELETE["List"], {"i": gl})
    heard = [(await watcher.receive())["payload"]["data"]["listItemEvents"] for _ in items]
    assert sorted(e["entityId"] for e in heard) == sorted(items)
    assert all(e["kind"] == "DELETED" and e["topic"] == "list-items:all"
               and e["entityType"] == "ListItem" and e["node"] is None for e in heard), heard
    with pytest.raises(TimeoutError):
        await watcher.receive(timeout=0.5)  # nothing else (the list has its own topics)
    await watcher.ws.close()
    events = await _events(db, before)
    for item in items:
        assert {(e[0], e[2]) for e in events if e[3] == item} == {
            ("DELETED", f"list:{gl}"), ("DELETED", f"person:{person}"),
            ("DELETED", "list-items:all"), ("DELETED", "family")}
    assert {(e[0], e[2]) for e in events if e[3] == on_list} == {
        ("DELETED", f"comments:LIST:{gl}"), ("DELETED", "family")}
    assert {(e[0], e[2]) for e in events if e[3] == on_item} == {
        ("DELETED", f"comments:LIST_ITEM:{items[0]}"), ("DELETED", "family")}
    assert ("DELETED", "GiftList", f"list:{gl}", gl) in events
    assert kept not in {e[3] for e in events}
    assert await db.fetchval("SELECT count(*) FROM list_items") == 1
    assert await db.fetchval("SELECT count(*) FROM comments") == 0


async def test_deleted_targets_delete_their_comments_with_events(
        admin: Client, db: asyncpg.Connection) -> None:
    """Comments on a deleted person, occasion, gift or item go with it, each with its
    DELETED event on its comment topic."""
    comment = ("mutation($t: CommentTarget!, $i: ID!) { addComment(input: {target: $t,"
               " targetId: $i, body: \"c\"}) { id } }")
    gl = await _list(admin)
    item = (await admin.data(ADD_NEW_ITEM, {"l": gl}))["addListItem"]["id"]
    targets = [("PERSON", await _new(admin, CREATE_PERSON), DELETE["Person"]),
               ("OCCASION", await _new(admin, CREATE_OCCASION), DELETE["Occasion"]),
               ("GIFT", await _new(admin, CREATE_GIFT), DELETE["Gift"]),
               ("LIST_ITEM", item, "mutation($i: ID!) { removeListItem(id: $i) }")]
    for target, gid, delete in targets:
        ids = [(await admin.data(comment, {"t": target, "i": gid}))["addComment"]["id"]
               for _ in range(2)]
        before = await _last_seq(db)
        await admin.data(delete, {"i": gid})
        events = await _events(db, before)
        for c in ids:
            assert {(e[0], e[2]) for e in events if e[3] == c} == {
                ("DELETED", f"comments:{target}:{gid}"), ("DELETED", "family")}, events
    assert await db.fetchval("SELECT count(*) FROM comments") == 0


async def test_deleting_a_member_publishes_what_it_changes(
        admin: Client, http: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    """deleteUser hands the member's lists over (UPDATED with the new owner), unassigns
    their items (ASSIGNED to nobody, as assignListItem(userId: null)) and clears them as
    author of their comments (UPDATED): each on the row's own topics."""
    user, member = await _member(admin, http)
    person = await _new(admin, CREATE_PERSON)
    owned = str((await member.data(CREATE_LIST, {"p": person}))["createList"]["id"])
    gl = await _list(admin)
    item = (await admin.data(ADD_NEW_ITEM, {"l": gl}))["addListItem"]["id"]
    await admin.data("mutation($i: ID!, $u: ID) { assignListItem(id: $i, userId: $u)"
                     " { id } }", {"i": item, "u": user})
    comment = (await member.data("mutation($i: ID!) { addComment(input: {target: LIST,"
                                 " targetId: $i, body: \"c\"}) { id } }", {"i": gl})
               )["addComment"]["id"]
    before = await _last_seq(db)
    await admin.data(DELETE["User"], {"i": user})
    events = await _events(db, before)
    assert {(e[0], e[2]) for e in events if e[3] == owned} == {
        ("UPDATED", f"list:{owned}"), ("UPDATED", f"person:{person}"), ("UPDATED", "family")}
    assert {(e[0], e[2]) for e in events if e[3] == item} == {
        ("ASSIGNED", f"list:{gl}"), ("ASSIGNED", "list-items:all"), ("ASSIGNED", "family")}
    assert {(e[0], e[2]) for e in events if e[3] == comment} == {
        ("UPDATED", f"comments:LIST:{gl}"), ("UPDATED", "family")}
    admin_id = (await admin.data("{ me { id } }"))["me"]["id"]
    assert (await _payload(db, before, owned, "family"))["owner_id"] == str(
        decode_id(admin_id, "User"))
    assert (await _payload(db, before, item, "family"))["assignee_id"] is None
    assert (await _payload(db, before, comment, "family"))["author_id"] is None
    assert ("DELETED", "User", "family", user) in events


async def test_cascaded_events_chain_on_each_topic(
        app: Any, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many rows' events written by one statement still name, each, the previous event on
    its topic (what subscribers check for gaps): in seq order they chain exactly."""
    import itertools

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as local:
        admin = await _sign_up(local)
        person = await _new(admin, CREATE_PERSON)
        for _ in range(3):
            await _list(admin, person)
        hub = app.state.giftgraph.live.hub
        published = spy_published(hub, monkeypatch)
        before = await _last_seq(db)
        await admin.data(DELETE["Person"], {"i": person})
    by_topic: dict[str, list[tuple[int, int]]] = {}
    for e in published:
        by_topic.setdefault(e.topic, []).append((e.seq, e.prev_seq))
    assert len(by_topic["family"]) == 4  # 3 lists unlinked, the person deleted
    assert len(by_topic[f"person:{person}"]) == 4
    stored = await db.fetch("SELECT seq, topic FROM events WHERE seq > $1", before)
    assert sorted((r["seq"], r["topic"]) for r in stored) == sorted(
        (e.seq, e.topic) for e in published)
    for topic, chain in by_topic.items():
        chain.sort()
        previous = await db.fetchval("SELECT coalesce(max(seq), 0) FROM events"
                                     " WHERE topic = $1 AND seq <= $2", topic, before)
        assert chain[0][1] == previous, (topic, chain)
        for (seq, _), (_, prev) in itertools.pairwise(chain):
            assert prev == seq, (topic, chain)
