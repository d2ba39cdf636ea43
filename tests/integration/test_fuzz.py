"""Fuzzing: generated GraphQL documents over HTTP, malformed messages over WebSocket.

Valid operations are generated from the live schema by hypothesis-graphql and sent as an
authenticated user (Alice) to the in-process app; invalid ones (random text, random JSON
bodies, wrong variable types, huge page sizes, deep nesting) too. Whatever arrives, the
service answers with JSON, never a 5xx and never an INTERNAL_SERVER_ERROR, and every error
carries a code. Hypothesis runs in a worker thread and hands each request to the test's
event loop, so that the app still answers correctly *after* the whole run can be checked.

The graphql-transport-ws tests speak the protocol badly on purpose against a real uvicorn
server and check each close code exactly.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, date
from decimal import Decimal
from typing import Any, TypeVar

import graphql
import httpx
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import nodes
from hypothesis_graphql import strategies as gql_st
from websockets.exceptions import ConnectionClosed

from giftgraph.ids import encode_id
from giftgraph.schema.schema import build_schema
from tests.conftest import Account
from tests.support import serving

T = TypeVar("T")
TRACEBACK = "Traceback (most recent call last)"

SDL = build_schema().as_str()
SCHEMA = graphql.build_schema(SDL)

CODES = {"UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND", "BAD_USER_INPUT", "CONFLICT",
         "INVALID_TRANSITION", "RATE_LIMITED", "QUERY_TOO_COMPLEX"}
JSON_TYPES = ("application/json", "application/graphql-response+json")
ACCEPTS = st.sampled_from(["application/json", "application/graphql-response+json",
                           "application/graphql-response+json, application/json;q=0.9",
                           "*/*", ""])

# --- what the generated operations point at -------------------------------------------------

# Alice's IDs (her own user excepted, so that no example locks her out), filled per test:
# generated operations then read, change and delete real rows, not only missing ones.
ID_POOL: list[str] = []


def _pick_id(i: int) -> str:
    return ID_POOL[i % len(ID_POOL)] if ID_POOL else "missing"


ID_VALUES = st.one_of(
    st.integers(min_value=0, max_value=10_000).map(_pick_id),
    st.uuids().map(lambda u: encode_id("Person", u)),
    st.text(max_size=30),
).map(nodes.String)

CUSTOM_SCALARS: dict[str, st.SearchStrategy[graphql.ValueNode]] = {
    "ID": ID_VALUES,
    "Date": st.one_of(st.dates().map(lambda d: d.isoformat()), st.text(max_size=12)
                      ).map(nodes.String),
    "DateTime": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()
                                                         ).map(nodes.String),
    "Decimal": st.one_of(
        st.decimals(allow_nan=False, allow_infinity=False, places=2,
                    min_value=Decimal("-1e14"), max_value=Decimal("1e14")).map(str),
        st.decimals(allow_nan=False, allow_infinity=False).map(str),
        st.text(max_size=12),
    ).map(nodes.String),
}

# NUL characters get their own explicit test below (test_nul_characters_are_bad_input), so
# the generated runs explore past them.
VALID_QUERIES = gql_st.queries(SDL, custom_scalars=CUSTOM_SCALARS, allow_x00=False)
VALID_MUTATIONS = gql_st.mutations(SDL, custom_scalars=CUSTOM_SCALARS, allow_x00=False)
INVALID_OPERATIONS = gql_st.from_schema(SDL, custom_scalars=CUSTOM_SCALARS, allow_x00=False,
                                        mode=gql_st.Mode.NEGATIVE)

FUZZ = settings(deadline=None, database=None, derandomize=False, print_blob=True,
                suppress_health_check=list(HealthCheck))


# --- plumbing -----------------------------------------------------------------------------


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Like conftest's `http`, but an exception escaping the app is a 500, as on a server."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def run_examples(loop: asyncio.AbstractEventLoop, strategy: st.SearchStrategy[T],
                 check: Callable[[T], Awaitable[None]], max_examples: int) -> int:
    """Run `check` on `max_examples` values of `strategy` (in this worker thread, the
    requests themselves on `loop`); return how many examples ran."""
    ran = 0

    @settings(FUZZ, max_examples=max_examples)
    @given(strategy)
    def example(value: T) -> None:
        nonlocal ran
        ran += 1
        asyncio.run_coroutine_threadsafe(check(value), loop).result(timeout=60)

    example()
    return ran


async def fuzz(strategy: st.SearchStrategy[T], check: Callable[[T], Awaitable[None]],
               max_examples: int) -> int:
    loop = asyncio.get_running_loop()
    return await asyncio.to_thread(run_examples, loop, strategy, check, max_examples)


async def send(c: httpx.AsyncClient, token: str | None, *, body: Any = None,
               content: bytes | str | None = None, accept: str = "application/json",
               ) -> httpx.Response:
    headers = {"accept": accept, "content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    if content is None:
        content = json.dumps(body)
    return await c.post("/graphql", content=content, headers=headers)


def checked(r: httpx.Response, what: object) -> dict[str, Any]:
    """The JSON body of a response that is no 5xx and has only coded, expected errors."""
    assert r.status_code < 500, (r.status_code, r.text[:1000], what)
    media = r.headers.get("content-type", "").split(";")[0].strip()
    assert media in JSON_TYPES, (media, r.text[:300], what)
    body = r.json()
    assert isinstance(body, dict), (body, what)
    assert set(body) <= {"data", "errors", "extensions"}, (body, what)
    assert "data" in body or body.get("errors"), (body, what)
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        assert code != "INTERNAL_SERVER_ERROR", (error, what)
        assert code in CODES, (error, what)
        if r.status_code == 200:  # went through GraphQL: traced
            assert error["extensions"].get("traceId"), (error, what)
        # A Python traceback's heading; an error may echo one token of the input
        # ("Unexpected Name 'Traceback'"), so the whole heading is what must not appear.
        if TRACEBACK not in repr(what):
            assert TRACEBACK not in str(error), (error, what)
        # no SQL in an error, unless it is the client's own text echoed by the parser
        # ("Syntax Error: Unexpected Name 'SELECT'." for the document "SELECT")
        assert "SELECT" not in str(error) or "SELECT" in str(what), (error, what)
    return body  # type: ignore[no-any-return]


def rejected(r: httpx.Response, what: object) -> dict[str, Any]:
    """An invalid request: 4xx, or 200 with errors and without data."""
    body = checked(r, what)
    assert 400 <= r.status_code < 500 or r.status_code == 200, (r.status_code, what)
    assert body.get("errors"), (body, what)
    assert body.get("data") is None, (body, what)
    return body


async def assert_me(c: httpx.AsyncClient, account: Account) -> None:
    r = await send(c, account.token, body={"query": "{ me { id email } }"})
    assert r.status_code == 200, r.text
    assert r.json() == {"data": {"me": {"id": account.user_id, "email": account.email}}}


async def run(c: httpx.AsyncClient, token: str, query: str,
              variables: dict[str, Any] | None = None) -> Any:
    r = await send(c, token, body={"query": query, "variables": variables or {}})
    body = r.json()
    assert r.status_code == 200, body
    assert not body.get("errors"), body
    return body["data"]


@pytest.fixture
async def seeded(client: httpx.AsyncClient, alice: Account) -> list[str]:
    """A small family for Alice; its IDs (not her own user's) become the ID pool."""
    t = alice.token
    ids: list[str] = []
    person = (await run(client, t, 'mutation { createPerson(input: {name: "Mom",'
                        ' interests: ["tea"]}) { id } }'))["createPerson"]["id"]
    occasion = (await run(client, t, 'mutation { createOccasion(input: {name: "Xmas",'
                          ' kind: HOLIDAY, date: "2099-12-25", budget: "100.00"}) { id } }')
                )["createOccasion"]["id"]
    gl = (await run(client, t, "mutation($p: ID, $o: ID) { createList(input: {name: \"Plan\","
                    " kind: GIFT_PLAN, personId: $p, occasionId: $o}) { id } }",
                    {"p": person, "o": occasion}))["createList"]["id"]
    gift = (await run(client, t, 'mutation { createGift(input: {name: "Book",'
                      ' url: "https://shop.example/b", price: "9.99"}) { id } }')
            )["createGift"]["id"]
    item = (await run(client, t, "mutation($l: ID!, $g: ID) { addListItem(listId: $l,"
                      " input: {giftId: $g}) { id } }", {"l": gl, "g": gift}))["addListItem"]["id"]
    member = (await run(client, t, "mutation($e: String!) { registerUser(input: {email: $e,"
                        ' password: "member password", displayName: "M"}) { id } }',
                        {"e": f"m-{uuid.uuid4().hex[:6]}@example.com"}))["registerUser"]["id"]
    comment = (await run(client, t, "mutation($t: ID!) { addComment(input: {target: LIST,"
                         ' targetId: $t, body: "hi"}) { id } }', {"t": gl}))["addComment"]["id"]
    events = await run(client, t, "{ events(first: 1) { edges { node { id } } } family { id } }")
    ids = [person, occasion, gl, gift, item, member, comment,
           events["events"]["edges"][0]["node"]["id"], events["family"]["id"]]
    ID_POOL[:] = ids
    return ids


# --- generated valid operations -------------------------------------------------------------


async def test_generated_queries(client: httpx.AsyncClient, alice: Account,
                                 seeded: list[str]) -> None:
    async def check(query: str) -> None:
        r = await send(client, alice.token, body={"query": query})
        body = checked(r, query)
        assert r.status_code == 200, (r.status_code, body, query)
        codes = {e["extensions"]["code"] for e in body.get("errors") or []}
        # A valid query as an authenticated user: at most limits or missing IDs refuse it.
        assert codes <= {"NOT_FOUND", "BAD_USER_INPUT", "QUERY_TOO_COMPLEX"}, (body, query)

    ran = await fuzz(VALID_QUERIES, check, max_examples=200)
    assert ran >= 150
    await assert_me(client, alice)


async def test_generated_mutations(client: httpx.AsyncClient, alice: Account,
                                   seeded: list[str]) -> None:
    async def check(mutation: str) -> None:
        r = await send(client, alice.token, body={"query": mutation})
        body = checked(r, mutation)
        assert r.status_code == 200, (r.status_code, body, mutation)

    ran = await fuzz(VALID_MUTATIONS, check, max_examples=200)
    assert ran >= 150
    await assert_me(client, alice)


async def test_generated_operations_anonymous(client: httpx.AsyncClient, alice: Account,
                                              seeded: list[str]) -> None:
    """Without a token: UNAUTHENTICATED (or input errors), never a crash, never data of Alice."""
    async def check(query: str) -> None:
        r = await send(client, None, body={"query": query})
        checked(r, query)
        assert "Mom" not in r.text, (r.text, query)
        assert alice.email not in r.text, (r.text, query)

    ran = await fuzz(st.one_of(VALID_QUERIES, VALID_MUTATIONS), check, max_examples=60)
    assert ran >= 45
    await assert_me(client, alice)


@pytest.mark.parametrize("sibling", [
    "users(first: 0, last: 0) { totalCount }",
    'persons(after: "a", before: "b") { totalCount }',
    'gifts(after: "not a cursor") { totalCount }',
])
async def test_failing_field_beside_a_resolving_one(client: httpx.AsyncClient, alice: Account,
                                                    seeded: list[str], sibling: str) -> None:
    """Found by the generated queries: a root field failing (BAD_USER_INPUT, non-null, so
    `data` is null) while a sibling is still reading the database must keep its code."""
    query = f'{{ node(id: "{seeded[0]}") {{ id }} {sibling} }}'
    r = await send(client, alice.token, body={"query": query})
    body = checked(r, query)
    assert r.status_code == 200
    assert body.get("data") is None, body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"], body
    await assert_me(client, alice)


# --- invalid input --------------------------------------------------------------------------


def _is_valid_document(text: str) -> bool:
    try:
        return not graphql.validate(SCHEMA, graphql.parse(text))
    except graphql.GraphQLError:
        return False


async def test_schema_violations(client: httpx.AsyncClient, alice: Account,
                                 seeded: list[str]) -> None:
    """hypothesis-graphql's negative mode: each document breaks the schema once."""
    async def check(case: tuple[str, str]) -> None:
        doc, accept = case
        if _is_valid_document(doc):  # a "violation" graphql-core accepts is no violation
            return
        r = await send(client, alice.token, body={"query": doc}, accept=accept)
        body = rejected(r, doc)
        assert {e["extensions"]["code"] for e in body["errors"]} == {"BAD_USER_INPUT"}, (
            body, doc)
        if accept.startswith("application/graphql-response+json"):
            assert r.status_code == 400, (r.status_code, body, doc)

    ran = await fuzz(st.tuples(INVALID_OPERATIONS, ACCEPTS), check, max_examples=150)
    assert ran >= 110
    await assert_me(client, alice)


async def test_random_text_documents(client: httpx.AsyncClient, alice: Account) -> None:
    async def check(case: tuple[str, str]) -> None:
        text, accept = case
        if _is_valid_document(text):
            return
        r = await send(client, alice.token, body={"query": text}, accept=accept)
        rejected(r, text)

    texts = st.one_of(
        st.text(max_size=200),
        st.text(alphabet="{}()[]:$!@.,=\"' \n#|&abcdeimnopqrstuy_01", max_size=120),
        st.from_regex(r"\A(query|mutation|subscription|fragment)? ?\{[a-z {}()]{0,60}\Z"),
    )
    await check(("SELECT", "application/json"))  # once found by the fuzzer: echoed, no leak
    ran = await fuzz(st.tuples(texts, ACCEPTS), check, max_examples=400)
    assert ran >= 300
    await assert_me(client, alice)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                          allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
REQUEST_KEYS = st.sampled_from(["query", "variables", "operationName", "extensions"])


@st.composite
def bad_bodies(draw: st.DrawFn) -> str | bytes:
    """Request bodies that are no valid GraphQL-over-HTTP request."""
    kind = draw(st.sampled_from(["json", "object", "bytes", "text", "wrong-field-type"]))
    if kind == "json":  # any JSON document except a request object
        value = draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))
        return json.dumps(value)
    if kind == "object":  # an object with the request's keys, but random values
        obj = draw(st.dictionaries(REQUEST_KEYS | st.text(max_size=8), JSON_VALUES,
                                   max_size=4))
        query = obj.get("query")
        if isinstance(query, str) and _is_valid_document(query):
            obj["query"] = 42
        return json.dumps(obj)
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "text":  # truncated or garbled JSON
        good = json.dumps({"query": "{ me { id } }", "variables": {}})
        cut = draw(st.integers(min_value=0, max_value=len(good) - 1))
        return good[:cut] + draw(st.text(max_size=5))
    # a valid query, with one field of the wrong JSON type
    field = draw(st.sampled_from(["variables", "operationName", "extensions"]))
    wrong = {"variables": st.one_of(st.integers(), st.text(min_size=1), st.lists(st.integers(),
                                                                                 min_size=1)),
             "operationName": st.one_of(st.integers(), st.lists(st.integers(), min_size=1),
                                        st.text(min_size=1).filter(lambda s: s != "Q")),
             "extensions": st.one_of(st.integers(), st.text(), st.lists(st.integers()))}[field]
    return json.dumps({"query": "query Q { me { id } }", field: draw(wrong)})


