"""Read queries compiled to one SQL statement (giftgraph.accel.compiled) answer exactly as
the executor does: the same data for every field the compiler translates, the same errors
(it leaves those to the executor), the caller's family only, and one statement however
long the lists are."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from graphql import GraphQLEnumType, GraphQLList, GraphQLNonNull, GraphQLScalarType
from sqlalchemy import text

from giftgraph.accel import sql as compiled
from giftgraph.accel.plans import PLANS
from giftgraph.accel.plans import CompiledRead as Plan
from giftgraph.accel.resolvers import DEFINITION, attribute_of
from giftgraph.accel.sql import ROOT_CONNECTIONS, ROOT_OBJECTS, TABLES
from giftgraph.app import create_app
from giftgraph.db import models as m
from giftgraph.db.session import OperationDb
from giftgraph.schema.schema import build_schema
from tests.conftest import GQL, Account, _dsn, make_settings, sign_up
from tests.integration.test_no_n_plus_one import count_statements

# The compiled reads against the executor: a fast path itself (giftgraph.accel), skipped
# with GIFTGRAPH_ACCEL=false.
pytestmark = pytest.mark.accel


@pytest.fixture
def settings(database_url: str) -> Any:
    # No result cache: every read below executes.
    return make_settings(database_url, result_cache_bytes=0)


@pytest.fixture
async def executor(database_url: str, alice: Account) -> AsyncIterator[GQL]:
    """The same service with the compiler off, on the same database, as Alice."""
    application = create_app(make_settings(database_url, result_cache_bytes=0,
                                           compile_reads=False))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield GQL(client, alice.token)


def outcomes(app: Any) -> dict[str, float]:
    counter = app.state.giftgraph.metrics.compiled_reads
    return {s.labels["outcome"]: s.value for metric in counter.collect() for s in metric.samples
            if s.name.endswith("_total")}


# ---------------------------------------------------------------- data


async def _family(c: GQL, database_url: str, tag: str) -> dict[str, Any]:
    """A family with every kind of value: nulls and not, unicode, quotes and control
    characters, money, dates, arrays, timestamps with and without a fraction."""
    odd = f"{tag} \"quoted\" back\\slash \u00e9\u4e2d\U0001f381 tab\there\nnew line"
    people = []
    for name, extra in ((f"{tag} Ann", {"relationship": odd, "birthday": "0001-01-01",
                                         "interests": ["kites", "caf\u00e9"],
                                         "notes": odd}),
                        (f"{tag} Bob", {}), (f"{tag} \u00c5sa", {"interests": []})):
        r = await c("mutation($i: PersonInput!) { createPerson(input: $i) { id } }",
                    {"i": {"name": name, **extra}})
        people.append(r.data["createPerson"]["id"])
    occasions = []
    # date.min and date.max: asyncpg stores them as -infinity and infinity.
    for day, extra in (("2030-05-01", {"description": odd, "budget": "150.50"}),
                       ("0001-01-01", {}), ("9999-12-31", {}), ("2030-05-01", {})):
        r = await c("mutation($i: OccasionInput!) { createOccasion(input: $i) { id } }",
                    {"i": {"name": f"{tag} Party", "kind": "BIRTHDAY", "date": day, **extra}})
        occasions.append(r.data["createOccasion"]["id"])
    lists = []
    for kind, extra in (("GIFT_PLAN", {"personId": people[0], "occasionId": occasions[0],
                                       "budget": "99.99"}),
                        ("IDEAS", {"personId": people[1]}), ("WISHLIST", {})):
        r = await c("mutation($i: GiftListInput!) { createList(input: $i) { id } }",
                    {"i": {"name": f"{tag} {kind}", "kind": kind, **extra}})
        lists.append(r.data["createList"]["id"])
    me = (await c("{ me { id } }")).data["me"]["id"]
    items = []
    gifts = [{"name": odd, "url": "https://www.example.com/kite?x=1", "price": "19.90",
              "currency": "EUR", "imageUrl": "https://img.example.com/k.png",
              "description": odd},
             {"name": f"{tag} plain gift"}, {"name": f"{tag} cheap", "price": "0.00"}]
    for n in range(7):
        r = await c("mutation($l: ID!, $i: ListItemInput!) { addListItem(listId: $l, input: $i)"
                    " { id } }", {"l": lists[n % 2], "i": {"gift": gifts[n % 3], "quantity": n + 1,
                                                           "notes": odd if n % 2 else None}})
        items.append(r.data["addListItem"]["id"])
    for n in (0, 0, 0, 2):  # comments counted per item (commentCount): 3, 0, 1, 0...
        assert (await c("mutation($i: CommentInput!) { addComment(input: $i) { id } }",
                        {"i": {"target": "LIST_ITEM", "targetId": items[n],
                               "body": f"{tag} comment"}})).data
    assert (await c("mutation($i: CommentInput!) { addComment(input: $i) { id } }",
                    {"i": {"target": "LIST", "targetId": lists[0], "body": "not an item's"}})).data
    steps = ("SELECTED", "PURCHASED", "RECEIVED")
    for n, last in ((0, 1), (1, 2), (2, 3), (6, 2), (3, 3)):  # one step at a time
        for status in steps[:last]:
            assert (await c("mutation($i: ID!, $s: ItemStatus!) { setListItemStatus(id: $i,"
                            " status: $s) { id } }", {"i": items[n], "s": status})).data
    assert (await c("mutation($i: ID!, $u: ID) { assignListItem(id: $i, userId: $u) { id } }",
                    {"i": items[1], "u": me})).data
    # Timestamps on a whole second and on a whole millisecond: isoformat() writes no
    # fraction for the first and all six digits for the second.
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        await conn.execute("UPDATE list_items SET created_at = date_trunc('second', created_at)"
                           " WHERE notes IS NULL")
        await conn.execute("UPDATE persons SET updated_at = date_trunc('milliseconds', "
                           "updated_at) + interval '120 milliseconds'")
        await conn.execute("UPDATE gift_lists SET created_at = date_trunc('second', created_at)")
        await conn.execute("UPDATE persons SET interests = interests || ARRAY['', 'a\"b\\c']"
                           " WHERE cardinality(interests) > 0")
    finally:
        await conn.close()
    return {"people": people, "occasions": occasions, "lists": lists, "items": items}


# ---------------------------------------------------------------- queries


def _selection(type_name: str, depth: int, page_info: bool = True) -> str:
    """Every field the compiler translates on `type_name`, relations `depth` levels deep;
    without `page_info`, each page is its edges alone (forwards, and backwards too where
    more levels follow)."""
    table = TABLES[type_name]
    parts = ["__typename", *table.scalars, *table.counts]
    if depth > 0:
        parts += [f"{name} {{ {_selection(target, depth - 1, page_info)} }}"
                  for name, (target, _) in table.relations.items()]
        pages = (("first", "first: 3"), ("last", "last: 2")) if depth > 1 \
            else (("first", "first: 3"),)
        parts += [f"{name}(first: 3) {{ {_connection(conn.node, depth - 1)} }}" if page_info
                  else " ".join(f"{key}: {name}({page}) {{ edges {{ cursor node {{ "
                                f"{_selection(conn.node, depth - 1, False)} }} }} }}"
                                for key, page in pages)
                  for name, conn in table.connections.items()]
    return " ".join(parts)


def _connection(node: str, depth: int) -> str:
    return ("__typename totalCount pageInfo { __typename hasNextPage hasPreviousPage "
            "startCursor endCursor } edges { __typename cursor "
            f"node {{ {_selection(node, depth)} }} }}")


# One query per root field: every compiled field, two levels deep (pages of 50: with every
# long text and URL of it, 100 lists cost over the bound; the family has fewer rows).
EVERYTHING = [f"{{ {name} {{ {_selection(type_name, 2)} }} }}"
              for name, (type_name, _) in ROOT_OBJECTS.items()] \
    + [f"{{ {name}(first: 50) {{ {_connection(conn.node, 2)} }} }}"
       for name, conn in ROOT_CONNECTIONS.items()]

# The same, each page without pageInfo (and backwards too): a page's rows read in order
# (no row past it, no numbering), with their relations and theirs.
EDGES = [f"{{ {name}({page}) {{ edges {{ cursor node {{ "
         f"{_selection(conn.node, 2, page_info=False)} }} }} }} }}"
         for name, conn in ROOT_CONNECTIONS.items() for page in ("first: 50", "last: 5")]

MONEY = "spentByCurrency { __typename amount currency }"
DASHBOARD = """{ dashboard { __typename budget spent """ + MONEY + """
  pipeline { __typename idea selected purchased received }
  people { __typename spent """ + MONEY + """ person { id name }
    pipeline { idea selected purchased received } }
  nextOccasions { """ + _selection("Occasion", 1) + """ }
  recentIdeas { """ + _selection("ListItem", 1) + """ }
  activity { """ + _selection("Event", 1) + """ } } }"""

NESTED = """{ lists(first: 20) { edges { node { name person { name } items(first: 20) {
  edges { node { status gift { name price store } assignee { displayName } } } } } } } }"""


async def same(compiled_client: GQL, executor: GQL, query: str,
               variables: dict[str, Any] | None = None) -> dict[str, Any]:
    a = await compiled_client(query, variables)
    b = await executor(query, variables)
    for error in a.errors + b.errors:
        error["extensions"].pop("traceId")  # per request
    assert a.body == b.body
    assert a.status == b.status
    return a.body


# ---------------------------------------------------------------- tests


def test_the_tables_match_the_schema() -> None:
    """Every field the compiler translates is a field of the GraphQL type, and a scalar
    where the compiler writes one; enums are written by their stored value, which must be
    their GraphQL name."""
    schema = build_schema()._schema
    for type_name, table in TABLES.items():
        gtype = schema.type_map[type_name]
        for name in table.scalars:
            ftype = gtype.fields[name].type
            while isinstance(ftype, GraphQLNonNull | GraphQLList):
                ftype = ftype.of_type
            assert isinstance(ftype, GraphQLScalarType | GraphQLEnumType), (type_name, name)
            assert not gtype.fields[name].args
        for name, (target, _) in table.relations.items():
            ftype = gtype.fields[name].type
            assert getattr(ftype, "of_type", ftype).name == target
        for name, conn in table.connections.items():
            assert schema.type_map[f"{conn.node}Connection"] is not None
            assert name in gtype.fields
        for name in table.counts:
            assert str(gtype.fields[name].type) == "Int!", (type_name, name)
            assert not gtype.fields[name].args
    # What the compiler writes for a field is what the field's resolver would return only
    # while the field reads its attribute (Strawberry's default resolver, no arguments,
    # extensions or permissions) and a relation or connection stays a plain resolver.
    for type_name, table in TABLES.items():
        gtype = schema.type_map[type_name]
        for name, (column, kind) in table.scalars.items():
            attribute = attribute_of(gtype.fields[name])
            assert attribute is not None, (type_name, name)
            assert kind in (compiled.ID, compiled.EVENT_ID) or attribute == column, \
                (type_name, name)
        for name in [*table.relations, *table.connections]:
            definition = gtype.fields[name].extensions[DEFINITION]
            assert not definition.permission_classes, (type_name, name)
            assert not definition.extensions, (type_name, name)
    for enum_type in (m.Role, m.OccasionKind, m.ListKind, m.ItemStatus):
        assert all(member.name == member.value for member in enum_type)


async def test_every_compiled_field_reads_as_the_executor_does(
    app: Any, alice: Account, executor: GQL, database_url: str
) -> None:
    await _family(alice.client, database_url, "A")
    before = outcomes(app)
    data = {}
    for query in EVERYTHING:
        data.update((await same(alice.client, executor, query))["data"])
    for query in EDGES:
        body = await same(alice.client, executor, query)
        assert "errors" not in body, (query, body)
        assert next(iter(body["data"].values()))["edges"], query
    assert outcomes(app).get("compiled", 0) == before.get("compiled", 0) + len(EVERYTHING) \
        + len(EDGES)
    assert outcomes(app).get("fallback", 0) == 0
    assert len(data["lists"]["edges"]) == 3
    assert data["lists"]["totalCount"] == 3
    assert data["me"]["family"]["name"] == "Alice's family"
    plan_items = next(e["node"]["items"] for e in data["lists"]["edges"]
                      if e["node"]["kind"] == "GIFT_PLAN")
    assert plan_items["totalCount"] == 4
    assert len(plan_items["edges"]) == 3
    assert plan_items["pageInfo"]["hasNextPage"] is True


async def _no_counts(client: GQL, executor: GQL) -> None:
    """Pipelines with no count selected are still one object (a grouped query)."""
    query = """query($s: Boolean!) { dashboard { pipeline { __typename idea @skip(if: $s) }
      people { pipeline { received @skip(if: $s) } } } }"""
    for skip in (True, False):
        await same(client, executor, query, {"s": skip})


async def test_the_dashboard_reads_as_the_executor_does(
    app: Any, alice: Account, executor: GQL, database_url: str
) -> None:
    before = outcomes(app)
    empty = (await same(alice.client, executor, DASHBOARD))["data"]["dashboard"]
    assert outcomes(app).get("compiled", 0) == before.get("compiled", 0) + 1
    await _no_counts(alice.client, executor)
    assert empty["spent"] == "0.00"
    assert empty["spentByCurrency"] == []
    assert empty["budget"] is None
    assert empty["people"] == []
    await _family(alice.client, database_url, "A")
    before = outcomes(app)
    data = (await same(alice.client, executor, DASHBOARD))["data"]["dashboard"]
    assert outcomes(app).get("compiled", 0) == before.get("compiled", 0) + 1
    assert outcomes(app).get("fallback", 0) == 0
    assert [p["person"]["name"] for p in data["people"]] == ["A Ann", "A Bob", "A \u00c5sa"]
    assert data["budget"] == "150.50"
    # On the list for the party: 7 x 19.90 EUR, purchased, and 3 x 0.00 USD, received. The
    # family's currency is USD: EUR is not added to `spent`.
    assert data["spent"] == "0.00"
    assert data["spentByCurrency"] == [
        {"__typename": "Money", "amount": "139.30", "currency": "EUR"},
        {"__typename": "Money", "amount": "0.00", "currency": "USD"}]
    assert [p["spentByCurrency"] for p in data["people"]] == [
        [{"__typename": "Money", "amount": "139.30", "currency": "EUR"},
         {"__typename": "Money", "amount": "0.00", "currency": "USD"}],
        [{"__typename": "Money", "amount": "79.60", "currency": "EUR"},
         {"__typename": "Money", "amount": "0.00", "currency": "USD"}],
        []]
    assert [p["spent"] for p in data["people"]] == ["0.00", "0.00", "0.00"]
    assert data["pipeline"] == {"__typename": "Pipeline", "idea": 2, "selected": 1,
                                "purchased": 2, "received": 2}
    assert [o["date"] for o in data["nextOccasions"]] == ["2030-05-01", "2030-05-01",
                                                          "9999-12-31"]
    assert len(data["recentIdeas"]) == 2
    assert len(data["activity"]) == 20
    await _no_counts(alice.client, executor)
    # An event's `node` is the executor's (a snapshot of the row, as it was).
    await same(alice.client, executor,
               "{ dashboard { spent activity { kind node { id ... on ListItem { status } } } } }")
    assert outcomes(app).get("executor", 0) == before.get("executor", 0) + 1
    assert outcomes(app).get("fallback", 0) == 0


async def test_pages_filters_aliases_fragments_and_directives(
    app: Any, alice: Account, executor: GQL, database_url: str
) -> None:
    await _family(alice.client, database_url, "A")
    page = """query($first: Int, $after: String, $last: Int, $before: String) {
      lists(first: $first, after: $after, last: $last, before: $before) {
        totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
        edges { cursor node { name } } } }"""
    # Forward, page by page, to the end; then backward from there.
    seen, after = [], None
    while True:
        d = (await same(alice.client, executor, page, {"first": 1, "after": after}))["data"]
        seen += [e["node"]["name"] for e in d["lists"]["edges"]]
        after = d["lists"]["pageInfo"]["endCursor"]
        if not d["lists"]["pageInfo"]["hasNextPage"]:
            break
    assert len(seen) == 3
    back, before = [], None
    while True:
        d = (await same(alice.client, executor, page, {"last": 2, "before": before}))["data"]
        back = [e["node"]["name"] for e in d["lists"]["edges"]] + back
        before = d["lists"]["pageInfo"]["startCursor"]
        if not d["lists"]["pageInfo"]["hasPreviousPage"]:
            break
    assert back == seen
    for variables in ({"first": 0}, {"first": 1000}, {"last": 0}, {"last": 1},
                      {"first": 2, "before": after}):
        await same(alice.client, executor, page, variables)
    # Pages without pageInfo (their rows alone), backward from a cursor, edges twice
    rows_only = """query($first: Int, $after: String, $last: Int, $before: String) {
      lists(first: $first, after: $after, last: $last, before: $before) {
        totalCount edges { cursor node { name } } again: edges { node { kind } } } }"""
    for variables in ({"last": 2, "before": after}, {"first": 1, "after": after},
                      {"last": 1, "after": before}, {"first": 2, "before": after}, {"last": 0}):
        await same(alice.client, executor, rows_only, variables)

    items = """query($s: ItemStatus, $k: ListKind) { lists(kind: $k) { edges { node {
      items(status: $s) { totalCount edges { cursor node { status quantity } } }
      newest: items(last: 1) { edges { node { quantity } } } } } } }"""
    for variables in ({"s": "IDEA"}, {"s": "RECEIVED", "k": "GIFT_PLAN"}, {"k": "WISHLIST"}):
        await same(alice.client, executor, items, variables)
    occasions = """query($k: OccasionKind, $f: Date, $t: Date) {
      occasions(kind: $k, from: $f, to: $t) { totalCount edges { node { name date budget } } } }"""
    for variables in ({"k": "BIRTHDAY"}, {"k": "HOLIDAY"}, {"f": "2030-05-01", "t": "2030-05-01"},
                      {"f": "2031-01-01"}):
        await same(alice.client, executor, occasions, variables)

    shapes = """query($with: Boolean!, $without: Boolean!) {
      first: lists(first: 1) { ...L }
      ... on Query { me { ... on User { displayName } role @include(if: $with) } }
      again: lists(first: 1) { edges { node { id @skip(if: $without) name @include(if: $with) } } }
      __typename
    }
    fragment L on GiftListConnection { edges { node { kind ...Items } } }
    fragment Items on GiftList { items(first: 2) { edges { node { gift { ...G } } } } }
    fragment G on Gift { n: name name p: price }"""
    before = outcomes(app)
    for flags in ({"with": True, "without": False}, {"with": False, "without": True}):
        await same(alice.client, executor, shapes, flags)
    assert outcomes(app).get("compiled", 0) == before.get("compiled", 0) + 2

    # Connections with no page rows selected, on empty and full tables.
    bare = """{ a: lists { totalCount } b: lists(first: 1) { __typename }
      c: lists { pageInfo { hasPreviousPage } } e: users(first: 0) { totalCount edges { cursor } }
      f: gifts { __typename } g: lists(kind: WISHLIST) { edges { node { items { totalCount } } } }
      h: lists(first: 1) { edges { node { items(status: RECEIVED) { __typename } } } } }"""
    await same(alice.client, executor, bare)
    assert outcomes(app).get("fallback", 0) == 0


def _random_selection(rng: random.Random, type_name: str, depth: int) -> str:
    """Some of the fields the compiler translates on `type_name`, in random order, with
    aliases, repeats, `__typename`, and relations and pages below while `depth` lasts."""
    table = TABLES[type_name]
    fields = [*table.scalars, *table.counts, "__typename"]
    picked = rng.sample(fields, rng.randint(1, min(4, len(fields))))
    parts = [f"{'a_' + name + ': ' if rng.random() < 0.2 else ''}{name}" for name in picked]
    if depth > 0:
        for name, (target, _) in table.relations.items():
            if rng.random() < 0.5:
                parts.append(f"{name} {{ {_random_selection(rng, target, depth - 1)} }}")
        for name, conn in table.connections.items():
            if rng.random() < 0.6:
                parts.append(f"{name}{_random_args(rng, conn)} "
                             f"{{ {_random_page(rng, conn.node, depth - 1)} }}")
    rng.shuffle(parts)
    return " ".join(parts)


def _random_args(rng: random.Random, conn: compiled.ConnectionTable) -> str:
    args = []
    size = rng.choice([None, 0, 1, 2, 3, 150])
    if size is not None:
        args.append(f"{rng.choice(['first', 'last'])}: {size}")
    values = {"status": ["IDEA", "SELECTED", "PURCHASED", "RECEIVED", "null"],
              "kind": ["GIFT_PLAN", "IDEAS", "WISHLIST", "BIRTHDAY", "HOLIDAY", "null"],
              "from": ['"2030-05-01"', '"0001-01-01"'], "to": ['"2030-05-01"'],
              "topic": ['"family"', '""', '"list-items:all"', '"nothing"']}
    for name in conn.filters:
        if rng.random() < 0.4:
            choice = rng.choice(values[name])
            if name == "kind" and conn.node == "Occasion" and choice in ("GIFT_PLAN", "IDEAS",
                                                                          "WISHLIST"):
                choice = "OTHER"
            if name == "kind" and conn.node == "GiftList" and choice in ("BIRTHDAY", "HOLIDAY"):
                choice = "IDEAS"
            args.append(f"{name}: {choice}")
    return f"({', '.join(args)})" if args else ""


def _random_page(rng: random.Random, node: str, depth: int) -> str:
    parts = []
    if rng.random() < 0.5:
        parts.append("totalCount")
    if rng.random() < 0.5:
        info = rng.sample(["hasNextPage", "hasPreviousPage", "startCursor", "endCursor",
                           "__typename"], rng.randint(1, 3))
        parts.append(f"pageInfo {{ {' '.join(info)} }}")
    edge = ["cursor"] if rng.random() < 0.4 else []
    if not parts or rng.random() < 0.8:
        edge.append(f"node {{ {_random_selection(rng, node, depth)} }}")
    if edge:
        parts.append(f"edges {{ {' '.join(edge)} }}")
    return " ".join(parts)


async def test_random_queries_read_as_the_executor_does(
    app: Any, alice: Account, executor: GQL, database_url: str
) -> None:
    """Queries drawn at random (a fixed seed) from everything the compiler translates:
    each answer equals the executor's, and none needed the fallback."""
    await _family(alice.client, database_url, "A")
    rng = random.Random(20261123)
    roots = [*ROOT_CONNECTIONS, *ROOT_OBJECTS]
    before = outcomes(app)
    refused = 0
    for n in range(60):
        parts = []
        for index, root in enumerate(rng.sample(roots, rng.randint(1, 2))):
            alias = f"r{index}: " if rng.random() < 0.3 else ""
            if root in ROOT_OBJECTS:
                selection = _random_selection(rng, ROOT_OBJECTS[root][0], 2)
                parts.append(f"{alias}{root} {{ {selection} }}")
            else:
                conn = ROOT_CONNECTIONS[root]
                parts.append(f"{alias}{root}{_random_args(rng, conn)} "
                             f"{{ {_random_page(rng, conn.node, 2)} }}")
        query = "{ " + " ".join(parts) + " }"
        body = await same(alice.client, executor, query)
        if [e["extensions"]["code"] for e in body.get("errors", [])] == ["QUERY_TOO_COMPLEX"]:
            refused += 1  # the draws follow TABLES: a new field draws other queries
            continue
        assert "errors" not in body, (n, query, body)
    assert refused <= 3
    after = outcomes(app)
    assert after.get("fallback", 0) == 0
    # the rest too large, or refused
    assert after.get("compiled", 0) - before.get("compiled", 0) >= 55 - refused


