"""HTTP requests an attacker shapes to cost the server more than a request should, against
the service as `giftgraph serve` runs it: each is refused (or served) cleanly, counted, and
the server goes on answering everyone else."""

from __future__ import annotations

import asyncio
import gc
import json
import pickle
import re
import socket
import time
import types
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from giftgraph.app import create_app
from giftgraph.ids import decode_id
from giftgraph.schema.cache import ResultStore, _key
from tests.conftest import GQL, _dsn, make_settings
from tests.conftest import sign_up as sign_up_in
from tests.support import serving

SIGN_UP = ("mutation($i: SignUpInput!) { signUp(input: $i) "
           "{ accessToken refreshToken user { id } } }")


@pytest.fixture(scope="module")
def base(database_url: str) -> Iterator[str]:
    with serving(database_url) as url:
        yield url


def sign_up(base: str, family: str = "Family") -> str:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    r = httpx.post(f"{base}/graphql", timeout=30, json={"query": SIGN_UP, "variables": {"i": {
        "familyName": family, "email": email, "password": "correct horse battery",
        "displayName": "Admin"}}})
    return str(r.json()["data"]["signUp"]["accessToken"])


def refused(base: str, bound: str) -> float:
    """`giftgraph_admission_refused_total{bound}` of the server at `base`."""
    text = httpx.get(f"{base}/metrics", timeout=5).text
    found = re.search(rf'giftgraph_admission_refused_total{{bound="{bound}"}} (\S+)', text)
    assert found, text
    return float(found.group(1))


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("query", [
    "query($x: String) { gifts(search: $x) { totalCount } }",  # coerced: recursion
    "{ me { id } }",  # not even used: the result cache's key walks it
])
def test_deeply_nested_variables_are_refused(base: str, query: str) -> None:
    token = sign_up(base)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    before = refused(base, "json_depth")
    for levels in (100, 1000, 1020):  # orjson itself takes up to 1024
        body = json.dumps({"query": query, "variables": {"x": 0}})[:-3] + nested(levels) + "}}"
        r = httpx.post(f"{base}/graphql", content=body, headers=headers, timeout=30)
        assert r.status_code == 400, r.text
        error = r.json()["errors"][0]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", r.text
        assert "nested too deeply" in error["message"]
    r = httpx.get(f"{base}/graphql", headers=headers, timeout=30, params={
        "query": query, "variables": '{"x": ' + nested(1000) + "}"})
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    r = httpx.post(f"{base}/graphql", headers=headers, timeout=30, content=(
        '{"query": "{ me { id } }", "extensions": {"x": ' + nested(1000) + "}}"))
    assert r.status_code == 400, r.text
    assert refused(base, "json_depth") == before + 5
    # An ordinary input object is far within the bound; brackets in strings are no nesting.
    r = httpx.post(f"{base}/graphql", headers=headers, timeout=30, json={
        "query": "query($s: String) { gifts(search: $s) { totalCount } }",
        "variables": {"s": "[" * 50}})
    assert r.json() == {"data": {"gifts": {"totalCount": 0}}}


def test_long_documents_are_refused_before_parsing(base: str) -> None:
    """Comments, whitespace and strings are no tokens: a document of a 900 KB comment
    passed the token limit, cost the lexer ~0.3 s, and the parse cache kept its text."""
    token = sign_up(base)
    headers = {"authorization": f"Bearer {token}"}
    before = refused(base, "query_length")
    for i in range(3):
        document = f"# {i} " + "x" * 900_000 + "\n{ me { id } }"
        r = httpx.post(f"{base}/graphql", json={"query": document}, headers=headers,
                       timeout=30)
        error = r.json()["errors"][0]
        assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX", r.text[:300]
        assert error["extensions"]["measure"] == "length"
        assert error["extensions"]["limit"] == 50_000
        assert "data" not in r.json()
    assert refused(base, "query_length") == before + 3
    within = "# " + "x" * 40_000 + "\n{ me { id } }"  # a long comment, within the bound
    r = httpx.post(f"{base}/graphql", json={"query": within}, headers=headers, timeout=30)
    assert r.json()["data"]["me"]["id"]


