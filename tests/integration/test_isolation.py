"""Family isolation: another family's ID behaves exactly like an ID that does not exist.

Alice's family owns one of every entity. Mallory, the ADMIN of another family, tries every
operation that takes an ID with Alice's IDs: each must fail with NOT_FOUND, return no data,
be indistinguishable from a random ID of the same type, and leave Alice's data untouched.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from giftgraph.ids import encode_id
from tests.conftest import GQL, Account, GQLResult, _dsn, sign_up

Ids = dict[str, str]
Vars = Callable[[Ids], dict[str, Any]]

# The global-ID type behind each key of `World.ids`.
ID_TYPES: dict[str, str] = {
    "family": "Family",
    "alice_user": "User",
    "member": "User",
    "person": "Person",
    "occasion": "Occasion",
    "list": "GiftList",
    "gift": "Gift",
    "item": "ListItem",
    "comment_LIST": "Comment",
    "comment_LIST_ITEM": "Comment",
    "comment_GIFT": "Comment",
    "comment_PERSON": "Comment",
    "comment_OCCASION": "Comment",
    "event": "Event",
}
# The comment targets and the key of Alice's entity each one points at.
TARGETS: dict[str, str] = {
    "LIST": "list",
    "LIST_ITEM": "item",
    "GIFT": "gift",
    "PERSON": "person",
    "OCCASION": "occasion",
}


@dataclass
class World:
    alice: Account
    mallory: Account
    ids: Ids  # Alice's entities (keys of ID_TYPES)
    mine: Ids  # Mallory's own entities


CREATE_PERSON = """
mutation($input: PersonInput!) { createPerson(input: $input) { id } }"""
CREATE_OCCASION = """
mutation($input: OccasionInput!) { createOccasion(input: $input) { id } }"""
CREATE_LIST = """
mutation($input: GiftListInput!) { createList(input: $input) { id } }"""
CREATE_GIFT = """
mutation($input: GiftInput!) { createGift(input: $input) { id } }"""
ADD_ITEM = """
mutation($l: ID!, $input: ListItemInput!) { addListItem(listId: $l, input: $input) {
  id gift { id } } }"""
ASSIGN = """
mutation($i: ID!, $u: ID) { assignListItem(id: $i, userId: $u) { id assignee { id } } }"""
ADD_COMMENT = """
mutation($input: CommentInput!) { addComment(input: $input) { id } }"""
REGISTER = """
mutation($input: RegisterUserInput!) { registerUser(input: $input) { id } }"""


async def _create_family_data(c: GQL, label: str, budget: str) -> Ids:
    """One person, occasion, list (linked to both), gift and item in the caller's family."""
    ids: Ids = {}
    ids["person"] = (await c(CREATE_PERSON, {"input": {
        "name": f"{label} Mom", "relationship": "mother", "interests": ["books"],
        "notes": f"{label} secret notes"}})).data["createPerson"]["id"]
    ids["occasion"] = (await c(CREATE_OCCASION, {"input": {
        "name": f"{label} Xmas", "kind": "HOLIDAY", "date": "2099-12-25",
        "budget": budget}})).data["createOccasion"]["id"]
    ids["list"] = (await c(CREATE_LIST, {"input": {
        "name": f"{label} plan", "kind": "GIFT_PLAN", "personId": ids["person"],
        "occasionId": ids["occasion"]}})).data["createList"]["id"]
    ids["gift"] = (await c(CREATE_GIFT, {"input": {
        "name": f"{label} Book", "url": "https://www.bookshop.org/b/1",
        "price": "25.00"}})).data["createGift"]["id"]
    item = (await c(ADD_ITEM, {"l": ids["list"], "input": {
        "giftId": ids["gift"], "quantity": 1, "notes": f"{label} item"}})).data["addListItem"]
    ids["item"] = item["id"]
    return ids