async def test_random_json_bodies(client: httpx.AsyncClient, alice: Account) -> None:
    async def check(case: tuple[str | bytes, str]) -> None:
        content, accept = case
        r = await send(client, alice.token, content=content, accept=accept)
        body = rejected(r, content)
        assert "me" not in (body.get("data") or {}), (body, content)

    ran = await fuzz(st.tuples(bad_bodies(), ACCEPTS), check, max_examples=400)
    assert ran >= 300
    await assert_me(client, alice)


def _deep(n: int) -> str:
    return '{"name": ' * n + '"x"' + "}" * n


MALFORMED_BODIES: dict[str, str | bytes] = {
    "json-string": '"query"',
    "json-number": "5",
    "json-null": "null",
    "json-true": "true",
    "invalid-utf8": b"\x80",
    "deep-variables": '{"query": "mutation($i: PersonInput!) { createPerson(input: $i) { id } }",'
                      ' "variables": {"i": ' + _deep(5000) + "}}",
    "deep-extensions": '{"query": "{ me { id } }", "extensions": ' + _deep(5000) + "}",
}


@pytest.mark.parametrize("name", list(MALFORMED_BODIES))
async def test_malformed_body_is_a_request_error(client: httpx.AsyncClient, alice: Account,
                                                 name: str) -> None:
    """Found by the fuzzing above, pinned here: bodies that are no JSON object (or too deep
    to parse) are the client's error."""
    r = await send(client, alice.token, content=MALFORMED_BODIES[name])
    body = rejected(r, name)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"], body
    if not name.startswith("deep"):
        assert r.status_code == 400, (r.status_code, body)


