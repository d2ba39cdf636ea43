"""Persisted documents through every way in: APQ over HTTP (POST, GET with the hash alone),
in a socket's `subscribe`, trusted documents and the allow-list, registrations shared by
two instances, and Apollo Client's persisted-queries link, unmodified."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text

from giftgraph.app import create_app
from giftgraph.config import Settings
from giftgraph.persisted import digest
from tests.conftest import GQL, make_settings, sign_up
from tests.integration.test_live import WsClient
from tests.integration.test_live_features import Server, running
from tests.support import free_port

ME = "query Me { me { id email } }"
FAMILY = "query Family { family { name } }"


def apq(document: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": digest(document)}}


async def _open(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _open(make_settings(database_url)):
        yield c


def _codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors") or []]


async def _stored(database_url: str) -> set[str]:
    """The documents stored (each under its registering caller's key)."""
    from giftgraph.db.engine import create_database

    database = create_database(database_url, make_settings(database_url))
    try:
        async with database.sessions() as session:
            rows = await session.execute(text("SELECT document FROM persisted_documents"))
            return {row[0] for row in rows}
    finally:
        await database.dispose()


async def test_apq_over_post_registers_then_runs_by_hash(
        client: httpx.AsyncClient, database_url: str) -> None:
    from tests.conftest import GQL

    alice = await sign_up(GQL(client))
    auth = {"Authorization": f"Bearer {alice.token}"}
    first = await client.post("/graphql", json={"extensions": apq(ME)}, headers=auth)
    assert first.status_code == 200
    body = first.json()
    assert _codes(body) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert body["errors"][0]["message"] == "PersistedQueryNotFound"
    assert body["errors"][0]["extensions"]["traceId"]
    full = await client.post("/graphql", json={"query": ME, "extensions": apq(ME)},
                             headers=auth)
    assert full.json()["data"]["me"]["email"] == alice.email
    assert ME in await _stored(database_url)
    again = await client.post("/graphql", json={"extensions": apq(ME)}, headers=auth)
    assert again.json()["data"]["me"]["email"] == alice.email
    # Under graphql-response+json an unknown hash is a request error: 400, same body.
    unknown = await client.post("/graphql", json={"extensions": apq(FAMILY)}, headers={
        **auth, "Accept": "application/graphql-response+json"})
    assert unknown.status_code == 400
    assert _codes(unknown.json()) == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_apq_get_with_the_hash_alone(client: httpx.AsyncClient) -> None:
    from tests.conftest import GQL

    alice = await sign_up(GQL(client))
    auth = {"Authorization": f"Bearer {alice.token}", "Accept": "*/*"}
    params = {"extensions": json.dumps(apq(ME))}
    miss = await client.get("/graphql", params=params, headers=auth)
    assert miss.status_code == 200, miss.text  # not GraphiQL's page, whatever the Accept
    assert _codes(miss.json()) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert (await client.get("/graphql", params={**params, "query": ME},
                             headers=auth)).json()["data"]["me"]["id"] == alice.user_id
    hit = await client.get("/graphql", params=params, headers=auth)
    assert hit.json()["data"]["me"]["id"] == alice.user_id


async def test_a_hash_is_found_only_by_the_family_that_registered_it(
        client: httpx.AsyncClient) -> None:
    """Alice's family registers a document with a search term in it: its hash alone runs
    it for her family (POST, GET), and is unknown (PERSISTED_QUERY_NOT_FOUND) to another
    family and to an anonymous caller, as a hash no one registered: it confirms no guess
    of what she typed. Each may register it in its own scope, and Alice's still runs."""
    alice = await sign_up(GQL(client), "Alice's family")
    mallory = await sign_up(GQL(client), "Mallory's family")
    secret = '{ persons(search: "a surprise for Kim") { totalCount } }'
    params = {"extensions": json.dumps(apq(secret))}
    own = {"Authorization": f"Bearer {alice.token}"}
    other = {"Authorization": f"Bearer {mallory.token}"}
    first = await client.post("/graphql", json={"query": secret, "extensions": apq(secret)},
                              headers=own)
    assert first.json() == {"data": {"persons": {"totalCount": 0}}}
    assert (await client.get("/graphql", params=params, headers=own)).json() == first.json()
    for headers in (other, {}):
        for r in (await client.get("/graphql", params=params, headers=headers),
                  await client.post("/graphql", json={"extensions": apq(secret)},
                                    headers=headers)):
            assert _codes(r.json()) == ["PERSISTED_QUERY_NOT_FOUND"], r.json()
    registered = await client.post("/graphql", json={"query": secret,
                                                     "extensions": apq(secret)}, headers=other)
    assert registered.json() == {"data": {"persons": {"totalCount": 0}}}
    assert (await client.get("/graphql", params=params, headers=other)).json() \
        == registered.json()
    assert _codes((await client.get("/graphql", params=params)).json()) \
        == ["PERSISTED_QUERY_NOT_FOUND"]
    assert (await client.get("/graphql", params=params, headers=own)).json() == first.json()


async def test_a_hash_that_does_not_match_and_an_invalid_document_store_nothing(
        client: httpx.AsyncClient, database_url: str) -> None:
    wrong = await client.post("/graphql", json={"query": ME, "extensions": apq(FAMILY)})
    assert wrong.status_code == 200
    assert _codes(wrong.json()) == ["BAD_USER_INPUT"]
    invalid = "{ noSuchField }"
    r = await client.post("/graphql", json={"query": invalid, "extensions": apq(invalid)})
    assert _codes(r.json()) == ["BAD_USER_INPUT"]
    malformed = await client.post("/graphql", json={
        "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "nothex"}}})
    assert _codes(malformed.json()) == ["BAD_USER_INPUT"]
    assert await _stored(database_url) == set()


async def test_a_mutation_that_writes_a_string_itself_is_never_stored(
        client: httpx.AsyncClient, database_url: str) -> None:
    """A login with its password in the document runs, but its hash is not stored: else
    the hash alone, from anyone, anywhere, would log in again. The same mutation with its
    values in variables is stored and runs by hash."""
    alice = await sign_up(GQL(client))
    inline = (f'mutation {{ login(email: "{alice.email}", password: "{alice.password}") '
              '{ accessToken } }')
    ran = await client.post("/graphql", json={"query": inline, "extensions": apq(inline)})
    assert ran.json()["data"]["login"]["accessToken"]
    replay = await client.post("/graphql", json={"extensions": apq(inline)})
    assert _codes(replay.json()) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert inline not in await _stored(database_url)
    rename = "mutation($n: String!) { createPerson(input: {name: $n}) { name } }"
    auth = {"Authorization": f"Bearer {alice.token}"}
    first = await client.post("/graphql", json={"query": rename, "extensions": apq(rename),
                                                 "variables": {"n": "Kim"}}, headers=auth)
    assert first.json()["data"]["createPerson"]["name"] == "Kim"
    by_hash = await client.post("/graphql", json={"extensions": apq(rename),
                                                  "variables": {"n": "Lee"}}, headers=auth)
    assert by_hash.json()["data"]["createPerson"]["name"] == "Lee"


async def test_registrations_are_bounded_per_caller(database_url: str) -> None:
    settings = make_settings(database_url, persisted_register_rate="2/minute")
    async for client in _open(settings):
        documents = [f"query Q{i} {{ __typename }}" for i in range(3)]
        for document in documents:
            r = await client.post("/graphql", json={"query": document,
                                                    "extensions": apq(document)})
            assert r.json()["data"] == {"__typename": "Query"}  # answered all the same
        assert await _stored(database_url) == set(documents[:2])
        metrics = (await client.get("/metrics")).text
        assert 'giftgraph_admission_refused_total{bound="persisted_register_rate"} 1.0' \
            in metrics


async def test_a_registration_on_one_instance_serves_another(database_url: str) -> None:
    settings = make_settings(database_url)
    async for one in _open(settings):
        async for two in _open(settings):
            r = await one.post("/graphql", json={"query": "{ __typename }",
                                                 "extensions": apq("{ __typename }")})
            assert r.json()["data"] == {"__typename": "Query"}
            r = await two.post("/graphql", json={"extensions": apq("{ __typename }")})
            assert r.json() == {"data": {"__typename": "Query"}}
            # A family's registration serves that family on the other instance, and is
            # unknown there to another family.
            alice = await sign_up(GQL(one))
            mallory = await sign_up(GQL(two))
            r = await one.post("/graphql", json={"query": ME, "extensions": apq(ME)},
                               headers={"Authorization": f"Bearer {alice.token}"})
            assert r.json()["data"]["me"]["id"] == alice.user_id
            r = await two.post("/graphql", json={"extensions": apq(ME)},
                               headers={"Authorization": f"Bearer {alice.token}"})
            assert r.json()["data"]["me"]["id"] == alice.user_id
            r = await two.post("/graphql", json={"extensions": apq(ME)},
                               headers={"Authorization": f"Bearer {mallory.token}"})
            assert _codes(r.json()) == ["PERSISTED_QUERY_NOT_FOUND"]


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "persisted-documents.json"
    path.write_bytes(orjson.dumps({digest(ME): ME, digest(FAMILY): FAMILY}))
    return path


async def test_trusted_documents_only(database_url: str, manifest: Path) -> None:
    settings = make_settings(database_url, trusted_documents=manifest,
                             trusted_documents_only=True)
    async for client in _open(settings):
        by_id = await client.post("/graphql", json={"documentId": f"sha256:{digest(ME)}"})
        assert _codes(by_id.json()) == ["UNAUTHENTICATED"]  # it ran
        by_get = await client.get("/graphql", params={"documentId": digest(ME)})
        assert _codes(by_get.json()) == ["UNAUTHENTICATED"]
        same_text = await client.post("/graphql", json={"query": ME})
        assert _codes(same_text.json()) == ["UNAUTHENTICATED"]
        other = "{ __typename }"
        for body in ({"query": other}, {"query": other, "extensions": apq(other)}):
            r = await client.post("/graphql", json=body)
            assert r.status_code == 200
            assert _codes(r.json()) == ["PERSISTED_QUERY_NOT_ALLOWED"]
        assert await _stored(database_url) == set()


CODEGEN = Path(__file__).resolve().parents[2] / "examples" / "codegen"


async def test_a_graphql_codegen_manifest(database_url: str) -> None:
    """examples/codegen/persisted-documents.json as graphql-codegen's client preset wrote it
    (keys `sha256:<hex>`, documents as it prints them), in allow-list mode: each document
    runs by the `__meta__.hash` the generated code sends, over POST and GET; nothing else."""
    manifest = orjson.loads((CODEGEN / "persisted-documents.json").read_bytes())
    me = next(key for key, document in manifest.items() if document.startswith("query Me"))
    assert me.startswith("sha256:")
    async for open_client in _open(make_settings(database_url)):
        account = await sign_up(GQL(open_client))
    settings = make_settings(database_url, trusted_documents=CODEGEN / "persisted-documents.json",
                             trusted_documents_only=True)
    auth = {"Authorization": f"Bearer {account.token}"}
    async for client in _open(settings):
        posted = await client.post("/graphql", json={"documentId": me}, headers=auth)
        assert posted.json()["data"]["me"]["email"] == account.email
        got = await client.get("/graphql", params={"documentId": me}, headers=auth)
        assert got.json()["data"]["me"]["email"] == account.email
        other = await client.post("/graphql", json={"query": "{ me { id } }"}, headers=auth)
        assert _codes(other.json()) == ["PERSISTED_QUERY_NOT_ALLOWED"]


def test_a_bad_manifest_is_a_start_up_error(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_bytes(orjson.dumps({digest(ME): FAMILY}))
    proc = subprocess.run(  # noqa: S603 - our own entry point
        [shutil.which("giftgraph") or "giftgraph", "serve", "--port", str(free_port())],
        env={**os.environ, "GIFTGRAPH_TRUSTED_DOCUMENTS": str(bad)},
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "GIFTGRAPH_TRUSTED_DOCUMENTS" in proc.stderr + proc.stdout
    assert "does not match" in proc.stderr + proc.stdout


@pytest.fixture
async def live(database_url: str, manifest: Path) -> AsyncIterator[Server]:
    async with running(make_settings(database_url, trusted_documents=manifest)) as srv:
        yield srv


EVENTS = "subscription Events { familyEvents { kind } }"


async def test_a_socket_subscribes_by_hash(live: Server) -> None:
    token = (await live.gql(
        "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
        {"i": {"familyName": "F", "email": "s@example.com", "password": "correct horse b",
               "displayName": "S"}}))["signUp"]["accessToken"]
    ws = await WsClient.connect(live.base, {"authorization": f"Bearer {token}"})
    try:
        await ws.ws.send(json.dumps({"id": "1", "type": "subscribe",
                                     "payload": {"extensions": apq(EVENTS)}}))
        miss = await ws.receive()
        assert miss["type"] == "error"
        assert miss["id"] == "1"
        assert miss["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
        assert miss["payload"][0]["message"] == "PersistedQueryNotFound"
        before = live.subscribers()
        await ws.ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": {
            "query": EVENTS, "extensions": apq(EVENTS)}}))
        await live.listening(before + 1)
        await ws.ws.send(json.dumps({"id": "3", "type": "subscribe",
                                     "payload": {"extensions": apq(EVENTS)}}))
        await live.listening(before + 2)
        await ws.ws.send(json.dumps({"id": "4", "type": "subscribe",
                                     "payload": {"documentId": f"sha256:{digest(ME)}"}}))
        answer = await ws.receive()
        assert answer["id"] == "4"
        assert answer["payload"]["data"]["me"]["id"]
        assert (await ws.receive())["type"] == "complete"
        await live.gql('mutation { createPerson(input: {name: "P"}) { id } }', token=token)
        heard = [await ws.receive() for _ in range(2)]
        assert sorted(m["id"] for m in heard) == ["2", "3"]
        assert {m["payload"]["data"]["familyEvents"]["kind"] for m in heard} == {"ADDED"}
        # Another family's socket: the hash is unknown to it; the manifest's is everyone's.
        stranger = (await live.gql(
            "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
            {"i": {"familyName": "G", "email": "u@example.com", "password": "correct horse b",
                   "displayName": "U"}}))["signUp"]["accessToken"]
        other = await WsClient.connect(live.base, {"authorization": f"Bearer {stranger}"})
        try:
            await other.ws.send(json.dumps({"id": "1", "type": "subscribe",
                                            "payload": {"extensions": apq(EVENTS)}}))
            miss = await other.receive()
            assert (miss["type"], miss["payload"][0]["extensions"]["code"]) == (
                "error", "PERSISTED_QUERY_NOT_FOUND")
            await other.ws.send(json.dumps({"id": "2", "type": "subscribe",
                                            "payload": {"documentId": f"sha256:{digest(ME)}"}}))
            assert (await other.receive())["payload"]["data"]["me"]["id"]
        finally:
            await other.ws.close()
    finally:
        await ws.ws.close()


async def test_a_query_marked_live_registers_by_hash(live: Server) -> None:
    """`query @live` runs as a live subscription (its text rewritten): its hash is stored
    for the text the client sent, and runs by hash alone afterwards."""
    token = (await live.gql(
        "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
        {"i": {"familyName": "Live", "email": "q@example.com", "password": "correct horse b",
               "displayName": "Q"}}))["signUp"]["accessToken"]
    marked = "query @live { family { name } }"
    ws = await WsClient.connect(live.base, {"authorization": f"Bearer {token}"})
    try:
        for op, payload in (("1", {"query": marked, "extensions": apq(marked)}),
                            ("2", {"extensions": apq(marked)})):
            await ws.ws.send(json.dumps({"id": op, "type": "subscribe", "payload": payload}))
            first = await ws.receive()
            assert (first["id"], first["type"]) == (op, "next"), first
            assert first["payload"]["data"] == {"family": {"name": "Live"}}
            await ws.ws.send(json.dumps({"id": op, "type": "complete"}))
    finally:
        await ws.ws.close()


async def test_a_socket_in_allow_list_mode(database_url: str, manifest: Path) -> None:
    async with running(make_settings(database_url)) as open_srv:
        token = (await open_srv.gql(
            "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
            {"i": {"familyName": "F", "email": "t@example.com", "password": "correct horse b",
                   "displayName": "T"}}))["signUp"]["accessToken"]
    settings = make_settings(database_url, trusted_documents=manifest,
                             trusted_documents_only=True)
    async with running(settings) as srv:
        ws = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
        try:
            await ws.ws.send(json.dumps({"id": "1", "type": "subscribe",
                                         "payload": {"query": EVENTS}}))
            refused = await ws.receive()
            assert refused["type"] == "error"
            assert refused["id"] == "1"
            assert refused["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_ALLOWED"
            await ws.ws.send(json.dumps({"id": "2", "type": "subscribe",
                                         "payload": {"documentId": digest(ME)}}))
            answer = await ws.receive()
            assert answer["id"] == "2"
            assert answer["payload"]["data"]["me"]["id"]
        finally:
            await ws.ws.close()
        # Nor over the HTTP streams: refused before any slot is held or anything runs.
        before = srv.subscribers()
        for path, accept in (("/graphql", 'multipart/mixed;subscriptionSpec="1.0"'),
                             ("/graphql/stream", "text/event-stream")):
            r = await srv.http.post(path, json={"query": EVENTS}, headers={
                "Accept": accept, "Authorization": f"Bearer {token}"})
            assert r.json()["errors"][0]["extensions"]["code"] \
                == "PERSISTED_QUERY_NOT_ALLOWED", (path, r.text)
        assert srv.subscribers() == before


async def test_unknown_hashes_over_a_socket_take_the_familys_start_turns(
        database_url: str) -> None:
    """Each operation a socket starts waits for its family's start turn before anything
    else, its persisted document's lookup too: unknown hashes sent in a row are paced
    (`subscription_starts_per_family`), not looked up as fast as they come (600
    statements a second for one family, before)."""
    settings = make_settings(database_url, family_subscription_start_burst=2,
                             family_subscription_start_rate=0.2)
    async with running(settings) as srv:
        token = (await srv.gql(
            "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
            {"i": {"familyName": "F", "email": "h@example.com", "password": "correct horse b",
                   "displayName": "H"}}))["signUp"]["accessToken"]
        ws = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
        for n in range(6):
            await ws.ws.send(json.dumps({"id": str(n), "type": "subscribe", "payload": {
                "extensions": apq(f"{{ me {{ id }} }} # {n}")}}))
        answered: list[str] = []

        async def until_quiet() -> None:
            while True:
                answered.append((await ws.receive(1.0))["payload"][0]["extensions"]["code"])

        with pytest.raises(TimeoutError):
            await until_quiet()
        assert answered == ["PERSISTED_QUERY_NOT_FOUND"] * 2  # the burst; the next in 5 s
        metrics = (await srv.http.get("/metrics")).text
        assert 'giftgraph_admission_refused_total{bound="subscription_starts_per_family"}' \
            in metrics
        await ws.ws.close()