def test_cached_results_are_keyed_by_digest_and_counted_with_their_overhead() -> None:
    """A tiny result with a megabyte of (unused) variables was kept under a key holding
    the variables and the document, neither counted: ~1 MB of memory per entry within a
    bound meant for 32 MiB of results."""
    user = uuid.uuid4()
    padding = {"pad": "x" * 1_000_000}
    key = _key(user, "{ me { id } }" + " " * 40_000, None, padding)
    assert key is not None
    assert len(pickle.dumps(key)) < 300
    assert key != _key(user, "{ me { id } }", None, padding)  # still tells them apart
    assert key != _key(user, "{ me { id } }" + " " * 40_000, "A", padding)
    assert _key(user, "{ me { id } }", None, {"a": 1, "b": 2}) == \
        _key(user, "{ me { id } }", None, {"b": 2, "a": 1})
    store = ResultStore(max_bytes=100_000)
    for i in range(10_000):
        store.put(("k", i), 1, {"me": {"id": "x"}})
    assert len(store.entries) <= 100_000 // 256  # each entry costs far more than its JSON
    assert store.size <= store.max_bytes


@pytest.mark.parametrize("query", [
    "{ me { id } ",  # a syntax error
    "# " + "x" * 60_000 + "\n{ me { id } }",  # refused before parsing (query_length)
])
async def test_a_refused_document_leaves_no_cycle_holding_the_request(
    http: httpx.AsyncClient, query: str,
) -> None:
    """A parse error escaped to Strawberry's `Schema.execute`, whose frame (in the error's
    traceback) held the execution context holding the error: the request's body stayed
    in memory until a full collection (+0.9 MB of RSS per 900 KB request, for hundreds)."""
    gc.collect()
    gc.disable()
    try:
        r = await http.post("/graphql", json={"query": query, "pad": "x" * 100_000})
        assert r.json()["errors"][0]["extensions"]["code"] in ("BAD_USER_INPUT",
                                                               "QUERY_TOO_COMPLEX")
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        frames = [f"{o.f_code.co_filename}:{o.f_code.co_name}" for o in gc.garbage
                  if isinstance(o, types.FrameType)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert frames == []


def family_of(base: str, token: str) -> uuid.UUID:
    r = httpx.post(f"{base}/graphql", json={"query": "{ family { id } }"}, timeout=10,
                   headers={"authorization": f"Bearer {token}"})
    return decode_id(r.json()["data"]["family"]["id"], "Family")


async def test_one_caller_runs_a_bounded_number_of_requests_at_once(database_url: str) -> None:
    """A family's requests beyond `max_requests_per_caller` wait for one of its own, then
    are refused (RATE_LIMITED); another family's go past them. Held here by a mutation
    waiting for its family's event lock, which the test holds."""
    with serving(database_url, GIFTGRAPH_MAX_REQUESTS_PER_CALLER="1",
                 GIFTGRAPH_REQUEST_WAIT_SECONDS="0.5") as url:
        token, other = sign_up(url, "Greedy"), sign_up(url, "Other")
        family = family_of(url, token)
        before = refused(url, "requests_per_caller")
        conn = await asyncpg.connect(_dsn(database_url))
        lock = conn.transaction()
        await lock.start()
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                           str(family))
        query = {"query": "{ me { id } }"}
        async with httpx.AsyncClient(timeout=10) as client:
            held = asyncio.create_task(client.post(f"{url}/graphql", headers={
                "authorization": f"Bearer {token}"}, json={
                "query": 'mutation { createPerson(input: {name: "Held"}) { id } }'}))
            await asyncio.sleep(0.5)  # the mutation waits for the lock, in its turn
            r = await client.post(f"{url}/graphql", json=query, headers={
                "authorization": f"Bearer {token}",
                "accept": "application/graphql-response+json"})
            assert r.status_code == 429, r.text
            error = r.json()["errors"][0]
            assert error["extensions"]["code"] == "RATE_LIMITED"
            assert r.headers["retry-after"] == "1"
            assert refused(url, "requests_per_caller") == before + 1
            r = await client.post(f"{url}/graphql", json=query,
                                  headers={"authorization": f"Bearer {other}"})
            assert r.json()["data"]["me"]["id"]  # another family is served meanwhile
            # A forged token is no family's: its caller is its IP, not the greedy family.
            forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
            r = await client.post(f"{url}/graphql", json=query,
                                  headers={"authorization": f"Bearer {forged}"})
            assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            await lock.rollback()
            await conn.close()
            assert (await held).json()["data"]["createPerson"]["id"]
            r = await client.post(f"{url}/graphql", json=query,
                                  headers={"authorization": f"Bearer {token}"})
            assert r.json()["data"]["me"]["id"]