# A query and a mutation with one variable of each kind; each example gets at least one of
# the variables of one of them wrong.
TYPED = {
    "query": """query($first: Int, $search: String, $kind: ListKind, $id: ID!, $from: Date) {
  persons(first: $first, search: $search) { totalCount }
  lists(kind: $kind) { totalCount }
  occasions(from: $from) { totalCount }
  node(id: $id) { ... on Person { name } }
}""",
    "mutation": """mutation($input: PersonInput!) { createPerson(input: $input) { name } }""",
}
GOOD_VARIABLES: dict[str, dict[str, Any]] = {
    "query": {"first": 5, "search": "x", "kind": "IDEAS", "id": encode_id("Person", uuid.uuid4()),
              "from": "2024-01-01"},
    "mutation": {"input": {"name": "n"}},
}
WRONG_VARIABLES: dict[str, st.SearchStrategy[Any]] = {
    "first": st.one_of(st.text(), st.floats().filter(lambda f: not float(f).is_integer()),
                       st.integers().filter(lambda i: not -(2**31) <= i < 2**31),
                       st.booleans(), st.lists(st.integers(), min_size=1),
                       st.dictionaries(st.text(), st.integers())),
    "search": st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False),
                        st.lists(st.text(), min_size=1), st.dictionaries(st.text(), st.text())),
    "kind": st.one_of(st.text().filter(lambda s: s not in ("WISHLIST", "IDEAS", "GIFT_PLAN")),
                      st.integers(), st.booleans(), st.lists(st.just("IDEAS"), min_size=1)),
    "id": st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False).filter(
        lambda f: not float(f).is_integer()), st.lists(st.text(), min_size=1),
        st.dictionaries(st.text(), st.text())),
    "from": st.one_of(st.text(max_size=15).filter(lambda s: not _iso_date(s)), st.integers(),
                      st.booleans(), st.lists(st.just("2024-01-01"), min_size=1)),
    "input": st.one_of(st.text(), st.integers(), st.lists(st.just({"name": "n"}), min_size=1),
                       st.fixed_dictionaries({}),  # name missing
                       st.fixed_dictionaries({"name": st.integers()}),
                       st.fixed_dictionaries({"name": st.just("n"), "nope": JSON_VALUES}),
                       st.fixed_dictionaries({"name": st.just("n"),
                                              "interests": st.integers()})),
}