async def test_errors_and_untranslated_fields_are_the_executors(
    app: Any, alice: Account, executor: GQL, database_url: str
) -> None:
    await _family(alice.client, database_url, "A")
    other_cursor = (await alice.client("{ gifts(first: 1) { pageInfo { endCursor } } }")
                    ).data["gifts"]["pageInfo"]["endCursor"]
    before = outcomes(app)
    for query, code in (
        ("{ lists(first: -1) { totalCount } }", "BAD_USER_INPUT"),
        ("{ lists(first: 1, last: 1) { totalCount } }", "BAD_USER_INPUT"),
        ('{ lists(after: "not a cursor") { totalCount } }', "BAD_USER_INPUT"),
        (f'{{ lists(after: "{other_cursor}") {{ totalCount }} }}', "BAD_USER_INPUT"),
        ('{ lists(personId: "bm9wZQ") { totalCount } }', "NOT_FOUND"),
    ):
        body = await same(alice.client, executor, query)
        assert [e["extensions"]["code"] for e in body["errors"]] == [code], body
    # Fields the compiler does not translate: the executor serves the whole operation.
    for query in ("{ lists { edges { node { name person { giftHistory { totalCount } } } } } }",
                  "{ lists { edges { node { occasion { summary { spent } } } } } }",
                  '{ persons(search: "ann") { edges { node { name } } } }',
                  "{ lists { totalCount } events { edges { node { node { id } } } } }",
                  "{ __schema { queryType { name } } }"):
        await same(alice.client, executor, query)
    after = outcomes(app)
    assert after.get("compiled", 0) == before.get("compiled", 0)
    assert after.get("executor", 0) == before.get("executor", 0) + 10

    anonymous = alice.client.as_(None)
    r = await anonymous(NESTED)
    assert r.codes == ["UNAUTHENTICATED"]


