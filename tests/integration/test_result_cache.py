"""The read-result cache: a repeated query is answered from it while the family is unchanged,
and never after a change (ours, another member's, another instance's), nor across families."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

from giftgraph.app import create_app
from giftgraph.schema import cache
from giftgraph.schema.cache import ResultStore
from tests.conftest import GQL, Account
from tests.integration.test_no_n_plus_one import count_statements

READ = """query Read { lists(first: 10) { edges { node { name
  items(first: 10) { edges { node { status gift { name } } } } } } } }"""
SET_STATUS = ("mutation($i: ID!, $s: ItemStatus!) { setListItemStatus(id: $i, status: $s) "
              "{ status } }")
RENAME = 'mutation($l: ID!, $n: String!) { updateList(id: $l, input: {name: $n}) { name } }'


async def _list_with_item(c: GQL, name: str = "Birthday") -> tuple[str, str]:
    gl = (await c("mutation($n: String!) { createList(input: {name: $n, kind: IDEAS}) { id } }",
                  {"n": name})).data["createList"]["id"]
    item = (await c('mutation($l: ID!) { addListItem(listId: $l, input: {gift: {name: "Kite"}})'
                    " { id } }", {"l": gl})).data["addListItem"]["id"]
    return gl, item


def _statuses(data: dict[str, Any]) -> list[str]:
    return [i["node"]["status"] for e in data["lists"]["edges"]
            for i in e["node"]["items"]["edges"]]


async def test_repeat_is_cached_and_a_mutation_is_seen_at_once(app: Any, alice: Account) -> None:
    c = alice.client
    _, item = await _list_with_item(c)
    first = (await c(READ)).data
    assert _statuses(first) == ["IDEA"]
    with count_statements(app) as statements:
        again = (await c(READ)).data
    assert again == first
    # One round trip: the caller's row and its family's version in one statement.
    assert len(statements) == 1, statements
    assert "max(events.seq)" in statements[0]
    assert "FROM users" in statements[0]
    assert (await c(SET_STATUS, {"i": item, "s": "SELECTED"})).data
    with count_statements(app) as statements:
        after = (await c(READ)).data
    assert _statuses(after) == ["SELECTED"]  # no stale read
    assert any("gift_lists" in s for s in statements[1:])  # a miss: the read ran
    assert (await c(READ)).data == after


async def test_a_change_by_another_member_is_seen(gql: GQL, alice: Account) -> None:
    c = alice.client
    gl, _ = await _list_with_item(c)
    email = f"bob-{uuid.uuid4().hex[:8]}@example.com"
    await c("mutation($i: RegisterUserInput!) { registerUser(input: $i) { id } }",
            {"i": {"email": email, "password": "bob's password", "displayName": "Bob"}})
    token = (await gql("mutation($e: String!, $p: String!) { login(email: $e, password: $p)"
                       " { accessToken } }", {"e": email, "p": "bob's password"})
             ).data["login"]["accessToken"]
    assert (await c(READ)).data["lists"]["edges"][0]["node"]["name"] == "Birthday"
    assert (await gql.as_(token)(RENAME, {"l": gl, "n": "Christmas"})).data
    assert (await c(READ)).data["lists"]["edges"][0]["node"]["name"] == "Christmas"


async def test_a_change_committed_by_another_instance_is_seen(
    app: Any, settings: Any, alice: Account
) -> None:
    """No pub/sub between the two apps here (memory broadcast): the version check alone
    must catch the change."""
    c = alice.client
    gl, _ = await _list_with_item(c)
    assert (await c(READ)).data["lists"]["edges"][0]["node"]["name"] == "Birthday"
    other = create_app(settings)
    async with other.router.lifespan_context(other), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=other), base_url="http://other"
    ) as http:
        assert (await GQL(http, alice.token)(RENAME, {"l": gl, "n": "Christmas"})).data
    assert (await c(READ)).data["lists"]["edges"][0]["node"]["name"] == "Christmas"


async def test_families_never_share_results(alice: Account, mallory: Account) -> None:
    await _list_with_item(alice.client, "Alice's list")
    await _list_with_item(mallory.client, "Mallory's list")
    for _ in range(2):
        alices = (await alice.client(READ)).data["lists"]["edges"]
        mallorys = (await mallory.client(READ)).data["lists"]["edges"]
        assert [e["node"]["name"] for e in alices] == ["Alice's list"]
        assert [e["node"]["name"] for e in mallorys] == ["Mallory's list"]


async def test_results_with_errors_and_other_variables_are_not_reused(
    app: Any, alice: Account
) -> None:
    c = alice.client
    missing = "query($id: ID!) { node(id: $id) { id } }"
    for _ in range(2):
        assert (await c(missing, {"id": "bm9wZQ"})).codes == ["NOT_FOUND"]
    gl, _ = await _list_with_item(c)
    by_id = "query($id: ID!) { node(id: $id) { ... on GiftList { name } } }"
    assert (await c(by_id, {"id": gl})).data == {"node": {"name": "Birthday"}}
    assert (await c(by_id, {"id": "bm9wZQ"})).codes == ["NOT_FOUND"]


def _hit(store: ResultStore, key: str, version: int) -> Any:
    found = store.get(key, version)
    return None if found is None else orjson.loads(orjson.dumps(found))


def test_store_is_bounded_least_recently_used_first() -> None:
    store = ResultStore(max_bytes=800, overhead=0)  # entries of up to 100 bytes of JSON
    value = "x" * 80  # 82 bytes as JSON
    for key in "abcdefgh":
        store.put(key, 1, value)
    assert _hit(store, "a", 1) == value  # now the most recently used
    assert _hit(store, "a", 2) is None  # stored at another version: a miss
    store.put("i", 1, value)
    store.put("j", 1, value)  # over 800 bytes: "b", the least recently used, goes
    assert _hit(store, "b", 1) is None
    assert _hit(store, "a", 1) == value
    assert store.size <= store.max_bytes
    store.put("huge", 1, "x" * 200)  # over an eighth of the budget: never kept
    assert _hit(store, "huge", 1) is None


def test_a_hit_is_the_stored_json_as_it_is() -> None:
    """Written into the response by orjson without being decoded and encoded again (and
    immutable: no hit can change what the next one gets)."""
    store = ResultStore(max_bytes=800)
    store.put("k", 1, {"lists": [1, 2], "name": "é"})
    hit = store.get("k", 1)
    assert isinstance(hit, orjson.Fragment)
    assert orjson.dumps({"data": hit}) == '{"data":{"lists":[1,2],"name":"é"}}'.encode()


async def test_a_failing_version_lookup_only_skips_the_cache(
    alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _list_with_item(alice.client)
    expected = (await alice.client(READ)).data

    async def unavailable(_: Any) -> int:
        raise OSError("connection refused")

    monkeypatch.setattr(cache, "family_version", unavailable)
    assert (await alice.client(READ)).data == expected
