"""Rows that point at another family's rows (a list item whose gift is another family's, a
list for another family's person...). The API never writes one (test_isolation tries every
mutation with another family's IDs, then looks for such rows in the tables); here they are
inserted with SQL, as a bad import or a manual fix could leave them, and the reads must
still keep to the contract: never another family's data, nothing that tells whether
another family's ID exists, and the compiled reads (accel/compiled.py) answering exactly
as the executor (`compile_reads=False`) does.

What the reads make of such a row: a nullable relation to another family's row is null
(as for a deleted person or occasion); a required one (ListItem.gift, ListItem.list,
GiftList.owner) is NOT_FOUND (as for a row deleted while the read ran); counts and money
leave the other family's rows out (an item whose gift is another family's counts in no
person's progress and no spending; a list for another family's person or occasion counts
as a list for no person or occasion).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from giftgraph.app import create_app
from giftgraph.ids import decode_id, encode_id
from tests.conftest import GQL, Account, GQLResult, _dsn, make_settings
from tests.integration.test_isolation import cross_family_references
from tests.support import ACCEL

ITEM_STATUS = "mutation($i: ID!, $s: ItemStatus!) { setListItemStatus(id: $i, status: $s) { id } }"


@pytest.fixture
def settings(database_url: str) -> Any:
    # No result cache: every read below executes.
    return make_settings(database_url, result_cache_bytes=0)


@pytest.fixture
async def plain_app(database_url: str) -> AsyncIterator[Any]:
    """The same service with the read compiler off, on the same database."""
    application = create_app(make_settings(database_url, result_cache_bytes=0,
                                           compile_reads=False))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def plain(plain_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=plain_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@dataclass
class Family:
    account: Account
    pk: dict[str, uuid.UUID]  # family, person, occasion, list, gift, item, user
    ids: dict[str, str]  # the same, as global IDs
    words: tuple[str, ...]  # what only this family's data says: its name, currency, price


TYPES = {"family": "Family", "person": "Person", "occasion": "Occasion", "list": "GiftList",
         "gift": "Gift", "item": "ListItem", "user": "User"}


async def make_family(account: Account, label: str, currency: str, price: str) -> Family:
    """A person, an upcoming occasion and a plan for both with one gift PURCHASED (priced
    in the family's currency, which is its own)."""
    c = account.client
    assert (await c("mutation($c: String!) { updateFamily(input: {currency: $c}) { id } }",
                    {"c": currency})).data
    ids = {"user": account.user_id, "family": (await c("{ family { id } }")).data["family"]["id"]}
    ids["person"] = (await c("mutation($n: String!) { createPerson(input: {name: $n}) { id } }",
                             {"n": f"{label} Mom"})).data["createPerson"]["id"]
    ids["occasion"] = (await c(
        'mutation($n: String!) { createOccasion(input: {name: $n, kind: HOLIDAY, '
        'date: "2099-12-25", budget: "900.00"}) { id } }', {"n": f"{label} Xmas"})
    ).data["createOccasion"]["id"]
    ids["list"] = (await c(
        "mutation($n: String!, $p: ID, $o: ID) { createList(input: {name: $n, kind: GIFT_PLAN,"
        " personId: $p, occasionId: $o}) { id } }",
        {"n": f"{label} plan", "p": ids["person"], "o": ids["occasion"]})).data["createList"]["id"]
    item = (await c(
        "mutation($l: ID!, $g: GiftInput!) { addListItem(listId: $l, input: {gift: $g}) {"
        " id gift { id } } }",
        {"l": ids["list"], "g": {"name": f"{label} Book", "price": price}})).data["addListItem"]
    ids["item"], ids["gift"] = item["id"], item["gift"]["id"]
    for status in ("SELECTED", "PURCHASED"):
        assert (await c(ITEM_STATUS, {"i": ids["item"], "s": status})).data
    pk = {key: decode_id(gid, TYPES[key]) for key, gid in ids.items()}
    return Family(account, pk, ids, (label, currency, price))


@dataclass
class World:
    alice: Family
    mallory: Family
    database_url: str

    async def sql(self, statement: str, *args: Any) -> Any:
        conn = await asyncpg.connect(_dsn(self.database_url))
        try:
            return await conn.fetch(statement, *args)
        finally:
            await conn.close()

    async def forged_item(self, owner: Family, list_of: Family, gift_of: Family,
                          quantity: int, status: str = "PURCHASED",
                          list_id: uuid.UUID | None = None) -> uuid.UUID:
        """A list item of `owner`'s family on a list of `list_of` (its plan unless
        `list_id`), its gift `gift_of`'s."""
        rows = await self.sql(
            "INSERT INTO list_items (id, family_id, list_id, gift_id, status, quantity,"
            " created_at, updated_at) VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, now(),"
            " now()) RETURNING id", owner.pk["family"], list_id or list_of.pk["list"],
            gift_of.pk["gift"], status, quantity)
        return uuid.UUID(str(rows[0]["id"]))

    async def forged_list(self, owner: Family, person: Family | None,
                          occasion: Family | None, name: str) -> uuid.UUID:
        """A list of `owner`'s family for `person`'s person and `occasion`'s occasion."""
        rows = await self.sql(
            "INSERT INTO gift_lists (id, family_id, name, kind, person_id, occasion_id,"
            " owner_id, created_at, updated_at) VALUES (gen_random_uuid(), $1, $2, 'GIFT_PLAN',"
            " $3, $4, $5, now(), now()) RETURNING id", owner.pk["family"], name,
            person.pk["person"] if person else None,
            occasion.pk["occasion"] if occasion else None, owner.pk["user"])
        return uuid.UUID(str(rows[0]["id"]))


@pytest.fixture
async def world(alice: Account, mallory: Account, database_url: str) -> World:
    return World(await make_family(alice, "Alice", "EUR", "25.13"),
                 await make_family(mallory, "Mallory", "CHF", "777.77"), database_url)


def comparable(r: GQLResult) -> tuple[int, Any]:
    """A result without its per-request traceIds."""
    body = dict(r.body)
    if "errors" in body:
        body["errors"] = [{**e, "extensions": {k: v for k, v in e["extensions"].items()
                                               if k != "traceId"}} for e in body["errors"]]
    return r.status, body


def outcomes(app: Any) -> dict[str, float]:
    counter = app.state.giftgraph.metrics.compiled_reads
    return {s.labels["outcome"]: s.value for metric in counter.collect() for s in metric.samples
            if s.name.endswith("_total")}


async def both(app: Any, plain: httpx.AsyncClient, family: Family, query: str,
               variables: dict[str, Any] | None = None, served: str | None = None
               ) -> GQLResult:
    """The result on the compiled path, which must be the executor's (sans traceIds);
    `served`: how the compiled reads must have served it (compiled, fallback, executor)."""
    before = outcomes(app)
    compiled = await family.account.client(query, variables)
    after = outcomes(app)
    executed = await GQL(plain, family.account.token)(query, variables)
    assert comparable(compiled) == comparable(executed), query
    if ACCEL and served is not None:
        assert after.get(served, 0) == before.get(served, 0) + 1, (served, before, after)
    return compiled


def assert_none_of(r: GQLResult, other: Family, *more: str) -> None:
    """Nothing of the other family's in the response: no ID, name, currency or price (nor
    any of `more`)."""
    text = str(r.body)
    for word in (*other.ids.values(), *other.words, *more):
        assert word not in text, (word, r.body)


# --- counts and money ----------------------------------------------------------------------

DASHBOARD = """{ dashboard {
  people { person { id name } pipeline { idea selected purchased received } spent
           spentByCurrency { amount currency } }
  pipeline { idea selected purchased received } budget spent
  spentByCurrency { amount currency } } }"""
SUMMARIES = """{ occasions { edges { node { name summary {
  people { person { name } pipeline { purchased } spent spentByCurrency { amount currency } }
  budget spent spentByCurrency { amount currency } } } } } }"""
HISTORY = "{ persons { edges { node { name giftHistory { totalCount edges { node { id } } } } } } }"
LISTS = """{ lists { totalCount edges { node { name person { name } occasion { name }
  items { totalCount edges { node { id quantity } } } } } } }"""


def purchased(n: int) -> dict[str, int]:
    return {"idea": 0, "selected": 0, "purchased": n, "received": 0}


async def test_counts_and_money_hold_only_the_familys_rows(
    app: Any, plain: httpx.AsyncClient, world: World
) -> None:
    alice, mallory = world.alice, world.mallory
    # Alice's item on her plan, its gift Mallory's (x2); Mallory's item on Alice's plan (x3)
    await world.forged_item(alice, alice, mallory, 2)
    await world.forged_item(mallory, alice, mallory, 3)
    # Mallory's list for Alice's person and occasion, with an item of hers (x4)
    theirs = await world.forged_list(mallory, alice, alice, "Mallory forged")
    await world.forged_item(mallory, mallory, mallory, 4, list_id=theirs)
    # Alice's lists: one for Mallory's (upcoming) occasion (x5), one for Mallory's person
    # and Alice's occasion (x6), each with an item of Alice's
    for person, occasion, n in ((None, mallory, 5), (mallory, alice, 6)):
        forged = await world.forged_list(alice, person, occasion, f"Alice forged {n}")
        await world.forged_item(alice, alice, alice, n, list_id=forged)
    assert sorted(await cross_family_references(world.database_url)) == [
        "gift_lists.occasion_id", "gift_lists.occasion_id", "gift_lists.person_id",
        "gift_lists.person_id", "list_items.gift_id", "list_items.list_id"]  # all of the above

    # Alice's person: her own item only. Upcoming spending: her plan's own item and the
    # items of her list for her occasion with Mallory's person (x6): 25.13 x 7. The list
    # for Mallory's occasion is for no occasion of hers.
    dash = (await both(app, plain, alice, DASHBOARD, served="compiled")).data["dashboard"]
    assert dash == {
        "people": [{"person": {"id": alice.ids["person"], "name": "Alice Mom"},
                    "pipeline": purchased(1), "spent": "25.13",
                    "spentByCurrency": [{"amount": "25.13", "currency": "EUR"}]}],
        "pipeline": purchased(4),  # her four items (the one with Mallory's gift too)
        "budget": "900.00", "spent": "175.91",
        "spentByCurrency": [{"amount": "175.91", "currency": "EUR"}]}
    summary = (await both(app, plain, alice, SUMMARIES)).data["occasions"]["edges"]
    assert summary == [{"node": {"name": "Alice Xmas", "summary": {
        "people": [{"person": {"name": "Alice Mom"}, "pipeline": {"purchased": 1},
                    "spent": "25.13", "spentByCurrency": [{"amount": "25.13", "currency": "EUR"}]}],
        "budget": "900.00", "spent": "175.91",
        "spentByCurrency": [{"amount": "175.91", "currency": "EUR"}]}}}]
    # Her two items on her plan are her person's history (the gift of one is not hers).
    history = (await both(app, plain, alice, HISTORY)).data["persons"]["edges"]
    assert [e["node"]["giftHistory"]["totalCount"] for e in history] == [2]
    lists = (await both(app, plain, alice, LISTS, served="compiled")).data["lists"]
    assert {e["node"]["name"]: (e["node"]["person"], e["node"]["occasion"],
                                e["node"]["items"]["totalCount"]) for e in lists["edges"]} == {
        "Alice plan": ({"name": "Alice Mom"}, {"name": "Alice Xmas"}, 2),
        "Alice forged 5": (None, None, 1),
        "Alice forged 6": (None, {"name": "Alice Xmas"}, 1)}

    # Mallory: her own item on her plan; her items on Alice's plan and on her list for
    # Alice's person and occasion count in her pipeline only.
    dash = (await both(app, plain, mallory, DASHBOARD, served="compiled")).data["dashboard"]
    assert dash == {
        "people": [{"person": {"id": mallory.ids["person"], "name": "Mallory Mom"},
                    "pipeline": purchased(1), "spent": "777.77",
                    "spentByCurrency": [{"amount": "777.77", "currency": "CHF"}]}],
        "pipeline": purchased(3), "budget": "900.00", "spent": "777.77",
        "spentByCurrency": [{"amount": "777.77", "currency": "CHF"}]}
    summary = (await both(app, plain, mallory, SUMMARIES)).data["occasions"]["edges"]
    assert summary == [{"node": {"name": "Mallory Xmas", "summary": {
        "people": [{"person": {"name": "Mallory Mom"}, "pipeline": {"purchased": 1},
                    "spent": "777.77",
                    "spentByCurrency": [{"amount": "777.77", "currency": "CHF"}]}],
        "budget": "900.00", "spent": "777.77",
        "spentByCurrency": [{"amount": "777.77", "currency": "CHF"}]}}}]
    history = (await both(app, plain, mallory, HISTORY)).data["persons"]["edges"]
    assert [e["node"]["giftHistory"]["totalCount"] for e in history] == [1]
    lists = (await both(app, plain, mallory, LISTS, served="compiled")).data["lists"]
    assert {e["node"]["name"]: (e["node"]["person"], e["node"]["occasion"],
                                e["node"]["items"]["totalCount"]) for e in lists["edges"]} == {
        "Mallory plan": ({"name": "Mallory Mom"}, {"name": "Mallory Xmas"}, 1),
        "Mallory forged": (None, None, 1)}

    for family, other in ((alice, mallory), (mallory, alice)):
        for query in (DASHBOARD, SUMMARIES, HISTORY, LISTS):
            assert_none_of(await family.account.client(query), other)


# --- relations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Forgery:
    """Alice's row pointing at Mallory's (`forge`), and a read of the relation."""

    name: str
    forge: Callable[[World], Awaitable[Any]]
    query: str
    # NOT_FOUND (a required relation: an error, and the data as the executor makes it of
    # a required field's error), or None: a nullable relation, null in `values(data)`
    expected: str | None
    values: Callable[[Any], list[Any]] = lambda data: []


def _update(table: str, column: str, key: str, other: str, *, where: str = "id") -> Any:
    async def forge(w: World) -> Any:
        value = w.mallory.pk[other]
        key_value = w.alice.pk[key]
        return await w.sql(f"UPDATE {table} SET {column} = $1 WHERE {where} = $2",  # noqa: S608
                           value, key_value)
    return forge


async def _item_on_their_list(w: World) -> None:
    await w.sql("UPDATE list_items SET list_id = $1, status = 'IDEA' WHERE id = $2",
                w.mallory.pk["list"], w.alice.pk["item"])


FORGERIES = [
    Forgery("item-gift", _update("list_items", "gift_id", "item", "gift"),
            "{ lists { edges { node { name items { edges { node { quantity"
            " gift { name price } } } } } } } }", "NOT_FOUND"),
    Forgery("item-gift-by-node", _update("list_items", "gift_id", "item", "gift"),
            "query($i: ID!) { node(id: $i) { ... on ListItem { quantity gift { name } } } }",
            "NOT_FOUND"),
    Forgery("item-list", _item_on_their_list,
            "{ dashboard { recentIdeas { quantity list { name } } } }", "NOT_FOUND"),
    Forgery("list-owner", _update("gift_lists", "owner_id", "list", "user"),
            "{ lists { edges { node { name owner { displayName } } } } }", "NOT_FOUND"),
    Forgery("list-person", _update("gift_lists", "person_id", "list", "person"),
            "{ lists { edges { node { name person { name } } } } }", None,
            lambda d: [e["node"]["person"] for e in d["lists"]["edges"]]),
    Forgery("list-occasion", _update("gift_lists", "occasion_id", "list", "occasion"),
            "{ lists { edges { node { name occasion { name date } } } } }", None,
            lambda d: [e["node"]["occasion"] for e in d["lists"]["edges"]]),
    Forgery("item-assignee", _update("list_items", "assignee_id", "item", "user"),
            "{ dashboard { people { person { name } } recentIdeas { id } }"
            " lists { edges { node { items { edges { node { assignee { displayName } } } } } } } }",
            None, lambda d: [i["node"]["assignee"] for e in d["lists"]["edges"]
                             for i in e["node"]["items"]["edges"]]),
    Forgery("event-actor", _update("events", "actor_id", "family", "user", where="family_id"),
            "{ events(first: 3) { edges { node { kind actor { displayName } } } } }", None,
            lambda d: [e["node"]["actor"] for e in d["events"]["edges"]]),
]


@pytest.mark.parametrize("forgery", FORGERIES, ids=[f.name for f in FORGERIES])
async def test_a_relation_to_another_familys_row_reads_alike_on_both_paths(
    app: Any, plain: httpx.AsyncClient, world: World, forgery: Forgery
) -> None:
    await forgery.forge(world)
    assert await cross_family_references(world.database_url)
    variables = {"i": world.alice.ids["item"]} if "$i" in forgery.query else None
    # A required relation: the compiled statement finds it missing, and the executor
    # answers (NOT_FOUND); a nullable one is null, compiled.
    served = "fallback" if forgery.expected else "compiled"
    r = await both(app, plain, world.alice, forgery.query, variables, served=served)
    assert_none_of(r, world.mallory)
    if forgery.expected is None:
        assert r.errors == []
        values = forgery.values(r.data)
        assert values, r.data
        assert all(v is None for v in values), r.data
    else:
        assert r.codes == [forgery.expected], r.body
        assert r.errors[0]["message"] in ("Gift not found", "List not found", "User not found")
    # Mallory's own reads are untouched: her plan holds her item only, and nothing of
    # Alice's is in them.
    mine = await both(app, plain, world.mallory, LISTS, served="compiled")
    assert mine.data["lists"]["edges"][0]["node"]["items"]["totalCount"] == 1
    assert_none_of(mine, world.alice)


# --- changes that reach other rows ---------------------------------------------------------

ACTIVITY = """{ events(first: 100) { edges { node { kind entityType entityId node { id
  ... on ListItem { quantity notes } ... on GiftList { name } ... on Comment { body } } } } } }"""
COMMENT = "INSERT INTO comments (id, family_id, target, target_id, author_id, body, created_at," \
          " updated_at) VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, now(), now()) RETURNING id"


@dataclass
class Change:
    """Alice's mutation, and Mallory's rows it reaches (beyond her family's own)."""

    mutation: str
    rows: dict[str, uuid.UUID]  # global ID -> key
    secrets: tuple[str, ...] = ("Mallory's secret",)
    left: tuple[str, ...] = ()  # forged references the change leaves as they are


async def _comment(w: World, target: str, target_id: uuid.UUID, author: uuid.UUID,
                   body: str = "Mallory's secret") -> tuple[str, uuid.UUID]:
    """Mallory's comment (its global ID and key)."""
    rows = await w.sql(COMMENT, w.mallory.pk["family"], target, target_id, author, body)
    pk = uuid.UUID(str(rows[0]["id"]))
    return encode_id("Comment", pk), pk


async def _their_rows_on_my_member(w: World) -> Change:
    """Mallory's item assigned to, and her comment written by, a member of Alice's, and an
    item of Alice's on Mallory's plan assigned to the member; Alice deletes the member
    (items unassigned, comments unsigned: of her family only, with no topic of Mallory's
    plan)."""
    member = (await w.alice.account.client(
        "mutation($i: RegisterUserInput!) { registerUser(input: $i) { id } }",
        {"i": {"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": "member password",
               "displayName": "Member"}})).data["registerUser"]["id"]
    pk = decode_id(member, "User")
    mine = await w.forged_item(w.alice, w.mallory, w.alice, 2, status="IDEA")
    await w.sql("UPDATE list_items SET assignee_id = $1 WHERE id = ANY($2)", pk,
                [w.mallory.pk["item"], mine])
    comment = await _comment(w, "PERSON", w.mallory.pk["person"], pk)
    return Change(f'mutation {{ deleteUser(id: "{member}") }}', dict([comment]),
                  left=("list_items.list_id",))


async def _their_item_on_my_list(w: World) -> Change:
    """Mallory's item, with her comment on it, on Alice's plan; Alice deletes the plan
    (its items and their comments go with it: of her family only)."""
    item = await w.forged_item(w.mallory, w.alice, w.mallory, 3)
    comment = await _comment(w, "LIST_ITEM", item, w.mallory.pk["user"])
    return Change(f'mutation {{ deleteList(id: "{w.alice.ids["list"]}") }}',
                  dict([comment, (encode_id("ListItem", item), item)]))


async def _their_comments_on_my_item_and_gift(w: World) -> Change:
    """Mallory's comments on Alice's item and gift; Alice takes the item off her plan and
    deletes the gift, as the family app's Remove does (their comments go with them: of
    her family only)."""
    on_item = await _comment(w, "LIST_ITEM", w.alice.pk["item"], w.mallory.pk["user"])
    on_gift = await _comment(w, "GIFT", w.alice.pk["gift"], w.mallory.pk["user"],
                             "Mallory's other secret")
    return Change(f'mutation {{ removeListItem(id: "{w.alice.ids["item"]}") '
                  f'deleteGift(id: "{w.alice.ids["gift"]}") }}', dict([on_item, on_gift]),
                  ("Mallory's secret", "Mallory's other secret"))


CHANGES = {"deleteUser": _their_rows_on_my_member, "deleteList": _their_item_on_my_list,
           "removeListItem-deleteGift": _their_comments_on_my_item_and_gift}


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_change_never_records_another_familys_rows(world: World, change: str) -> None:
    """A delete that also changes the rows pointing at what it deletes (unassigns items,
    unsigns or removes comments, removes items) changes and records only the family's
    own: nothing of the other family's reaches its activity log."""
    reached = await CHANGES[change](world)
    r = await world.alice.account.client(reached.mutation)
    assert r.errors == [], r.body
    activity = await world.alice.account.client(ACTIVITY)
    assert activity.errors == []
    assert_none_of(activity, world.mallory, *reached.rows, *reached.secrets)
    theirs = [*world.mallory.pk.values(), *reached.rows.values()]
    topics = [f"%{gid}%" for gid in (*world.mallory.ids.values(), *reached.rows)]
    assert await world.sql("SELECT seq FROM events WHERE family_id = $1 AND (entity_id = ANY($2)"
                           " OR payload::text LIKE '%Mallory%' OR topic LIKE ANY($3))",
                           world.alice.pk["family"], theirs, topics) == []
    assert await cross_family_references(world.database_url) == list(reached.left)