async def test_only_the_callers_family_and_one_statement_however_long(
    app: Any, gql: GQL, alice: Account, executor: GQL, database_url: str
) -> None:
    mallory = await sign_up(gql, "Mallory's family")
    await _family(alice.client, database_url, "A")
    await _family(mallory.client, database_url, "M")
    for who in (alice, mallory):
        data = {}
        for query in EVERYTHING:
            data.update((await who.client(query)).data)
        names = [e["node"]["name"] for e in data["persons"]["edges"]] \
            + [e["node"]["name"] for e in data["lists"]["edges"]]
        mine = "A" if who is alice else "M"
        assert names
        assert all(n.startswith(mine) for n in names), names
        assert data["users"]["totalCount"] == 1
    # Alice's cursor in Mallory's query positions a page of Mallory's rows, nothing more.
    cursor = (await alice.client("{ lists(first: 1) { pageInfo { endCursor } } }")
              ).data["lists"]["pageInfo"]["endCursor"]
    d = (await mallory.client("query($c: String) { lists(after: $c) { edges { node { name } } } }",
                              {"c": cursor})).data
    assert all(e["node"]["name"].startswith("M") for e in d["lists"]["edges"])

    # A row of Alice's that names Mallory's (a key nothing else checks): the joined
    # relation is null, as the executor has it, and nothing of Mallory's is read out.
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        await conn.execute(
            "UPDATE gift_lists SET person_id = (SELECT p.id FROM persons p JOIN families f "
            "ON f.id = p.family_id WHERE f.name = 'Mallory''s family' LIMIT 1) "
            "WHERE family_id = (SELECT family_id FROM users WHERE email = $1)", alice.email)
        await conn.execute(
            "UPDATE list_items SET assignee_id = (SELECT u.id FROM users u JOIN families f "
            "ON f.id = u.family_id WHERE f.name = 'Mallory''s family') "
            "WHERE family_id = (SELECT family_id FROM users WHERE email = $1)", alice.email)
    finally:
        await conn.close()
    body = await same(alice.client, executor, NESTED)
    lists = body["data"]["lists"]["edges"]
    assert lists
    assert all(e["node"]["person"] is None for e in lists), lists
    items = [i["node"] for e in lists for i in e["node"]["items"]["edges"]]
    assert items
    assert all(i["assignee"] is None for i in items), items
    assert "Mallory" not in str(body)
    assert "M " not in str(body)

    counts = {}
    for n in (1, 3):
        with count_statements(app) as statements:
            r = await alice.client(NESTED.replace("first: 20) { edges",
                                                  f"first: {n}) {{ edges", 1))
        assert len(r.data["lists"]["edges"]) == n
        counts[n] = len(statements)
    assert counts == {1: 2, 3: 2}  # the caller's row, then the whole read
    await same(alice.client, executor, NESTED)