def _iso_date(s: str) -> bool:
    try:
        date.fromisoformat(s)
    except ValueError:
        return False
    return True


@st.composite
def wrong_variables(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """(operation kind, its variables with at least one of the wrong type)."""
    kind = draw(st.sampled_from(sorted(TYPED)))
    good = GOOD_VARIABLES[kind]
    wrong = draw(st.lists(st.sampled_from(sorted(good)), min_size=1, unique=True))
    return kind, {**good, **{name: draw(WRONG_VARIABLES[name]) for name in wrong}}


async def test_good_variables_are_accepted(client: httpx.AsyncClient, alice: Account) -> None:
    """Control for the test below: with all variables right, both operations run."""
    r = await send(client, alice.token, body={"query": TYPED["query"],
                                              "variables": GOOD_VARIABLES["query"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"data": {"persons": {"totalCount": 0}, "lists": {"totalCount": 0},
                                 "occasions": {"totalCount": 0}, "node": None},
                        "errors": r.json()["errors"]}
    assert [e["extensions"]["code"] for e in r.json()["errors"]] == ["NOT_FOUND"]  # the node
    r = await send(client, alice.token, body={"query": TYPED["mutation"],
                                              "variables": GOOD_VARIABLES["mutation"]})
    assert r.json() == {"data": {"createPerson": {"name": "n"}}}


async def test_wrong_variable_types(client: httpx.AsyncClient, alice: Account) -> None:
    async def check(case: tuple[tuple[str, dict[str, Any]], str]) -> None:
        (kind, variables), accept = case
        r = await send(client, alice.token, body={"query": TYPED[kind], "variables": variables},
                       accept=accept)
        body = rejected(r, variables)
        assert {e["extensions"]["code"] for e in body["errors"]} == {"BAD_USER_INPUT"}, (
            body, variables)

    ran = await fuzz(st.tuples(wrong_variables(), ACCEPTS), check, max_examples=300)
    assert ran >= 200
    await assert_me(client, alice)


async def test_huge_and_negative_page_sizes(client: httpx.AsyncClient, alice: Account) -> None:
    """`first`/`last` are capped at 100; negative is BAD_USER_INPUT; beyond Int too."""
    t = alice.token
    for batch in range(7):  # 105 persons, 15 per request (the alias limit)
        fields = " ".join(f'p{i}: createPerson(input: {{name: "P{batch}-{i}"}}) {{ id }}'
                          for i in range(15))
        await run(client, t, f"mutation {{ {fields} }}")

    async def check(case: tuple[int, str, bool]) -> None:
        n, arg, inline = case
        if inline:
            r = await send(client, t, body={
                "query": f"{{ persons({arg}: {n}) {{ totalCount edges {{ cursor }} }} }}"})
        else:
            r = await send(client, t, body={
                "query": f"query($n: Int) {{ persons({arg}: $n) {{ totalCount edges {{ cursor }}"
                         " } }", "variables": {"n": n}})
        if 0 <= n < 2**31:
            body = checked(r, case)
            assert not body.get("errors"), (body, case)
            persons = body["data"]["persons"]
            assert persons["totalCount"] == 105
            assert len(persons["edges"]) == min(n, 100), case
        else:
            body = rejected(r, case)
            assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"], (
                body, case)

    sizes = st.one_of(st.integers(min_value=-(2**31), max_value=2**31 - 1),
                      st.integers(min_value=2**31, max_value=10**40),
                      st.integers(max_value=-(2**31) - 1, min_value=-(10**40)),
                      st.sampled_from([0, 1, 99, 100, 101, 2**31 - 1, 2**31, -1, -(2**31)]))
    ran = await fuzz(st.tuples(sizes, st.sampled_from(["first", "last"]), st.booleans()),
                     check, max_examples=150)
    assert ran >= 100
    await assert_me(client, alice)


def nested_selection(depth: int) -> str:
    """A valid query `depth` cycles deep: lists → items → list → items → ..."""
    inner = "id"
    for _ in range(depth):
        inner = f"items {{ edges {{ node {{ list {{ {inner} }} }} }} }}"
    return f"{{ lists {{ edges {{ node {{ {inner} }} }} }} }}"


async def test_deep_nesting(client: httpx.AsyncClient, alice: Account,
                            seeded: list[str]) -> None:
    """Too deep is QUERY_TOO_COMPLEX (or BAD_USER_INPUT from the token limit); deep syntax,
    values and variables never exhaust the server's stack."""
    t = alice.token

    async def check(case: tuple[str, int]) -> None:
        kind, n = case
        variables: dict[str, Any] = {}
        if kind == "selection":
            query = nested_selection(n)
        elif kind == "braces":
            query = "{ me " * n + "{ id" + " }" * (n + 1)
        elif kind == "list-value":
            query = '{ persons(search: ' + "[" * n + '"x"' + "]" * n + ") { totalCount } }"
        elif kind == "object-value":
            query = ('mutation { createPerson(input: ' + "{name: " * n + '"x"' + "}" * n
                     + ") { id } }")
        else:  # deeply nested JSON in a variable
            value: Any = "x"
            for _ in range(n):
                value = {"name": value}
            query = "mutation($i: PersonInput!) { createPerson(input: $i) { id } }"
            variables = {"i": value}
        content = json.dumps({"query": query, "variables": variables}) if n < 900 else (
            '{"query": ' + json.dumps(query) + ', "variables": ' + _deep_json(kind, n) + "}")
        r = await send(client, t, content=content)
        if (kind == "selection" and n <= 1) or (kind != "list-value" and n == 1):
            body = checked(r, case)  # valid and within every limit: it just runs
            assert not body.get("errors"), (body, case)
            return
        body = rejected(r, (kind, n))
        codes = {e["extensions"]["code"] for e in body["errors"]}
        if kind in ("selection", "braces"):
            # Too deep (measured before validation), too many tokens, or (braces, within
            # the depth limit) invalid.
            assert codes in ({"QUERY_TOO_COMPLEX"}, {"BAD_USER_INPUT"}), (body, n)
        else:
            assert codes == {"BAD_USER_INPUT"}, (body, n)

    kinds = st.sampled_from(["selection", "braces", "list-value", "object-value", "variable"])
    depths = st.one_of(st.integers(min_value=1, max_value=60),
                       st.integers(min_value=60, max_value=5000))
    ran = await fuzz(st.tuples(kinds, depths), check, max_examples=120)
    assert ran >= 80
    await assert_me(client, alice)


def _deep_json(kind: str, n: int) -> str:
    """Nested JSON text for variables too deep for json.dumps to build."""
    if kind != "variable":
        return "{}"
    return '{"i": ' + '{"name": ' * n + '"x"' + "}" * n + "}"


async def test_every_request_gets_its_own_trace_id(client: httpx.AsyncClient,
                                                  alice: Account) -> None:
    """The same invalid document twice: each error carries its own request's traceId."""
    seen: set[str] = set()
    for doc in ["{ nope }", "{ nope }", "{ me { nope } }", "{ me { nope } }"]:
        body = rejected(await send(client, alice.token, body={"query": doc}), doc)
        seen.add(body["errors"][0]["extensions"]["traceId"])
    assert len(seen) == 4, seen


STRING_INPUTS: list[tuple[str, str]] = [
    ("createPerson", 'mutation($s: String!) { createPerson(input: {name: $s}) { id } }'),
    ("createPerson.notes", 'mutation($s: String) { createPerson(input: {name: "n", notes: $s})'
                           " { id } }"),
    ("createPerson.interests", 'mutation($s: String!) { createPerson(input: {name: "n",'
                               " interests: [$s]}) { id } }"),
    ("createGift", "mutation($s: String!) { createGift(input: {name: $s}) { id } }"),
    ("createOccasion", 'mutation($s: String!) { createOccasion(input: {name: $s,'
                       ' kind: OTHER, date: "2099-01-01"}) { id } }'),
    ("createList", "mutation($s: String!) { createList(input: {name: $s, kind: IDEAS}) { id } }"),
    ("persons.search", "query($s: String) { persons(search: $s) { totalCount } }"),
    ("gifts.search", "query($s: String) { gifts(search: $s) { totalCount } }"),
    ("events.topic", "query($s: String) { events(topic: $s) { totalCount } }"),
    ("login", 'mutation($s: String!) { login(email: $s, password: "whatever pw") {'
              " accessToken } }"),
    ("refreshToken", "mutation($s: String!) { refreshToken(refreshToken: $s) { accessToken } }"),
    ("node", "query($s: ID!) { node(id: $s) { id } }"),
]


@pytest.mark.parametrize(("name", "query"), STRING_INPUTS, ids=[n for n, _ in STRING_INPUTS])
async def test_nul_characters_are_bad_input(client: httpx.AsyncClient, alice: Account,
                                            name: str, query: str) -> None:
    """PostgreSQL cannot store U+0000: a string with it is the client's error, not a crash."""
    r = await send(client, alice.token, body={"query": query, "variables": {"s": "a\x00b"}})
    body = checked(r, name)
    codes = [e["extensions"]["code"] for e in body.get("errors") or []]
    assert codes in (["BAD_USER_INPUT"], ["NOT_FOUND"], ["UNAUTHENTICATED"], []), body
    await assert_me(client, alice)


async def test_nul_character_in_a_string_literal_is_bad_input(client: httpx.AsyncClient,
                                                              alice: Account) -> None:
    """The same through an escape in the document itself: refused before anything runs."""
    query = 'mutation { createPerson(input: {name: "a\\u0000b"}) { id } }'
    body = checked(await send(client, alice.token, body={"query": query}), query)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"], body
    assert body["errors"][0]["extensions"]["fields"] == {
        "query": "must not contain the NUL character (U+0000)"}
    persons = await send(client, alice.token, body={"query": "{ persons { totalCount } }"})
    assert persons.json()["data"]["persons"]["totalCount"] == 0  # nothing half-applied


# --- graphql-transport-ws: malformed messages -----------------------------------------------

PROTOCOL = "graphql-transport-ws"


@pytest.fixture(scope="module")
def ws_server(database_url: str) -> Iterator[str]:
    """The service under uvicorn (as conftest's `server`) with a 1 s connection_init timeout."""
    with serving(database_url, GIFTGRAPH_WS_CONNECTION_INIT_TIMEOUT_SECONDS="1") as base:
        yield base


async def ws_token(base: str) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        r = await c.post("/graphql", json={
            "query": "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
            "variables": {"i": {"familyName": "WS", "email": f"ws-{uuid.uuid4().hex[:8]}@ex.com",
                                "password": "long password", "displayName": "W"}}})
    return r.json()["data"]["signUp"]["accessToken"]  # type: ignore[no-any-return]


async def ws_open(base: str) -> Any:
    return await websockets.connect(base.replace("http", "ws") + "/graphql",
                                    subprotocols=[PROTOCOL])  # type: ignore[list-item]


async def ws_ready(base: str, token: str) -> Any:
    ws = await ws_open(base)
    await ws.send(json.dumps({"type": "connection_init",
                              "payload": {"authorization": f"Bearer {token}"}}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert ack["type"] == "connection_ack", ack
    return ws


async def expect_close(ws: Any, code: int, reason: str | None = None,
                       within: float = 3) -> None:
    """The server closes `ws` with `code` (after any messages still in flight)."""
    deadline = time.monotonic() + within
    received: list[Any] = []
    try:
        while True:
            received.append(await asyncio.wait_for(ws.recv(),
                                                   max(0.01, deadline - time.monotonic())))
    except TimeoutError:
        pytest.fail(f"not closed within {within} s (expected {code}); received {received}")
    except ConnectionClosed as closed:
        rcvd = closed.rcvd
        assert rcvd is not None, f"dropped without a close frame; expected close code {code}"
        assert rcvd.code == code, (rcvd.code, rcvd.reason, received)
        if reason is not None:
            assert rcvd.reason == reason, rcvd.reason


MALFORMED: list[tuple[str, str | bytes]] = [
    ("not-json", "this is not json"),
    ("truncated-json", '{"type": "connection_init"'),
    ("binary", b'{"type": "connection_init"}'),
    ("json-array", "[]"),
    ("json-string", '"connection_init"'),
    ("json-null", "null"),
    ("json-number", "42"),
    ("no-type", '{"payload": {}}'),
    ("type-null", '{"type": null}'),
    ("type-number", '{"type": 7}'),
    ("unknown-type", '{"type": "hello"}'),
    ("apollo-start", '{"type": "start", "id": "1", "payload": {"query": "{ me { id } }"}}'),
    ("subscribe-without-id", '{"type": "subscribe", "payload": {"query": "{ me { id } }"}}'),
    ("subscribe-without-payload", '{"type": "subscribe", "id": "1"}'),
    ("subscribe-payload-not-object", '{"type": "subscribe", "id": "1", "payload": "x"}'),
    ("subscribe-query-not-string", '{"type": "subscribe", "id": "1", "payload": {"query": 5}}'),
    ("subscribe-variables-not-object", '{"type": "subscribe", "id": "1", "payload":'
     ' {"query": "subscription { familyEvents { seq } }", "variables": [1]}}'),
    ("subscribe-id-object", '{"type": "subscribe", "id": {}, "payload":'
     ' {"query": "subscription { familyEvents { seq } }"}}'),
    ("subscribe-id-number", '{"type": "subscribe", "id": 1, "payload":'
     ' {"query": "subscription { familyEvents { seq } }"}}'),
    ("complete-without-id", '{"type": "complete"}'),
]


# Each malformed message before connection_init and after the ack (a subscribe or complete
# only after: before the ack, a subscribe is 4401, tested below).
WS_MALFORMED_CASES: list[tuple[str, str | bytes, bool]] = [
    (name, message, after_init) for name, message in MALFORMED for after_init in (False, True)
    if after_init or not name.startswith(("subscribe", "complete"))
]


@pytest.mark.parametrize(("name", "message", "after_init"), WS_MALFORMED_CASES,
                         ids=[f"{n}-{'after' if a else 'before'}-init"
                              for n, _, a in WS_MALFORMED_CASES])
async def test_ws_malformed_message_closes_4400(ws_server: str, name: str,
                                                message: str | bytes, after_init: bool) -> None:
    if after_init:
        ws = await ws_ready(ws_server, await ws_token(ws_server))
    else:
        ws = await ws_open(ws_server)
    await ws.send(message)
    await expect_close(ws, 4400)


async def test_ws_invalid_connection_init_payload_closes_4400(ws_server: str) -> None:
    ws = await ws_open(ws_server)
    await ws.send(json.dumps({"type": "connection_init", "payload": "not an object"}))
    await expect_close(ws, 4400)


async def test_ws_subscribe_before_init_closes_4401(ws_server: str) -> None:
    ws = await ws_open(ws_server)
    await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": {
        "query": "subscription { familyEvents { seq } }"}}))
    await expect_close(ws, 4401, "Unauthorized")