def test_a_slow_body_holds_no_turn_of_its_caller(database_url: str) -> None:
    """Requests whose bodies are still coming take no turn: two anonymous ones that never
    finish leave their IP's next request (a login, a refresh) to run at once."""
    with serving(database_url, GIFTGRAPH_MAX_REQUESTS_PER_CALLER="1",
                 GIFTGRAPH_REQUEST_WAIT_SECONDS="0.5") as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as one, \
                socket.create_connection(("127.0.0.1", port), timeout=10) as two:
            for slow in (one, two):
                slow.sendall(b"POST /graphql HTTP/1.1\r\nHost: giftgraph\r\n"
                             b"Content-Type: application/json\r\nContent-Length: 100\r\n"
                             b"\r\n{")
            time.sleep(0.3)  # the server has their headers
            r = httpx.post(f"{url}/graphql", json={"query": "{ __typename }"}, timeout=10)
            assert r.status_code == 200, r.text
            assert r.json() == {"data": {"__typename": "Query"}}


async def test_a_familys_members_share_one_mutation_budget(database_url: str) -> None:
    """Members are an ADMIN's to create, each with a budget of its own: without a budget
    per family, a family of n members had n budgets (120 a minute each)."""
    app = create_app(make_settings(database_url, mutation_rate="100/minute",
                                   family_mutation_rate="4/minute"))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        gql = GQL(http)
        admin, other = await sign_up_in(gql, "Many"), await sign_up_in(gql, "Other")
        register = "mutation($i: RegisterUserInput!) { registerUser(input: $i) { id } }"
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        assert (await admin.client(register, {"i": {
            "email": email, "password": "correct horse battery", "displayName": "M"}})
        ).errors == []
        login = await gql("mutation($e: String!, $p: String!) { login(email: $e, password: $p)"
                          " { accessToken } }", {"e": email, "p": "correct horse battery"})
        member = gql.as_(login.data["login"]["accessToken"])
        create = 'mutation { createPerson(input: {name: "P"}) { id } }'
        assert (await admin.client(create)).errors == []
        assert (await member(create)).errors == []
        two = 'mutation { a: createPerson(input: {name: "A"}) { id } ' \
              'b: createPerson(input: {name: "B"}) { id } }'
        limited = await member(two)  # 1 + 1 + 1 spent of 4: two more are one too many
        assert limited.codes == ["RATE_LIMITED"]
        assert (await admin.client("{ persons { totalCount } }")).data["persons"][
            "totalCount"] == 2  # nothing written past the family's budget
        metrics = (await http.get("/metrics")).text
        assert 'giftgraph_admission_refused_total{bound="family_mutation_rate"} 1.0' in metrics
        assert (await other.client(two)).errors == []  # another family's budget


FRAGMENT = ("fragment F on Query { me { id email displayName role isActive createdAt "
            "updatedAt family { id name currency } } }")


def near_the_limits(salt: str, operations: int = 300) -> str:
    """A new document near the token limit (~6.7 KB): many operations, one fragment."""
    return " ".join(f"query q{i} {{ ...F }}" for i in range(operations)) \
        + f" {FRAGMENT} # {salt}"