async def test_a_failing_statement_falls_back_to_the_executor(
    app: Any, alice: Account, executor: GQL, database_url: str
) -> None:
    """The compiled statement fails in PostgreSQL (here: a plan replaced by one that
    divides by zero): the operation's transaction is recovered and the executor answers."""
    await _family(alice.client, database_url, "A")
    expected = (await executor(NESTED)).body
    assert (await alice.client(NESTED)).body == expected
    keys = [k for k in PLANS.plans if k[0] == NESTED]
    assert keys
    for key in keys:
        PLANS.plans[key] = Plan(text("SELECT (1 / 0)::text, false, 0"), {}, "lists")
    try:
        before = outcomes(app)
        assert (await alice.client(NESTED)).body == expected
        assert outcomes(app).get("fallback", 0) == before.get("fallback", 0) + 1
    finally:
        for key in keys:
            PLANS.plans.pop(key, None)
    assert (await alice.client(NESTED)).body == expected


async def test_a_statement_that_timed_out_is_not_run_again(app: Any, alice: Account) -> None:
    """A compiled statement canceled (here by itself: 57014, as `statement_timeout`
    cancels one) is answered with its error, retryable as any statement that ran out of
    time; the executor does not read it all again."""
    from giftgraph.schema.extensions import TIMED_OUT

    query = "{ lists(first: 5) { edges { node { name } } } }"
    assert "errors" not in (await alice.client(query)).body
    keys = [k for k in PLANS.plans if k[0] == query]
    assert keys
    for key in keys:
        PLANS.plans[key] = Plan(text("SELECT CASE WHEN pg_cancel_backend(pg_backend_pid()) "
                                     "THEN pg_sleep(5)::text END, false, 0"), {}, "lists")
    try:
        before = outcomes(app)
        with count_statements(app) as statements:
            body = (await alice.client(query)).body
        assert body["data"] is None
        (error,) = body["errors"]
        assert error["path"] == ["lists"]
        assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
        assert "statement" not in error["message"].lower()  # nothing of the SQL or its cause
        assert error["message"] == TIMED_OUT
        assert error["extensions"]["retryable"] is True
        after = outcomes(app)
        assert after.get("timeout", 0) == before.get("timeout", 0) + 1
        assert after.get("fallback", 0) == before.get("fallback", 0)
        assert not [s for s in statements if "gift_lists" in s]  # no executor's read
    finally:
        for key in keys:
            PLANS.plans.pop(key, None)
    assert "errors" not in (await alice.client(query)).body