@pytest.fixture
async def world(alice: Account, mallory: Account) -> World:
    a = alice.client
    ids = await _create_family_data(a, "Alice", "500.00")
    ids["alice_user"] = alice.user_id
    ids["family"] = (await a("{ family { id } }")).data["family"]["id"]
    ids["member"] = (await a(REGISTER, {"input": {
        "email": f"member-{uuid.uuid4().hex[:8]}@example.com", "password": "member password",
        "displayName": "Alice's member"}})).data["registerUser"]["id"]
    assigned = (await a(ASSIGN, {"i": ids["item"], "u": ids["member"]})).data["assignListItem"]
    assert assigned["assignee"] == {"id": ids["member"]}
    for target, key in TARGETS.items():
        ids[f"comment_{target}"] = (await a(ADD_COMMENT, {"input": {
            "target": target, "targetId": ids[key], "body": f"Alice on {target}"}})
        ).data["addComment"]["id"]
    events = (await a("{ events(first: 1) { edges { node { id } } } }")).data["events"]
    ids["event"] = events["edges"][0]["node"]["id"]
    assert set(ids) == set(ID_TYPES)

    m = mallory.client
    mine = await _create_family_data(m, "Mallory", "100.00")
    mine["user"] = mallory.user_id
    mine["comment"] = (await m(ADD_COMMENT, {"input": {
        "target": "PERSON", "targetId": mine["person"], "body": "Mallory's own"}})
    ).data["addComment"]["id"]
    return World(alice, mallory, ids, mine)


def random_id(type_name: str) -> str:
    """An ID of `type_name` that exists in no family."""
    if type_name == "Event":
        return encode_id("Event", random.randint(10**12, 10**13))
    return encode_id(type_name, uuid.uuid4())


@dataclass(frozen=True)
class Attempt:
    """Mallory runs `query` with `variables(alice_ids, mallory_ids)`; `foreign` is Alice's ID."""

    name: str
    query: str
    foreign: str
    variables: Callable[[Ids, Ids], dict[str, Any]]


def _one(key: str, var: str = "id") -> Callable[[Ids, Ids], dict[str, Any]]:
    return lambda ids, _mine: {var: ids[key]}


NODE = "query($id: ID!) { node(id: $id) { id } }"