async def test_ws_second_connection_init_closes_4429(ws_server: str) -> None:
    ws = await ws_ready(ws_server, await ws_token(ws_server))
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    await expect_close(ws, 4429, "Too many initialisation requests")


async def test_ws_duplicate_subscription_id_closes_4409(ws_server: str) -> None:
    ws = await ws_ready(ws_server, await ws_token(ws_server))
    subscribe = json.dumps({"type": "subscribe", "id": "dup", "payload": {
        "query": "subscription { familyEvents { seq } }"}})
    await ws.send(subscribe)
    with pytest.raises(TimeoutError):  # the first one is active (and quiet)
        await asyncio.wait_for(ws.recv(), 0.5)
    await ws.send(subscribe)
    await expect_close(ws, 4409, "Subscriber for dup already exists")


async def test_ws_same_id_after_complete_is_fine(ws_server: str) -> None:
    """Control: an id may be reused once its subscription completed."""
    ws = await ws_ready(ws_server, await ws_token(ws_server))
    subscribe = json.dumps({"type": "subscribe", "id": "again", "payload": {
        "query": "subscription { familyEvents { seq } }"}})
    await ws.send(subscribe)
    await asyncio.sleep(0.3)
    await ws.send(json.dumps({"type": "complete", "id": "again"}))
    await asyncio.sleep(0.3)
    await ws.send(subscribe)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), 0.5)
    await ws.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
    await ws.close()