async def test_an_answer_over_the_bound_leaves_postgresql_as_its_size(
    app: Any, alice: Account, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over `max_response_bytes` the statement gives back its JSON's size, not the JSON
    (a 30 MB answer took 150-300 ms of the loop to take in and refuse): the answer is
    QUERY_TOO_COMPLEX with that size, and the executor does not run the read again."""
    await _family(alice.client, database_url, "A")
    monkeypatch.setattr(app.state.giftgraph.settings, "max_response_bytes", 16 * 1024)
    rows: list[Any] = []
    fetch = OperationDb.fetch

    async def spy(self: OperationDb, prepared: Any, params: Any) -> list[Any]:
        found = await fetch(self, prepared, params)
        rows.extend(found)
        return found

    monkeypatch.setattr(OperationDb, "fetch", spy)
    for n in range(2):
        assert (await alice.client("mutation($i: GiftInput!) { createGift(input: $i) { id } }",
                                   {"i": {"name": f"long {n}", "description": "x" * 5_000}})
                ).data
    one = "gifts(first: 100) { edges { node { name description } } }"
    small = await alice.client(f"{{ a: {one} }}")
    assert "errors" not in small.body
    assert rows[-1][0] is not None
    assert not rows[-1][1]
    before = outcomes(app)
    big = await alice.client(f"{{ a0: {one} a1: {one} }}")
    assert big.body.get("data") is None, str(big.body)[:400]
    (error,) = big.body["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert error.get("path") == ["a0"], big.body
    body, missing, length = rows[-1]
    assert body is None
    assert not missing
    envelope = len('{"data":}')  # the answer is its data's JSON in `{"data":...}`
    assert length > 16 * 1024 - envelope
    assert f"The answer is {length + envelope:,} bytes" in error["message"]
    after = outcomes(app)
    assert after.get("compiled", 0) == before.get("compiled", 0) + 1
    assert after.get("fallback", 0) == before.get("fallback", 0)
    # The size said is the answer's (`{"data":...}`, as the executor's path weighs it),
    # the bytes it is once allowed.
    monkeypatch.setattr(app.state.giftgraph.settings, "max_response_bytes", 1 << 20)
    allowed = await alice.client.http.post(
        "/graphql", json={"query": f"{{ a0: {one} a1: {one} }}"},
        headers={"Authorization": f"Bearer {alice.token}"})
    assert allowed.json()["data"]["a0"]
    size = len(allowed.content)
    assert f"The answer is {size:,} bytes" in error["message"]
    # And the bound is exact: an answer of as many bytes as allowed goes out, one more not.
    for limit, refused in ((size, False), (size - 1, True)):
        monkeypatch.setattr(app.state.giftgraph.settings, "max_response_bytes", limit)
        counted = outcomes(app).get("compiled", 0)
        answer = await alice.client(f"{{ a0: {one} a1: {one} }}")
        assert outcomes(app).get("compiled", 0) == counted + 1  # the statement's answer
        if refused:
            assert answer.codes == ["QUERY_TOO_COMPLEX"], answer.body
            assert f"The answer is {size:,} bytes" in answer.errors[0]["message"]
        else:
            assert answer.body == allowed.json()


async def test_a_missing_root_object_is_the_executors(app: Any, alice: Account) -> None:
    """`me` may not be null: if the statement finds no row for it (the account deleted
    between authentication and the read; here a plan that says so), the executor runs
    the operation and reports what it finds."""
    query = "{ me { displayName } }"
    assert (await alice.client(query)).data == {"me": {"displayName": "Admin"}}
    keys = [k for k in PLANS.plans if k[0] == query]
    assert keys
    for key in keys:
        PLANS.plans[key] = Plan(text("""SELECT '{"me": null}', true, 12"""), {}, "me")
    try:
        before = outcomes(app)
        assert (await alice.client(query)).data == {"me": {"displayName": "Admin"}}
        assert outcomes(app).get("fallback", 0) == before.get("fallback", 0) + 1
    finally:
        for key in keys:
            PLANS.plans.pop(key, None)


async def test_plans_are_kept_for_small_documents_only(app: Any, alice: Account) -> None:
    """Plans are kept by document text and variables: a huge document (a long string
    argument) is compiled each time and never held, so the plans' memory stays bounded."""
    small = "{ lists(first: 1) { totalCount } }"
    huge = '{ lists(after: "' + "x" * compiled.MAX_KEY_CHARS + '") { totalCount } }'
    assert (await alice.client(small)).data["lists"]["totalCount"] == 0
    assert (await alice.client(huge)).codes == ["BAD_USER_INPUT"]
    kept = {key[0] for key in PLANS.plans}
    assert small in kept
    assert huge not in kept


async def test_a_statement_too_large_is_the_executors(
    app: Any, alice: Account, executor: GQL, database_url: str
) -> None:
    """A few kilobytes of document (aliases of a fragment) can compile to hundreds of
    kilobytes of SQL, which PostgreSQL would keep prepared per connection: over
    MAX_SQL_CHARS the executor serves it. The benchmark's nested read stays far below."""
    await _family(alice.client, database_url, "A")
    fragment = ("fragment F on GiftListConnection { totalCount edges { cursor node { "
                + _selection("GiftList", 2) + " } } }")
    aliases = " ".join(f"l{n}: lists(first: {n + 1}) {{ ...F }}" for n in range(8))
    big = "{ " + aliases + " } " + fragment
    before = outcomes(app)
    await same(alice.client, executor, big)
    assert outcomes(app).get("executor", 0) == before.get("executor", 0) + 1
    await same(alice.client, executor, NESTED)
    assert outcomes(app).get("compiled", 0) == before.get("compiled", 0) + 1
    sizes = [len(str(plan.statement)) for plan in PLANS.plans.values() if plan is not None]
    assert sizes
    assert max(sizes) <= compiled.MAX_SQL_CHARS


# The family app's list page (web/static/app/items.js), as it asks.
LIST_PAGE = """query($id: ID!) { node(id: $id) { ... on GiftList { id name kind budget
  person { id name } occasion { id name date }
  items(first: 100) { edges { node { id status quantity notes commentCount
    assignee { id displayName } gift { id name url store price currency } } } } } } }"""


async def test_node_reads_as_the_executor_does(
    app: Any, gql: GQL, alice: Account, executor: GQL, database_url: str
) -> None:
    """`node(id)` of every type the tables describe compiles (one statement); an ID that
    is not found (another family's, deleted, malformed) or an Event's is the executor's,
    with its NOT_FOUND."""
    await _family(alice.client, database_url, "A")
    mallory = await sign_up(gql, "Mallory's family")
    ids: dict[str, list[str]] = {}
    for query in EVERYTHING:
        for row in _ids((await alice.client(query)).data):
            ids.setdefault(row["__typename"], []).append(row["id"])
    ids.pop("Event", None)
    assert set(ids) == set(TABLES) - {"Event"}
    before = outcomes(app)
    for type_name, found in ids.items():
        selection = _selection(type_name, 1)
        query = f"query($id: ID!) {{ node(id: $id) {{ __typename id ... on {type_name} {{ " \
                f"{selection} }} }} }}"
        for gid in found[:3]:
            with count_statements(app) as statements:
                body = await same(alice.client, executor, query, {"id": gid})
            assert body["data"]["node"]["id"] == gid
            assert len(statements) == 2, type_name  # the caller's row, then the read
    compiled = outcomes(app).get("compiled", 0) - before.get("compiled", 0)
    assert compiled == sum(min(3, len(v)) for v in ids.values())

    lists = list(dict.fromkeys(ids["GiftList"]))
    counts = []
    for gid in lists:
        with count_statements(app) as statements:
            body = await same(alice.client, executor, LIST_PAGE, {"id": gid})
        assert len(statements) == 2
        counts += [i["node"]["commentCount"] for i in body["data"]["node"]["items"]["edges"]]
    assert sorted(counts, reverse=True)[:3] == [3, 1, 0]  # the item comments, not the list's

    # Not found, in every way: the executor answers (NOT_FOUND), as without the compiler.
    theirs = (await mallory.client("{ me { id } }")).data["me"]["id"]
    event = (await alice.client("{ events(first: 1) { edges { node { id } } } }")
             ).data["events"]["edges"][0]["node"]["id"]
    await alice.client("mutation($id: ID!) { deleteList(id: $id) }", {"id": lists[1]})
    for gid in (theirs, lists[1], "not-an-id", "R2lmdDo", event):
        body = await same(alice.client, executor, LIST_PAGE, {"id": gid})
        assert body["data"] == {"node": None} if gid != event else body["data"]["node"] == {}
        if gid != event:
            assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]


def _ids(value: Any) -> list[dict[str, Any]]:
    """Every object with a `__typename` and an `id` in a response's data."""
    if isinstance(value, list):
        return [row for v in value for row in _ids(v)]
    if not isinstance(value, dict):
        return []
    found = [value] if "__typename" in value and "id" in value else []
    return found + [row for v in value.values() for row in _ids(v)]


async def test_a_read_of_no_table_runs_no_statement(app: Any, alice: Account) -> None:
    """`{ __typename }` (a client's ping) reads nothing: the caller's row is its only
    statement (it was compiled into a second, `SELECT '{"__typename":"Query"}'`)."""
    for query in ("{ __typename }", "{ a: __typename b: __typename }"):
        with count_statements(app) as statements:
            r = await alice.client(query)
        assert not r.errors
        assert set(r.data.values()) == {"Query"}
        assert len(statements) == 1, statements