ATTEMPTS: list[Attempt] = [
    *(Attempt(f"node-{key}", NODE, key, _one(key)) for key in ID_TYPES),
    # Persons and occasions
    Attempt("updatePerson", 'mutation($id: ID!) { updatePerson(id: $id, input: {name: "pwned",'
            " notes: null}) { id name notes } }", "person", _one("person")),
    Attempt("deletePerson", "mutation($id: ID!) { deletePerson(id: $id) }", "person",
            _one("person")),
    Attempt("updateOccasion", 'mutation($id: ID!) { updateOccasion(id: $id, input: {name: "x",'
            ' budget: "1.00"}) { id name } }', "occasion", _one("occasion")),
    Attempt("deleteOccasion", "mutation($id: ID!) { deleteOccasion(id: $id) }", "occasion",
            _one("occasion")),
    # Lists
    Attempt("updateList", 'mutation($id: ID!) { updateList(id: $id, input: {name: "pwned"})'
            " { id name } }", "list", _one("list")),
    Attempt("deleteList", "mutation($id: ID!) { deleteList(id: $id) }", "list", _one("list")),
    Attempt("updateList-own-with-personId",
            "mutation($id: ID!, $p: ID) { updateList(id: $id, input: {personId: $p})"
            " { id person { id name } } }", "person",
            lambda ids, mine: {"id": mine["list"], "p": ids["person"]}),
    Attempt("updateList-own-with-occasionId",
            "mutation($id: ID!, $o: ID) { updateList(id: $id, input: {occasionId: $o})"
            " { id occasion { id name } } }", "occasion",
            lambda ids, mine: {"id": mine["list"], "o": ids["occasion"]}),
    Attempt("createList-personId",
            'mutation($p: ID) { createList(input: {name: "spy", kind: IDEAS, personId: $p})'
            " { id person { id name } } }", "person", _one("person", "p")),
    Attempt("createList-occasionId",
            'mutation($o: ID) { createList(input: {name: "spy", kind: IDEAS, occasionId: $o})'
            " { id occasion { id name } } }", "occasion", _one("occasion", "o")),
    # Gifts
    Attempt("updateGift", 'mutation($id: ID!) { updateGift(id: $id, input: {price: "0.01"})'
            " { id price } }", "gift", _one("gift")),
    Attempt("deleteGift", "mutation($id: ID!) { deleteGift(id: $id) }", "gift", _one("gift")),
    # List items
    Attempt("addListItem-foreign-list",
            'mutation($l: ID!) { addListItem(listId: $l, input: {gift: {name: "spy"}})'
            " { id } }", "list", _one("list", "l")),
    Attempt("addListItem-foreign-gift-into-own-list",
            "mutation($l: ID!, $g: ID) { addListItem(listId: $l, input: {giftId: $g})"
            " { id gift { id name } } }", "gift",
            lambda ids, mine: {"l": mine["list"], "g": ids["gift"]}),
    Attempt("updateListItem", 'mutation($id: ID!) { updateListItem(id: $id, input: {quantity: 7,'
            ' notes: "pwned"}) { id quantity } }', "item", _one("item")),
    Attempt("updateListItem-own-with-foreign-gift",
            "mutation($id: ID!, $g: ID) { updateListItem(id: $id, input: {giftId: $g})"
            " { id gift { id name } } }", "gift",
            lambda ids, mine: {"id": mine["item"], "g": ids["gift"]}),
    Attempt("removeListItem", "mutation($id: ID!) { removeListItem(id: $id) }", "item",
            _one("item")),
    Attempt("setListItemStatus", "mutation($id: ID!) { setListItemStatus(id: $id,"
            " status: SELECTED) { id status } }", "item", _one("item")),
    Attempt("assignListItem-foreign-item-to-self", ASSIGN, "item",
            lambda ids, mine: {"i": ids["item"], "u": mine["user"]}),
    Attempt("assignListItem-foreign-item-unassign", ASSIGN, "item",
            lambda ids, _mine: {"i": ids["item"], "u": None}),
    Attempt("assignListItem-own-item-to-foreign-admin", ASSIGN, "alice_user",
            lambda ids, mine: {"i": mine["item"], "u": ids["alice_user"]}),
    Attempt("assignListItem-own-item-to-foreign-member", ASSIGN, "member",
            lambda ids, mine: {"i": mine["item"], "u": ids["member"]}),
    # Users
    Attempt("updateUser-admin-displayName", 'mutation($id: ID!) { updateUser(id: $id, input:'
            ' {displayName: "pwned"}) { id } }', "alice_user", _one("alice_user")),
    Attempt("updateUser-member-deactivate", "mutation($id: ID!) { updateUser(id: $id, input:"
            " {isActive: false}) { id } }", "member", _one("member")),
    Attempt("updateUser-member-promote", "mutation($id: ID!) { updateUser(id: $id, input:"
            " {role: ADMIN}) { id } }", "member", _one("member")),
    Attempt("updateUser-admin-password", 'mutation($id: ID!) { updateUser(id: $id, input:'
            ' {password: "taken over!"}) { id } }', "alice_user", _one("alice_user")),
    Attempt("deleteUser-member", "mutation($id: ID!) { deleteUser(id: $id) }", "member",
            _one("member")),
    Attempt("deleteUser-admin", "mutation($id: ID!) { deleteUser(id: $id) }", "alice_user",
            _one("alice_user")),
    # Comments
    *(Attempt(f"addComment-{target}",
              "mutation($t: ID!) { addComment(input: {target: " + target
              + ', targetId: $t, body: "spam"}) { id } }', key, _one(key, "t"))
      for target, key in TARGETS.items()),
    *(Attempt(f"deleteComment-{target}", "mutation($id: ID!) { deleteComment(id: $id) }",
              f"comment_{target}", _one(f"comment_{target}"))
      for target in TARGETS),
    # Query filters
    Attempt("lists-personId", "query($p: ID) { lists(personId: $p) { totalCount"
            " edges { node { id } } } }", "person", _one("person", "p")),
    Attempt("lists-occasionId", "query($o: ID) { lists(occasionId: $o) { totalCount"
            " edges { node { id } } } }", "occasion", _one("occasion", "o")),
    *(Attempt(f"comments-{target}",
              "query($t: ID!) { comments(target: " + target
              + ", targetId: $t) { totalCount edges { node { id body } } } }", key,
              _one(key, "t"))
      for target, key in TARGETS.items()),
]