async def test_ws_no_connection_init_closes_4408(ws_server: str) -> None:
    started = time.monotonic()
    ws = await ws_open(ws_server)
    await expect_close(ws, 4408, "Connection initialisation timeout", within=5)
    assert time.monotonic() - started >= 0.9  # the configured 1 s, not at once


async def test_ws_ping_before_init_is_answered_and_init_in_time_is_acked(
    ws_server: str,
) -> None:
    """Control: a well-behaved peer is not closed (ping/pong, then init within 1 s)."""
    ws = await ws_open(ws_server)
    await ws.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
    await ws.send(json.dumps({"type": "connection_init", "payload": {
        "token": await ws_token(ws_server)}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
    await asyncio.sleep(1.3)  # past the init timeout: still open
    await ws.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
    await ws.close()


@st.composite
def ws_garbage(draw: st.DrawFn) -> str | bytes:
    """Random frames that are no valid graphql-transport-ws message."""
    kind = draw(st.sampled_from(["text", "bytes", "json", "object"]))
    if kind == "text":
        return draw(st.text(min_size=1, max_size=100).filter(lambda s: not _json_object(s)))
    if kind == "bytes":
        return draw(st.binary(min_size=1, max_size=100))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict))))
    obj = draw(st.dictionaries(st.sampled_from(["type", "id", "payload"]) | st.text(max_size=5),
                               JSON_VALUES, max_size=3))
    if obj.get("type") in ("connection_init", "ping", "pong", "subscribe", "complete"):
        obj["type"] = draw(st.sampled_from([None, 1, "", "CONNECTION_INIT", "next", "error"]))
    return json.dumps(obj)


def _json_object(s: str) -> bool:
    try:
        return isinstance(json.loads(s), dict)
    except ValueError:
        return False


async def test_ws_random_garbage_closes_4400(ws_server: str) -> None:
    """Generated frames (not a valid message type) close the socket with 4400, every time."""
    token = await ws_token(ws_server)

    async def check(case: tuple[str | bytes, bool]) -> None:
        frame, after_init = case
        ws = await (ws_ready(ws_server, token) if after_init else ws_open(ws_server))
        await ws.send(frame)
        await expect_close(ws, 4400)

    ran = await fuzz(st.tuples(ws_garbage(), st.booleans()), check, max_examples=60)
    assert ran >= 40
    # The server survived it all: a fresh socket still works.
    ws = await ws_ready(ws_server, token)
    await ws.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
    await ws.close()
