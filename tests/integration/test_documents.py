"""A document's bounds (giftgraph.admission.documents): measured in one linear pass before
validation, fragments counted per spread, over HTTP and over a socket; the mutation budget
charged per root field, fragments expanded; no suggestion in production."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLList,
    GraphQLNonNull,
    get_introspection_query,
    get_named_type,
    is_leaf_type,
    parse,
)

from giftgraph import validation
from giftgraph.admission.documents import (
    FIXED_LISTS,
    LONG_TEXT,
    UNBOUNDED_LISTS,
    Measured,
    measure,
    over_limit,
)
from giftgraph.app import create_app
from giftgraph.schema.schema import build_schema
from tests.conftest import GQL, Account, make_settings, sign_up
from tests.integration.test_live import WsClient
from tests.support import serving


def doubling(k: int, on: str = "Query", leaf: str = "__typename") -> str:
    """F0 selects one field, each F(i) spreads F(i-1) twice: 2^k fields in ~10k tokens."""
    fragments = [f"fragment F0 on {on} {{ {leaf} }}"] + [
        f"fragment F{i} on {on} {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, k + 1)]
    return " ".join(fragments)


def refused_metric(text: str, bound: str) -> float:
    line = f'giftgraph_admission_refused_total{{bound="{bound}"}} '
    return float(next(x for x in text.splitlines() if x.startswith(line))[len(line):])


@pytest.mark.parametrize("k", [21, 40])
def test_the_measure_is_linear_in_the_document(k: int) -> None:
    """Each selection of the document is visited once, however often a fragment is spread;
    every field of the expansion is counted (`__typename` too)."""
    schema = build_schema()._schema
    found = measure(schema, parse(f"{{ ...F{k} }} " + doubling(k)), None, {}, 20, 100)
    assert found.visits == 2 * k + 2  # the operation's spread, F0's field, two per F(i)
    assert found.worst.cost == 2 ** k
    nested = measure(schema, parse(f"{{ me {{ ...F{k} }} }} " + doubling(k, "User", "id")),
                     None, {}, 20, 100)
    assert nested.visits == 2 * k + 3
    assert nested.worst.cost == 1 + 2 ** k


def test_a_free_text_field_costs_the_names_its_longest_value_holds() -> None:
    """`LONG_TEXT`: a description counts 25, and the table names every text field that
    validation.py lets be longer than a name (200 characters), at max_length / 200."""
    schema = build_schema()._schema
    names = measure(schema, parse("{ gifts(first: 100) { edges { node { name } } } }"),
                    None, {}, 20, 100)
    texts = measure(schema, parse("{ gifts(first: 100) { edges { node { description } } } }"),
                    None, {}, 20, 100)
    assert texts.worst.cost - names.worst.cost == 100 * 24
    fragment = measure(schema, parse("{ node(id: \"x\") { ... on Person { notes } } }"),
                       None, {}, 20, 100)
    assert fragment.worst.cost == 1 + 25
    expected = {}
    for model in (validation.PersonData, validation.OccasionData, validation.GiftData,
                  validation.ListItemData, validation.CommentData, validation.GiftListData):
        for field, info in model.model_fields.items():
            longest = max((getattr(m, "max_length", 0) or 0 for m in info.metadata),
                          default=0)  # Annotated[str, StringConstraints(...)]
            if longest > 200:
                gql_type = model.__name__.removesuffix("Data")
                gql_field = schema.get_type(gql_type).fields  # type: ignore[union-attr]
                name = next(n for n in gql_field if n == field or n == _camel(field))
                expected[(gql_type, name)] = longest // 200
    assert expected == LONG_TEXT


def test_a_list_costs_the_most_entries_it_may_hold() -> None:
    """`FIXED_LISTS`: the dashboard's lists as many times as their resolvers' limits, a family's
    persons or members (unbounded) as the largest page; every list field of an object type
    in the schema is in one table or holds leaves only (then counted once)."""
    from giftgraph.resolvers import queries

    assert FIXED_LISTS == {("Dashboard", "nextOccasions"): queries.NEXT_OCCASIONS,
                     ("Dashboard", "recentIdeas"): queries.RECENT_IDEAS,
                     ("Dashboard", "activity"): queries.RECENT_ACTIVITY}
    schema = build_schema()._schema
    for type_name, gql_type in schema.type_map.items():
        for name, field in getattr(gql_type, "fields", {}).items():
            inner = field.type
            while isinstance(inner, GraphQLNonNull):
                inner = inner.of_type
            if not isinstance(inner, GraphQLList) or type_name.startswith("__") \
                    or type_name.endswith("Connection"):  # edges: priced by its page
                continue
            key, named = (type_name, name), get_named_type(inner)
            leaves = is_leaf_type(named) or all(  # Money: an amount and a currency
                is_leaf_type(get_named_type(f.type)) for f in named.fields.values())
            assert leaves or key in FIXED_LISTS or key in UNBOUNDED_LISTS, key
    once = measure(schema, parse("{ dashboard { activity { node { id } } } }"),
                   None, {}, 20, 100)
    assert once.worst.cost == 1 + 1 + 20 * (1 + 1)  # dashboard, activity, 20 x (node, id)
    nested = measure(schema, parse(
        "subscription { dashboard { activity { node { ... on GiftList { items(first: 100) "
        "{ edges { node { notes } } } } } } } }"), None, {}, 20, 100)
    assert nested.worst.cost > 50_000  # max_query_cost: refused before it runs
    people = measure(schema, parse("{ dashboard { people { person { name } } } }"),
                     None, {}, 20, 100)
    assert people.worst.cost == 1 + 1 + 100 * (1 + 1)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def test_a_measure_is_remembered_per_document_and_variables() -> None:
    """The same document object with the same variables is measured once; other
    variables (a page size), another document of the same text, another schema or
    variables too large to key on are measured again."""
    schema = build_schema()._schema
    other_schema = build_schema()._schema
    text = "query($n: Int) { lists(first: $n) { edges { node { name } } } }"
    document = parse(text)
    measured = Measured(size=2)
    first = measured(schema, document, None, {"n": 500}, 20, 100)
    assert first.capped == frozenset({"lists"})
    assert measured(schema, document, None, {"n": 500}, 20, 100) is first
    small = measured(schema, document, None, {"n": 5}, 20, 100)
    assert small is not first
    assert small.capped == frozenset()
    assert measured(schema, parse(text), None, {"n": 500}, 20, 100) is not first
    assert measured(other_schema, document, None, {"n": 500}, 20, 100) is not first
    big = {"n": 5, "pad": "x" * Measured.VARIABLES_KEY_BYTES}
    assert measured(schema, document, None, big, 20, 100) \
        is not measured(schema, document, None, big, 20, 100)
    assert len(measured.entries) == 2  # the oldest were let go
    # An entry keeps no document alive
    key = next(iter(measured.entries))
    del document, first, small
    gc.collect()
    assert measured.entries[key][1]() is None


@pytest.mark.parametrize("k", [21, 40])
async def test_fragment_doubling_is_refused_before_validation(
    http: httpx.AsyncClient, alice: Account, k: int,
) -> None:
    r = await alice.client(f"{{ ...F{k} }} " + doubling(k))
    assert r.codes == ["QUERY_TOO_COMPLEX"], r.body
    extensions = r.errors[0]["extensions"]
    assert (extensions["measure"], extensions["limit"]) == ("cost", 50_000)
    assert extensions["actual"] >= 2 ** min(k, 40)
    assert "data" not in r.body  # a request error: nothing ran
    # Again: neither the parse cache nor the validation cache lets it through.
    again = await alice.client(f"{{ ...F{k} }} " + doubling(k))
    assert again.codes == ["QUERY_TOO_COMPLEX"]
    metrics = (await http.get("/metrics")).text
    assert refused_metric(metrics, "cost") == 2
    assert (await alice.client("{ me { id } }")).errors == []
    long = await alice.client("{ me { " + " id" * 3000 + " } }")
    assert long.codes == ["QUERY_TOO_COMPLEX"]
    assert refused_metric((await http.get("/metrics")).text, "tokens") == 1


async def test_depth_and_aliases_count_through_fragments(alice: Account) -> None:
    deep = ("{ lists(first: 1) { edges { node { ...A } } } } fragment A on GiftList {"
            " items(first: 1) { edges { node { ...B } } } } fragment B on ListItem { list {"
            " items(first: 1) { edges { node { list { name } } } } } }")
    shallow = deep[:deep.index("fragment B")] + "fragment B on ListItem { list { name } }"
    assert (await alice.client(shallow)).errors == []  # depth 9
    r = await alice.client(deep)
    assert r.codes == ["QUERY_TOO_COMPLEX"], r.body
    assert (r.errors[0]["extensions"]["measure"], r.errors[0]["extensions"]["actual"]) \
        == ("depth", 12)
    aliased = ("{ me { ...F ...G } } fragment F on User { a: id b: id c: id d: id } "
               "fragment G on User { ...F ...F ...F }")
    r = await alice.client(aliased)
    assert r.codes == ["QUERY_TOO_COMPLEX"], r.body
    assert (r.errors[0]["extensions"]["measure"], r.errors[0]["extensions"]["actual"]) \
        == ("aliases", 16)


def _args(n: int) -> str:
    return "{ " + " ".join(f"persons(first: {i}) {{ totalCount }}" for i in range(n)) + " }"


def _repeated(n: int) -> str:
    return "{ " + " ".join(["persons { edges { node { id name } } }"] * n) + " }"


def _inline(n: int) -> str:
    return "{ " + " ".join("... on Query { me { id } }" for _ in range(n)) + " }"


def _leaves(n: int) -> str:
    return "{ me { " + " id" * n + " } }"


def _fragments(n: int) -> str:
    return ("{ " + " ".join(f"...G{i}" for i in range(n)) + " } "
            + " ".join(f"fragment G{i} on Query {{ me {{ id }} }}" for i in range(n)))


@pytest.mark.parametrize(("wide", "n"), [(_args, 200), (_repeated, 150), (_inline, 200),
                                         (_fragments, 150), (_leaves, 600)])
async def test_what_validation_compares_is_bounded(
    http: httpx.AsyncClient, alice: Account, wide: Any, n: int,
) -> None:
    """Quadratic for graphql-core's OverlappingFieldsCanBeMerged (a second or more of
    the event loop), within the token limit: refused before validation."""
    r = await alice.client(wide(n))
    assert r.codes == ["QUERY_TOO_COMPLEX"], r.body
    assert r.errors[0]["extensions"]["measure"] == "overlaps"
    assert r.errors[0]["extensions"]["limit"] == 5000
    assert refused_metric((await http.get("/metrics")).text, "overlaps") == 1
    assert (await alice.client(wide(10))).codes != ["QUERY_TOO_COMPLEX"]


def test_graphiql_introspection_is_within_every_bound() -> None:
    schema = build_schema()._schema
    found = measure(schema, parse(get_introspection_query()), None, {}, 20, 100)
    assert over_limit(found, make_settings("postgresql://unused")) is None
    assert found.overlaps == 0
    assert found.worst.cost > 100  # counted, field by field


LISTS = ("query($n: Int) { lists(first: $n) { edges { node { items(first: 100) { edges {"
         " node { gift { name price store } assignee { email } list { name } } } } } } } }")


async def test_variables_are_priced_by_value_on_every_request(alice: Account) -> None:
    """A document validated (and cached) with a small page is measured again with a large
    one; a value that is not an integer is priced at the largest page."""
    assert (await alice.client(LISTS, {"n": 5})).errors == []
    assert (await alice.client(LISTS, {"n": 100})).codes == ["QUERY_TOO_COMPLEX"]
    for value in ("100", True, 5.5, [5], {"n": 5}):
        r = await alice.client(LISTS, {"n": value})
        assert r.codes == ["QUERY_TOO_COMPLEX"], (value, r.body)
    defaulted = LISTS.replace("$n: Int", "$n: Int = 100")
    assert (await alice.client(defaulted)).codes == ["QUERY_TOO_COMPLEX"]
    assert (await alice.client(LISTS, {"n": None})).errors == []  # the default page


@pytest.fixture
def limited_server(database_url: str) -> Iterator[str]:
    with serving(database_url, GIFTGRAPH_MUTATION_RATE="3/minute") as base:
        yield base


async def test_doubling_is_refused_over_a_socket(limited_server: str) -> None:
    async with httpx.AsyncClient(base_url=limited_server, timeout=10) as http:
        account = await sign_up(GQL(http), "Socket")
        client = await WsClient.connect(limited_server,
                                        {"authorization": f"Bearer {account.token}"})
        try:
            for query in ("subscription { familyEvents { ...F40 } } "
                          + doubling(40, "Event", "seq"), "{ ...F40 } " + doubling(40)):
                sent = await client.subscribe(query)
                msg = await client.receive()
                assert (msg["type"], msg["id"]) == ("error", sent), msg
                extensions = msg["payload"][0]["extensions"]
                assert (extensions["code"], extensions["measure"]) == ("QUERY_TOO_COMPLEX",
                                                                        "cost")
                assert extensions["traceId"]
            # Mutations over the socket are charged as over HTTP, and refused as the other
            # bounds are: before validation, with an `error` message.
            spread = ('mutation { ...M } fragment M on Mutation { a: createPerson(input: '
                      '{name: "a"}) { id } b: createPerson(input: {name: "b"}) { id } '
                      'c: createPerson(input: {name: "c"}) { id } '
                      'd: createPerson(input: {name: "d"}) { id } }')
            sent = await client.subscribe(spread)
            msg = await client.receive()
            assert (msg["type"], msg["id"]) == ("error", sent), msg
            assert msg["payload"][0]["extensions"]["code"] == "RATE_LIMITED", msg
        finally:
            await client.ws.close()
        r = await http.post("/graphql", json={"query": "{ persons { totalCount } }"},
                            headers={"authorization": f"Bearer {account.token}"})
        assert r.json()["data"]["persons"]["totalCount"] == 0
        metrics = (await http.get("/metrics")).text
        assert refused_metric(metrics, "cost") == 2
        assert refused_metric(metrics, "mutation_rate") == 1


CREATE = 'createPerson(input: {{name: "{0}"}}) {{ id }}'


@pytest.mark.parametrize("mutation", [
    "mutation { ... on Mutation { a: %s b: %s } c: %s d: %s }",
    "mutation { ...M } fragment M on Mutation { a: %s b: %s ...N } "
    "fragment N on Mutation { c: %s d: %s }",
])
async def test_every_root_mutation_field_is_charged(database_url: str, mutation: str) -> None:
    """3/minute: four root fields inside fragments are four, refused before any runs."""
    app = create_app(make_settings(database_url, mutation_rate="3/minute"))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        account = await sign_up(GQL(http), "Budget")
        four = mutation % tuple(CREATE.format(x) for x in "abcd")
        r = await account.client(four)
        assert r.codes == ["RATE_LIMITED"], r.body
        assert (await account.client("{ persons { totalCount } }")).data["persons"][
            "totalCount"] == 0
        three = four.replace("d: " + CREATE.format("d"), "")
        assert (await account.client(three)).errors == []
        assert (await account.client(three)).codes == ["RATE_LIMITED"]  # 3 of 3 spent
        assert (await account.client("{ persons { totalCount } }")).data["persons"][
            "totalCount"] == 3
        metrics = (await http.get("/metrics")).text
        assert refused_metric(metrics, "mutation_rate") == 2


SUGGESTED = [  # each with the name only a suggestion would tell
    ("{ mee { id } }", {}, "'me'"),  # a field
    ("{ lists(kindd: WISHLIST) { totalCount } }", {}, "'kind'"),  # an argument
    ("query($k: ListKindd) { lists(kind: $k) { totalCount } }", {"k": "WISHLIST"},
     "'ListKind'"),  # a type
    ("{ lists(kind: WISHLISTT) { totalCount } }", {}, "'WISHLIST'"),  # an enum value
    ("query($k: ListKind) { lists(kind: $k) { totalCount } }", {"k": "WISHLISTT"},
     "'WISHLIST'"),  # an enum value, in a variable
    ('mutation { createPerson(input: {name: "x", interestz: ["a"]}) { id } }', {},
     "'interests'"),  # an input field
    ("mutation($i: PersonInput!) { createPerson(input: $i) { id } }",
     {"i": {"name": "x", "interestz": ["a"]}}, "'interests'"),  # in a variable
]


@pytest.mark.parametrize(("query", "variables", "hidden"), SUGGESTED)
async def test_production_suggests_nothing(
    database_url: str, query: str, variables: dict[str, Any], hidden: str,
) -> None:
    production = make_settings(database_url, environment="production", jwt_secret="p" * 40)
    for settings, suggested in ((production, False), (make_settings(database_url), True)):
        app = create_app(settings)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            account = await sign_up(GQL(http), "Suggest")
            r = await account.client(query, variables)
        assert r.codes, r.body
        assert set(r.codes) == {"BAD_USER_INPUT"}, r.body
        text = " ".join(e["message"] for e in r.errors)
        assert ("Did you mean" in text) is suggested, text
        assert (hidden in text) is suggested, text