def _no_data(r: GQLResult) -> bool:
    data = r.body.get("data")
    return data is None or all(value is None for value in data.values())


def _comparable(r: GQLResult) -> tuple[int, Any, list[dict[str, Any]]]:
    """A result without its per-request traceId."""
    errors = []
    for error in r.errors:
        extensions = {k: v for k, v in error.get("extensions", {}).items() if k != "traceId"}
        errors.append({**error, "extensions": extensions})
    return r.status, r.body.get("data"), errors


SNAPSHOT = """
query($l: ID!, $i: ID!, $g: ID!, $p: ID!, $o: ID!) {
  me { id role isActive }
  family { id name updatedAt }
  persons { totalCount edges { node {
    id name relationship birthday interests notes updatedAt } } }
  occasions { totalCount edges { node {
    id name kind date description budget updatedAt } } }
  lists { totalCount edges { node {
    id name kind budget updatedAt person { id } occasion { id } owner { id }
    items { totalCount edges { node {
      id status quantity notes updatedAt assignee { id } gift { id } } } } } } }
  gifts { totalCount edges { node { id name url store price currency updatedAt } } }
  users { totalCount edges { node { id email displayName role isActive updatedAt } } }
  events(first: 100) { totalCount edges { node { id kind entityId } } }
  cl: comments(target: LIST, targetId: $l) { totalCount edges { node { id body } } }
  ci: comments(target: LIST_ITEM, targetId: $i) { totalCount edges { node { id body } } }
  cg: comments(target: GIFT, targetId: $g) { totalCount edges { node { id body } } }
  cp: comments(target: PERSON, targetId: $p) { totalCount edges { node { id body } } }
  co: comments(target: OCCASION, targetId: $o) { totalCount edges { node { id body } } }
}"""


async def alice_snapshot(w: World) -> dict[str, Any]:
    """Everything of Alice's family, read back as Alice."""
    ids = w.ids
    data: dict[str, Any] = (await w.alice.client(SNAPSHOT, {
        "l": ids["list"], "i": ids["item"], "g": ids["gift"], "p": ids["person"],
        "o": ids["occasion"]})).data
    return data


async def test_world_is_complete(world: World) -> None:
    """Sanity: Alice sees all of her entities (so the attempts below target real rows)."""
    snap = await alice_snapshot(world)
    assert snap["persons"]["totalCount"] == 1
    assert snap["lists"]["edges"][0]["node"]["items"]["totalCount"] == 1
    assert snap["users"]["totalCount"] == 2
    for alias in ("cl", "ci", "cg", "cp", "co"):
        assert snap[alias]["totalCount"] == 1
    node = await world.alice.client(NODE, {"id": world.ids["person"]})
    assert node.data["node"] == {"id": world.ids["person"]}


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[a.name for a in ATTEMPTS])
async def test_foreign_id_is_not_found(world: World, attempt: Attempt) -> None:
    before = await alice_snapshot(world)
    r = await world.mallory.client(attempt.query, attempt.variables(world.ids, world.mine))
    assert r.codes == ["NOT_FOUND"], r.body
    assert _no_data(r), r.body
    assert await alice_snapshot(world) == before


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[a.name for a in ATTEMPTS])
async def test_foreign_id_is_indistinguishable_from_missing_id(
    world: World, attempt: Attempt
) -> None:
    missing = {**world.ids, attempt.foreign: random_id(ID_TYPES[attempt.foreign])}
    as_missing = await world.mallory.client(attempt.query, attempt.variables(missing, world.mine))
    as_foreign = await world.mallory.client(attempt.query,
                                            attempt.variables(world.ids, world.mine))
    assert as_missing.codes == ["NOT_FOUND"], as_missing.body
    assert _comparable(as_foreign) == _comparable(as_missing)