async def test_new_documents_spend_their_callers_analysis_allowance(
        database_url: str) -> None:
    """Parsing and validating a document not seen before is charged to its caller (its
    family, else its IP); past its allowance a new document is RATE_LIMITED before it is
    parsed, while documents already parsed, and other callers, go on. Before, one caller
    (no account needed) sending new documents near the limits held the loop ~75 ms each."""
    with serving(database_url, GIFTGRAPH_ANALYSIS_SECONDS_PER_CALLER="0.01",
                 GIFTGRAPH_ANALYSIS_BURST_SECONDS="0.05") as url:
        token = sign_up(url, "Analysed")
        before = refused(url, "analysis_seconds")
        codes = []
        async with httpx.AsyncClient(timeout=30) as client:
            for n in range(40):
                r = await client.post(f"{url}/graphql", json={
                    "query": near_the_limits(str(n)), "operationName": "q0"})
                codes.append(r.json()["errors"][0]["extensions"]["code"])
                if codes[-1] == "RATE_LIMITED":
                    retry = r.json()["errors"][0]["extensions"]["retryAfter"]
                    break
            assert codes[0] == "UNAUTHENTICATED"  # parsed and validated, then answered
            assert codes[-1] == "RATE_LIMITED", codes
            assert 1 <= retry <= 201
            assert refused(url, "analysis_seconds") == before + 1
            # The first document is parsed already: it costs nothing and is answered.
            r = await client.post(f"{url}/graphql", json={
                "query": near_the_limits("0"), "operationName": "q0"})
            assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            # Another caller (a family, from its verified token) has its own allowance.
            r = await client.post(f"{url}/graphql", headers={
                "authorization": f"Bearer {token}"}, json={
                "query": near_the_limits("family"), "operationName": "q0"})
            assert r.json()["data"]["me"]["id"], r.text
            # A parse ahead of the operation (a streaming transport's check that it is a
            # subscription) spends the same allowance, and none is made for a caller that
            # has spent it (it was free, every time, before).
            bearer = {"authorization": f"Bearer {token}"}
            for n in range(40):
                r = await client.post(f"{url}/graphql", headers=bearer, json={
                    "query": near_the_limits(f"family {n}"), "operationName": "q0"})
                if "errors" in r.json():
                    assert r.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
                    break
            r = await client.post(f"{url}/graphql", headers={
                **bearer, "accept": 'multipart/mixed;subscriptionSpec="1.0"'},
                json={"query": near_the_limits("streamed"), "operationName": "q0"})
            assert r.status_code == 429, r.text  # not parsed (and then refused 400)
            assert r.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"


def test_parsed_documents_are_bounded_by_their_texts_characters() -> None:
    """What the parsed-document cache holds (and, through it, the validation cache) is
    bounded by the characters of the texts: documents near the token limit take ~100
    times their text once parsed, and 512 of them (the count alone) held 360 MB."""
    from graphql import DocumentNode, specified_rules

    from giftgraph.admission.checks import ParsedDocuments
    from giftgraph.schema.extensions import ValidationCache
    from giftgraph.schema.schema import build_schema

    schema = build_schema()._schema
    validate = ValidationCache(suggest=False)
    documents = ParsedDocuments(size=512, chars=64 * 1024)
    gc.collect()
    alive = sum(isinstance(o, DocumentNode) for o in gc.get_objects())
    texts = [near_the_limits(f"bounded {n}") for n in range(40)]
    for text in texts:
        assert validate(schema, documents.parse(text, 2_000), tuple(specified_rules)) == []
    assert documents.held <= 64 * 1024
    assert len(documents.documents) == 64 * 1024 // len(texts[0])
    gc.collect()
    kept = sum(isinstance(o, DocumentNode) for o in gc.get_objects()) - alive
    assert kept == len(documents.documents)  # the validation cache holds none beyond
    again = documents.parse(texts[-1], 2_000)
    assert documents.parse(texts[-1], 2_000) is again  # held: the same object
    huge = near_the_limits("huge", 4_000)  # over the budget alone: parsed, never held
    assert len(huge) > 64 * 1024
    documents.parse(huge, 100_000)
    assert (huge, 100_000) not in documents.documents
    # One-letter tokens take ~280 times their text parsed: the tokens are bounded too.
    letters = ParsedDocuments(size=512, chars=64 * 1024, tokens=10_000)
    for n in range(10):
        letters.parse(f"query L{n} {{" + " a" * 1990 + " }", 2_000)
    assert letters.held_tokens <= 10_000
    assert len(letters.documents) == 10_000 // 1996  # 1,996 tokens each