# Every reference from a row to another row (foreign keys, a comment's target, an event's
# entity while it exists), where the two rows' families differ.
_REFERENCES = [
    ("list_items", "list_id", "gift_lists"), ("list_items", "gift_id", "gifts"),
    ("list_items", "assignee_id", "users"), ("gift_lists", "person_id", "persons"),
    ("gift_lists", "occasion_id", "occasions"), ("gift_lists", "owner_id", "users"),
    ("comments", "author_id", "users"), ("events", "actor_id", "users"),
]
_TARGETS = {"LIST": "gift_lists", "LIST_ITEM": "list_items", "GIFT": "gifts",
            "PERSON": "persons", "OCCASION": "occasions"}
_ENTITIES = {"Family": "families", "User": "users", "Person": "persons",
             "Occasion": "occasions", "GiftList": "gift_lists", "Gift": "gifts",
             "ListItem": "list_items", "Comment": "comments"}
# (Table and column names from the lists above only.)
CROSS_FAMILY = " UNION ALL ".join([
    *(f"SELECT '{t}.{c}' FROM {t} x JOIN {r} y ON y.id = x.{c} "  # noqa: S608
      "WHERE y.family_id <> x.family_id" for t, c, r in _REFERENCES),
    *(f"SELECT 'comments.target_id' FROM comments x JOIN {r} y "  # noqa: S608
      f"ON y.id = x.target_id WHERE x.target = '{target}' AND y.family_id <> x.family_id"
      for target, r in _TARGETS.items()),
    *(f"SELECT 'events.entity_id' FROM events x JOIN {r} y "  # noqa: S608
      f"ON y.id = x.entity_id WHERE x.entity_type = '{name}' "
      f"AND y.{'id' if r == 'families' else 'family_id'} <> x.family_id"
      for name, r in _ENTITIES.items()),
])


async def cross_family_references(database_url: str) -> list[str]:
    """Each reference (table.column) from a row to a row of another family, once per row."""
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        return [row[0] for row in await conn.fetch(CROSS_FAMILY)]
    finally:
        await conn.close()


async def test_no_row_points_into_another_family(world: World, database_url: str) -> None:
    """After every attempt (each of which also names her own rows where it takes two IDs),
    no row of either family refers to a row of the other, events included."""
    for attempt in ATTEMPTS:
        r = await world.mallory.client(attempt.query, attempt.variables(world.ids, world.mine))
        assert r.codes == ["NOT_FOUND"], (attempt.name, r.body)
    assert await cross_family_references(database_url) == []


async def test_alice_data_unchanged_after_every_attempt(world: World) -> None:
    before = await alice_snapshot(world)
    mallory_before = (await world.mallory.client("{ events { totalCount } }")).data
    for attempt in ATTEMPTS:
        r = await world.mallory.client(attempt.query, attempt.variables(world.ids, world.mine))
        assert r.codes == ["NOT_FOUND"], (attempt.name, r.body)
    assert await alice_snapshot(world) == before
    # Nothing half-applied on Mallory's side either (no stray gift, item, list or comment).
    assert (await world.mallory.client("{ events { totalCount } }")).data == mallory_before


# --- Mallory's own list queries never contain Alice's rows ---------------------------------

CONNECTIONS: dict[str, tuple[str, set[str]]] = {
    # name: (query, keys of Mallory's rows it must return exactly)
    "persons": ("{ persons { totalCount edges { node { id name } } } }", {"person"}),
    "persons-search": ('{ persons(search: "Mom") { totalCount edges { node { id } } } }',
                       {"person"}),
    "occasions": ("{ occasions { totalCount edges { node { id } } } }", {"occasion"}),
    "lists": ("{ lists { totalCount edges { node { id } } } }", {"list"}),
    "lists-kind": ("{ lists(kind: GIFT_PLAN) { totalCount edges { node { id } } } }", {"list"}),
    "gifts": ("{ gifts { totalCount edges { node { id } } } }", {"gift"}),
    "gifts-search": ('{ gifts(search: "Book") { totalCount edges { node { id } } } }', {"gift"}),
    "users": ("{ users { totalCount edges { node { id } } } }", {"user"}),
}


def _alice_ids(w: World) -> set[str]:
    return set(w.ids.values())


@pytest.mark.parametrize("name", list(CONNECTIONS))
async def test_mallory_connections_hold_only_her_rows(world: World, name: str) -> None:
    query, keys = CONNECTIONS[name]
    data = (await world.mallory.client(query)).data
    (conn,) = data.values()
    got = {e["node"]["id"] for e in conn["edges"]}
    assert not got & _alice_ids(world)
    assert got == {world.mine[k] for k in keys}
    assert conn["totalCount"] == len(keys)


async def test_mallory_events_hold_only_her_activity(world: World) -> None:
    data = (await world.mallory.client(
        "{ events(first: 100) { totalCount edges { node { id entityId actor { id } } } } }"
    )).data["events"]
    assert data["edges"], "Mallory's own changes must be in her activity log"
    assert data["totalCount"] == len(data["edges"])
    alice_ids = _alice_ids(world)
    for edge in data["edges"]:
        node = edge["node"]
        assert node["id"] != world.ids["event"]
        assert node["entityId"] not in alice_ids
        assert node["actor"] in (None, {"id": world.mallory.user_id})


async def test_mallory_dashboard_holds_only_her_rows(world: World) -> None:
    dash = (await world.mallory.client(
        "{ dashboard { nextOccasions { id } pipeline { idea selected purchased received }"
        " people { person { id } spent } recentIdeas { id } activity { entityId actor { id } }"
        " budget spent } }"
    )).data["dashboard"]
    mine = world.mine
    assert dash["nextOccasions"] == [{"id": mine["occasion"]}]
    assert dash["pipeline"] == {"idea": 1, "selected": 0, "purchased": 0, "received": 0}
    assert dash["people"] == [{"person": {"id": mine["person"]}, "spent": "0.00"}]
    assert dash["recentIdeas"] == [{"id": mine["item"]}]
    assert dash["budget"] == "100.00"
    assert dash["spent"] == "0.00"
    assert dash["activity"]
    alice_ids = _alice_ids(world)
    for event in dash["activity"]:
        assert event["entityId"] not in alice_ids
        assert event["actor"] in (None, {"id": world.mallory.user_id})


async def test_mallory_me_and_family_are_her_own(world: World) -> None:
    data = (await world.mallory.client("{ me { id } family { id name } }")).data
    assert data["me"] == {"id": world.mallory.user_id}
    assert data["family"]["id"] != world.ids["family"]
    assert data["family"]["name"] == "Mallory's family"


async def test_new_family_sees_nothing(world: World, gql: GQL) -> None:
    """A brand-new family (no rows of its own) sees empty connections, not Alice's rows."""
    eve = await sign_up(gql, "Eve's family")
    data = (await eve.client(
        "{ persons { totalCount } occasions { totalCount } lists { totalCount }"
        " gifts { totalCount } users { totalCount edges { node { id } } }"
        " dashboard { pipeline { idea } recentIdeas { id } people { spent } budget } }"
    )).data
    assert data["persons"] == data["occasions"] == data["lists"] == data["gifts"] == {
        "totalCount": 0}
    assert data["users"] == {"totalCount": 1, "edges": [{"node": {"id": eve.user_id}}]}
    assert data["dashboard"] == {"pipeline": {"idea": 0}, "recentIdeas": [], "people": [],
                                 "budget": None}
