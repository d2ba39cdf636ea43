"""Bad input is BAD_USER_INPUT naming the field and writes nothing; malformed IDs are
NOT_FOUND; Relay pagination (caps, cursors both ways, totalCount, nested connections)."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from giftgraph.app import create_app
from tests.conftest import GQL, Account, GQLResult, make_settings, sign_up

# --- helpers -------------------------------------------------------------------------------


def gid(type_name: str, key: str) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{key}".encode()).decode().rstrip("=")


async def ok(c: GQL, query: str, variables: dict[str, Any] | None = None) -> Any:
    return (await c(query, variables)).data


COUNTS = """{
  persons { totalCount } occasions { totalCount } lists(first: 100) { totalCount
    edges { node { items { totalCount } } } }
  gifts { totalCount } users { totalCount } events { totalCount }
}"""


async def counts(c: GQL, world: World | None = None) -> dict[str, int]:
    """How many rows of each kind the family has (events included: every write logs one)."""
    d = await ok(c, COUNTS)
    out = {k: d[k]["totalCount"] for k in ("persons", "occasions", "lists", "gifts", "users",
                                           "events")}
    out["items"] = sum(e["node"]["items"]["totalCount"] for e in d["lists"]["edges"])
    if world is not None:
        r = await ok(c, "query($id: ID!) { comments(target: PERSON, targetId: $id)"
                        " { totalCount } }", {"id": world.person})
        out["comments"] = r["comments"]["totalCount"]
    return out


def assert_bad_input(r: GQLResult, field: str) -> None:
    assert r.codes == ["BAD_USER_INPUT"], r.body
    fields = r.errors[0]["extensions"].get("fields") or {}
    assert field in fields, r.errors[0]["extensions"]
    assert isinstance(fields[field], str)
    assert fields[field]


@dataclass
class World:
    person: str
    occasion: str
    gift_list: str
    gift: str
    item: str


@pytest.fixture
async def world(alice: Account) -> World:
    c = alice.client
    person = (await ok(c, 'mutation { createPerson(input: {name: "Mom"}) { id } }'))
    occasion = (await ok(c, 'mutation { createOccasion(input: {name: "Xmas", kind: HOLIDAY,'
                            ' date: "2099-12-25"}) { id } }'))
    gl = (await ok(c, 'mutation { createList(input: {name: "L", kind: IDEAS}) { id } }'))
    gift = (await ok(c, 'mutation { createGift(input: {name: "Book", price: "9.99",'
                        ' url: "https://www.books.com/1"}) { id } }'))
    item = (await ok(c, "mutation($l: ID!, $g: ID) { addListItem(listId: $l, input:"
                        " {giftId: $g, quantity: 2, notes: \"n\"}) { id } }",
                     {"l": gl["createList"]["id"], "g": gift["createGift"]["id"]}))
    return World(person["createPerson"]["id"], occasion["createOccasion"]["id"],
                 gl["createList"]["id"], gift["createGift"]["id"], item["addListItem"]["id"])


# --- BAD_USER_INPUT, nothing written ------------------------------------------------------

FUTURE = (date.today() + timedelta(days=2)).isoformat()
LONG_NAME = "x" * 201

CREATE_PERSON = "mutation($i: PersonInput!) { createPerson(input: $i) { id } }"
CREATE_OCCASION = "mutation($i: OccasionInput!) { createOccasion(input: $i) { id } }"
CREATE_LIST = "mutation($i: GiftListInput!) { createList(input: $i) { id } }"
CREATE_GIFT = "mutation($i: GiftInput!) { createGift(input: $i) { id } }"
ADD_ITEM = "mutation($l: ID!, $i: ListItemInput!) { addListItem(listId: $l, input: $i) { id } }"
ADD_COMMENT = "mutation($i: CommentInput!) { addComment(input: $i) { id } }"
REGISTER = "mutation($i: RegisterUserInput!) { registerUser(input: $i) { id } }"
OCC = {"name": "O", "kind": "OTHER", "date": "2099-01-01"}
USER = {"email": "new@example.com", "password": "long enough pw", "displayName": "New"}

# (id, query, input builder(world) -> variables, field)
CREATE_CASES: list[tuple[str, str, Any, str]] = [
    ("person-empty-name", CREATE_PERSON, lambda w: {"i": {"name": ""}}, "name"),
    ("person-blank-name", CREATE_PERSON, lambda w: {"i": {"name": "   "}}, "name"),
    ("person-long-name", CREATE_PERSON, lambda w: {"i": {"name": LONG_NAME}}, "name"),
    ("person-future-birthday", CREATE_PERSON,
     lambda w: {"i": {"name": "Kid", "birthday": FUTURE}}, "birthday"),
    ("occasion-empty-name", CREATE_OCCASION, lambda w: {"i": {**OCC, "name": ""}}, "name"),
    ("occasion-long-name", CREATE_OCCASION, lambda w: {"i": {**OCC, "name": LONG_NAME}}, "name"),
    ("occasion-negative-budget", CREATE_OCCASION,
     lambda w: {"i": {**OCC, "budget": "-1.00"}}, "budget"),
    ("list-empty-name", CREATE_LIST, lambda w: {"i": {"name": "", "kind": "IDEAS"}}, "name"),
    ("list-long-name", CREATE_LIST, lambda w: {"i": {"name": LONG_NAME, "kind": "IDEAS"}},
     "name"),
    ("list-3-decimals-budget", CREATE_LIST,
     lambda w: {"i": {"name": "L", "kind": "IDEAS", "budget": "1.234"}}, "budget"),
    ("gift-empty-name", CREATE_GIFT, lambda w: {"i": {"name": ""}}, "name"),
    ("gift-long-name", CREATE_GIFT, lambda w: {"i": {"name": LONG_NAME}}, "name"),
    ("gift-ftp-url", CREATE_GIFT, lambda w: {"i": {"name": "G", "url": "ftp://x"}}, "url"),
    ("gift-js-url", CREATE_GIFT,
     lambda w: {"i": {"name": "G", "url": "javascript:alert(1)"}}, "url"),
    ("gift-not-a-url", CREATE_GIFT, lambda w: {"i": {"name": "G", "url": "not a url"}}, "url"),
    ("gift-hostless-url", CREATE_GIFT, lambda w: {"i": {"name": "G", "url": "https://"}}, "url"),
    ("gift-bad-image-url", CREATE_GIFT,
     lambda w: {"i": {"name": "G", "imageUrl": "javascript:alert(1)"}}, "imageUrl"),
    ("gift-negative-price", CREATE_GIFT, lambda w: {"i": {"name": "G", "price": "-0.01"}},
     "price"),
    ("gift-3-decimals", CREATE_GIFT, lambda w: {"i": {"name": "G", "price": "1.999"}}, "price"),
    ("gift-space-in-host", CREATE_GIFT,
     lambda w: {"i": {"name": "G", "url": "http://exa mple.com"}}, "url"),
    ("gift-underscore-host", CREATE_GIFT,
     lambda w: {"i": {"name": "G", "url": "http://exa_mple.com/x"}}, "url"),
    ("gift-empty-label-host", CREATE_GIFT,
     lambda w: {"i": {"name": "G", "url": "https://shop..example/x"}}, "url"),
    ("gift-bad-port", CREATE_GIFT,
     lambda w: {"i": {"name": "G", "url": "https://shop.example:99999/x"}}, "url"),
    ("gift-percent-host", CREATE_GIFT,
     lambda w: {"i": {"name": "G", "url": "https://exa%20mple.com/x"}}, "url"),
    ("gift-image-space-in-host", CREATE_GIFT,
     lambda w: {"i": {"name": "G", "imageUrl": "https://img. example.com/a.png"}}, "imageUrl"),
    ("gift-bogus-currency", CREATE_GIFT, lambda w: {"i": {"name": "G", "currency": "XXQ"}},
     "currency"),
    ("gift-long-currency", CREATE_GIFT, lambda w: {"i": {"name": "G", "currency": "USDX"}},
     "currency"),
    ("gift-dotless-i-currency", CREATE_GIFT,  # str.upper() makes "INR" of it
     lambda w: {"i": {"name": "G", "currency": "\u0131nr"}}, "currency"),
    ("item-quantity-0", ADD_ITEM,
     lambda w: {"l": w.gift_list, "i": {"giftId": w.gift, "quantity": 0}}, "quantity"),
    ("item-both-gift-sources", ADD_ITEM,
     lambda w: {"l": w.gift_list, "i": {"giftId": w.gift, "gift": {"name": "G"}}}, "giftId"),
    ("item-no-gift-source", ADD_ITEM, lambda w: {"l": w.gift_list, "i": {"quantity": 1}},
     "giftId"),
    ("item-inline-bad-price", ADD_ITEM,
     lambda w: {"l": w.gift_list, "i": {"gift": {"name": "G", "price": "-5"}}}, "gift.price"),
    ("item-inline-bad-url", ADD_ITEM,
     lambda w: {"l": w.gift_list, "i": {"gift": {"name": "G", "url": "ftp://x"}}}, "gift.url"),
    ("item-inline-empty-name", ADD_ITEM,
     lambda w: {"l": w.gift_list, "i": {"gift": {"name": ""}}}, "gift.name"),
    ("item-inline-bad-currency", ADD_ITEM,
     lambda w: {"l": w.gift_list, "i": {"gift": {"name": "G", "currency": "XXQ"}}},
     "gift.currency"),
    ("comment-empty", ADD_COMMENT,
     lambda w: {"i": {"target": "PERSON", "targetId": w.person, "body": ""}}, "body"),
    ("comment-blank", ADD_COMMENT,
     lambda w: {"i": {"target": "PERSON", "targetId": w.person, "body": "   "}}, "body"),
    ("comment-2001", ADD_COMMENT,
     lambda w: {"i": {"target": "PERSON", "targetId": w.person, "body": "b" * 2001}}, "body"),
    ("register-bad-email", REGISTER, lambda w: {"i": {**USER, "email": "not-an-email"}},
     "email"),
    ("register-lookalike-email", REGISTER,  # a Cyrillic a (U+0430) for the Latin one
     lambda w: {"i": {**USER, "email": "\u0430lice@example.com"}}, "email"),
    ("register-short-password", REGISTER, lambda w: {"i": {**USER, "password": "short"}},
     "password"),
    ("register-empty-display-name", REGISTER, lambda w: {"i": {**USER, "displayName": ""}},
     "displayName"),
]


@pytest.mark.parametrize(("query", "make", "field"), [c[1:] for c in CREATE_CASES],
                         ids=[c[0] for c in CREATE_CASES])
async def test_bad_create_input_is_rejected_and_writes_nothing(
    alice: Account, world: World, query: str, make: Any, field: str
) -> None:
    c = alice.client
    before = await counts(c, world)
    r = await c(query, make(world))
    assert_bad_input(r, field)
    assert r.body.get("data") is None
    assert await counts(c, world) == before


PERSON_FIELDS = "... on Person { name relationship birthday interests notes }"
GIFT_FIELDS = "... on Gift { name url store price currency imageUrl description }"
ITEM_FIELDS = "... on ListItem { quantity notes status gift { id } }"
OCC_FIELDS = "... on Occasion { name date budget }"

# (id, mutation, which world id, patch, field, fields to compare)
UPDATE_CASES: list[tuple[str, str, str, dict[str, Any], str, str]] = [
    ("person-null-name", "updatePerson", "person", {"name": None}, "name", PERSON_FIELDS),
    ("person-empty-name", "updatePerson", "person", {"name": ""}, "name", PERSON_FIELDS),
    ("person-long-name-with-notes", "updatePerson", "person",
     {"name": LONG_NAME, "notes": "new"}, "name", PERSON_FIELDS),
    ("person-future-birthday", "updatePerson", "person", {"birthday": FUTURE}, "birthday",
     PERSON_FIELDS),
    ("occasion-negative-budget", "updateOccasion", "occasion", {"budget": "-3"}, "budget",
     OCC_FIELDS),
    ("gift-bad-url", "updateGift", "gift", {"url": "javascript:alert(1)"}, "url", GIFT_FIELDS),
    ("gift-bad-url-with-name", "updateGift", "gift", {"url": "not a url", "name": "New"}, "url",
     GIFT_FIELDS),
    ("gift-bad-image", "updateGift", "gift", {"imageUrl": "ftp://x"}, "imageUrl", GIFT_FIELDS),
    ("gift-negative-price", "updateGift", "gift", {"price": "-1"}, "price", GIFT_FIELDS),
    ("gift-3-decimals", "updateGift", "gift", {"price": "0.001"}, "price", GIFT_FIELDS),
    ("gift-bogus-currency", "updateGift", "gift", {"currency": "XXQ"}, "currency", GIFT_FIELDS),
    ("item-quantity-0", "updateListItem", "item", {"quantity": 0, "notes": "changed"},
     "quantity", ITEM_FIELDS),
    ("item-inline-bad-gift", "updateListItem", "item", {"gift": {"name": "G", "price": "-2"}},
     "gift.price", ITEM_FIELDS),
    ("gift-space-in-host", "updateGift", "gift", {"url": "https://www.bo oks.com/1"}, "url",
     GIFT_FIELDS),
]


@pytest.mark.parametrize(("mutation", "target", "patch", "field", "fields"),
                         [c[1:] for c in UPDATE_CASES], ids=[c[0] for c in UPDATE_CASES])
async def test_bad_patch_is_rejected_and_changes_nothing(
    alice: Account, world: World, mutation: str, target: str, patch: dict[str, Any],
    field: str, fields: str,
) -> None:
    c = alice.client
    patch_type = {"updatePerson": "PersonPatch", "updateOccasion": "OccasionPatch",
                  "updateGift": "GiftPatch", "updateListItem": "ListItemPatch"}[mutation]
    target_id = getattr(world, target)
    read = f"query($id: ID!) {{ node(id: $id) {{ id {fields} }} }}"
    before_node = await ok(c, read, {"id": target_id})
    before = await counts(c, world)

    r = await c(f"mutation($id: ID!, $p: {patch_type}!) {{ {mutation}(id: $id, input: $p)"
                " { id } }", {"id": target_id, "p": patch})
    assert_bad_input(r, field)
    assert await ok(c, read, {"id": target_id}) == before_node
    assert await counts(c, world) == before


@pytest.mark.parametrize(("currency", "stored"), [("usd", "USD"), ("eur", "EUR"),
                                                  (" gbp ", "GBP"), (None, "USD")])
async def test_currency_is_normalised(alice: Account, currency: str | None, stored: str) -> None:
    r = await alice.client("mutation($i: GiftInput!) { createGift(input: $i) { currency } }",
                           {"i": {"name": "G", "currency": currency}})
    assert r.data["createGift"]["currency"] == stored


MONEY_CREATES = {
    "gift-price": ("mutation($v: Decimal) { r: createGift(input: {name: \"G\", price: $v})"
                   " { id v: price } }", "... on Gift { v: price }"),
    "occasion-budget": ("mutation($v: Decimal) { r: createOccasion(input: {name: \"O\","
                        " kind: OTHER, date: \"2099-01-01\", budget: $v}) { id v: budget } }",
                        "... on Occasion { v: budget }"),
    "list-budget": ("mutation($v: Decimal) { r: createList(input: {name: \"L\", kind: IDEAS,"
                    " budget: $v}) { id v: budget } }", "... on GiftList { v: budget }"),
}


@pytest.mark.parametrize("where", list(MONEY_CREATES))
@pytest.mark.parametrize(
    ("value", "stored"), [("0", "0.00"), ("0.5", "0.50"), ("19.99", "19.99"), ("7", "7.00"),
                          ("-0", "0.00"), ("-0.00", "0.00"), ("007.10", "7.10")]
)
async def test_money_is_accepted_and_returned_with_two_decimals(
    alice: Account, where: str, value: str, stored: str
) -> None:
    """The mutation's answer matches what every later read returns."""
    create, fragment = MONEY_CREATES[where]
    made = (await ok(alice.client, create, {"v": value}))["r"]
    read = await ok(alice.client, f"query($id: ID!) {{ node(id: $id) {{ {fragment} }} }}",
                    {"id": made["id"]})
    assert read["node"]["v"] == stored
    assert made["v"] == stored


# Values Python's Decimal() and date.fromisoformat() take that are not the scalars' form.
SCALAR_FORMS = {
    "Decimal": ["\u0661\u0662", "\u0661.\u0665\u0660", "1_000", "1e3", "1E-2", "+1", " 1",
                "1 ", "1.", ".5", "--1", "NaN", "sNaN", "Infinity", "-Infinity", "", "0x10",
                "\uff11", 5, 1.5, True, ["1"], "1" * 65],
    "Date": ["\u0662\u0660\u0662\u0664-01-01", "20240101", "2024-W01-1", "2024-001",
             "0000-01-01", "2024-1-1", "2024-02-30", "2024-01-01T00:00:00", " 2024-01-01",
             "+2024-01-01", "\uff12024-01-01", 20240101, ""],
}
SCALAR_SITES = {
    "Decimal": [
        (CREATE_GIFT, lambda v: {"i": {"name": "G", "price": v}}),
        (CREATE_OCCASION, lambda v: {"i": {**OCC, "budget": v}}),
        (CREATE_LIST, lambda v: {"i": {"name": "L", "kind": "IDEAS", "budget": v}}),
    ],
    "Date": [
        (CREATE_OCCASION, lambda v: {"i": {**OCC, "date": v}}),
        (CREATE_PERSON, lambda v: {"i": {"name": "P", "birthday": v}}),
        ("query($v: Date) { occasions(from: $v) { totalCount } }", lambda v: {"v": v}),
    ],
}
SCALAR_CASES = [(scalar, value) for scalar, values in SCALAR_FORMS.items() for value in values]


@pytest.mark.parametrize(("scalar", "value"), SCALAR_CASES,
                         ids=[f"{s}-{v!r}" for s, v in SCALAR_CASES])
async def test_scalars_take_only_their_ascii_form(alice: Account, world: World, scalar: str,
                                                  value: Any) -> None:
    """Refused while coercing the variables (BAD_USER_INPUT naming the scalar), at every
    place the scalar is taken; nothing is written."""
    c = alice.client
    before = await counts(c, world)
    for query, make in SCALAR_SITES[scalar]:
        r = await c(query, make(value))
        assert r.codes == ["BAD_USER_INPUT"], (query, r.body)
        assert scalar in r.errors[0]["message"], r.body
        assert r.body.get("data") is None
    assert await counts(c, world) == before


async def test_money_patch_of_minus_zero_is_zero(alice: Account, world: World) -> None:
    c = alice.client
    made = await ok(c, "mutation($id: ID!) { updateGift(id: $id, input: {price: \"-0\"})"
                       " { price } }", {"id": world.gift})
    assert made["updateGift"]["price"] == "0.00"
    read = await ok(c, "mutation($id: ID!) { updateOccasion(id: $id, input: {budget: \"-0.0\"})"
                       " { budget } }", {"id": world.occasion})
    assert read["updateOccasion"]["budget"] == "0.00"


@pytest.mark.parametrize("url", ["https://b\u00fccher.example/buch", "http://[::1]:8080/x",
                                 "http://127.0.0.1/x", "https://SHOP.Example./x",
                                 "https://xn--bcher-kva.example/", "http://localhost:8000/a?b=c"])
async def test_urls_with_valid_hosts_are_accepted(alice: Account, url: str) -> None:
    made = await ok(alice.client, "mutation($u: String) { createGift(input: {name: \"G\","
                                  " url: $u, imageUrl: $u}) { url imageUrl store } }", {"u": url})
    assert made["createGift"]["url"] == url
    assert made["createGift"]["imageUrl"] == url


async def test_email_is_stored_in_ascii_and_logs_in_either_way(alice: Account,
                                                               gql: GQL) -> None:
    """An internationalized domain is kept in its IDNA form (lower(email) then means the
    same in Python and PostgreSQL); logging in with the Unicode form finds the user."""
    made = await ok(alice.client, REGISTER, {"i": {**USER, "email": "Bob@B\u00fccher.Example"}})
    user = await ok(alice.client, "query($id: ID!) { node(id: $id) { ... on User { email } } }",
                    {"id": made["registerUser"]["id"]})
    assert user["node"]["email"] == "Bob@xn--bcher-kva.example"
    for email in ("bob@b\u00fccher.example", "BOB@XN--BCHER-KVA.EXAMPLE"):
        r = await gql("mutation($e: String!, $p: String!) { login(email: $e, password: $p)"
                      " { accessToken } }", {"e": email, "p": USER["password"]})
        assert r.errors == [], (email, r.body)


async def test_limits_are_inclusive(alice: Account, world: World) -> None:
    """200-char names, 2000-char comments, today's birthday and quantity 1 are fine."""
    c = alice.client
    p = await ok(c, CREATE_PERSON, {"i": {"name": "n" * 200, "birthday": date.today().isoformat()}})
    assert p["createPerson"]["id"]
    comment = await ok(c, "mutation($i: CommentInput!) { addComment(input: $i) { body } }",
                       {"i": {"target": "PERSON", "targetId": world.person, "body": "b" * 2000}})
    assert len(comment["addComment"]["body"]) == 2000
    item = await ok(c, "mutation($l: ID!, $i: ListItemInput!) { addListItem(listId: $l,"
                       " input: $i) { quantity } }",
                    {"l": world.gift_list, "i": {"giftId": world.gift, "quantity": 1}})
    assert item["addListItem"]["quantity"] == 1


async def test_signup_validation(gql: GQL) -> None:
    q = "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }"
    base = {"familyName": "F", "email": "ok@example.com", "password": "long enough pw",
            "displayName": "D"}
    for patch, field in (({"email": "nope"}, "email"), ({"password": "1234567"}, "password"),
                         ({"familyName": ""}, "familyName")):
        assert_bad_input(await gql(q, {"i": {**base, **patch}}), field)
    # Nothing was created: the address is still free.
    assert (await gql(q, {"i": base})).data["signUp"]["accessToken"]


# --- Malformed and foreign IDs are NOT_FOUND ----------------------------------------------


def _bad_ids(world: World, foreign: str) -> dict[str, str]:
    return {
        "garbage": "!!!",
        "not-base64-json": "%%%%",
        "empty-key": gid("Person", ""),
        "not-a-uuid": gid("Person", "not-a-uuid"),
        "unknown-uuid": gid("Person", str(uuid.uuid4())),
        "wrong-type": world.gift,
        "unknown-type": gid("Bogus", str(uuid.uuid4())),
        "other-family": foreign,
    }


BAD_ID_KINDS = ["garbage", "not-base64-json", "empty-key", "not-a-uuid", "unknown-uuid",
                "wrong-type", "unknown-type", "other-family"]

# Operations taking a Person ID, each as (query, variables for a given id).
PERSON_ID_OPS: dict[str, tuple[str, Any]] = {
    "node": ("query($id: ID!) { node(id: $id) { id } }", lambda w, i: {"id": i}),
    "updatePerson": ('mutation($id: ID!) { updatePerson(id: $id, input: {notes: "x"}) { id } }',
                     lambda w, i: {"id": i}),
    "deletePerson": ("mutation($id: ID!) { deletePerson(id: $id) }", lambda w, i: {"id": i}),
    "lists(personId)": ("query($id: ID) { lists(personId: $id) { totalCount } }",
                        lambda w, i: {"id": i}),
    "createList(personId)": ("mutation($id: ID) { createList(input: {name: \"L\", kind: IDEAS,"
                             " personId: $id}) { id } }", lambda w, i: {"id": i}),
    "updateList(personId)": ("mutation($l: ID!, $id: ID) { updateList(id: $l, input:"
                             " {personId: $id}) { id } }",
                             lambda w, i: {"l": w.gift_list, "id": i}),
    "comments(PERSON)": ("query($id: ID!) { comments(target: PERSON, targetId: $id)"
                         " { totalCount } }", lambda w, i: {"id": i}),
    "addComment(PERSON)": ("mutation($id: ID!) { addComment(input: {target: PERSON,"
                           " targetId: $id, body: \"hi\"}) { id } }", lambda w, i: {"id": i}),
}


# node(id:) accepts any type, so a Gift ID is a valid node there.
BAD_ID_CASES = [(kind, op) for kind in BAD_ID_KINDS for op in PERSON_ID_OPS
                if not (op == "node" and kind == "wrong-type")]


@pytest.mark.parametrize(("kind", "op"), BAD_ID_CASES, ids=[f"{k}-{o}" for k, o in BAD_ID_CASES])
async def test_bad_ids_are_not_found(alice: Account, mallory: Account, world: World,
                                     op: str, kind: str) -> None:
    c = alice.client
    foreign = (await ok(mallory.client, 'mutation { createPerson(input: {name: "M"}) { id } }'))
    bad = _bad_ids(world, foreign["createPerson"]["id"])[kind]
    query, make = PERSON_ID_OPS[op]
    before = await counts(c, world)
    r = await c(query, make(world, bad))
    assert r.codes == ["NOT_FOUND"], r.body
    assert "Person" not in str(r.errors[0].get("extensions", {}).get("fields", ""))
    assert await counts(c, world) == before


@pytest.mark.parametrize(
    ("query", "make"),
    [
        ("mutation($id: ID!) { deleteGift(id: $id) }", lambda w: {"id": w.item}),
        ("mutation($id: ID!) { removeListItem(id: $id) }", lambda w: {"id": w.gift}),
        ("mutation($id: ID!) { setListItemStatus(id: $id, status: SELECTED) { id } }",
         lambda w: {"id": w.gift_list}),
        ("mutation($id: ID!, $u: ID) { assignListItem(id: $id, userId: $u) { id } }",
         lambda w: {"id": w.item, "u": w.person}),
        ("mutation($l: ID!, $g: ID) { addListItem(listId: $l, input: {giftId: $g}) { id } }",
         lambda w: {"l": w.gift_list, "g": w.item}),
        ("mutation($l: ID!, $g: ID) { addListItem(listId: $l, input: {giftId: $g}) { id } }",
         lambda w: {"l": w.occasion, "g": w.gift}),
        ("query($id: ID) { lists(occasionId: $id) { totalCount } }", lambda w: {"id": w.person}),
        ("mutation($id: ID!) { deleteOccasion(id: $id) }", lambda w: {"id": w.person}),
        ("mutation($id: ID!) { deleteList(id: $id) }", lambda w: {"id": w.occasion}),
    ],
    ids=["deleteGift-item", "removeListItem-gift", "setStatus-list", "assign-person-as-user",
         "addItem-item-as-gift", "addItem-occasion-as-list", "lists-person-as-occasion",
         "deleteOccasion-person", "deleteList-occasion"],
)
async def test_ids_of_the_wrong_type_are_not_found(alice: Account, world: World, query: str,
                                                   make: Any) -> None:
    c = alice.client
    before = await counts(c, world)
    r = await c(query, make(world))
    assert r.codes == ["NOT_FOUND"], r.body
    assert await counts(c, world) == before


# --- Pagination ----------------------------------------------------------------------------

PERSONS = ("query($f: Int, $a: String, $l: Int, $b: String) {"
           " persons(first: $f, after: $a, last: $l, before: $b) { totalCount"
           " pageInfo { hasNextPage hasPreviousPage startCursor endCursor }"
           " edges { cursor node { name } } } }")
NAMES = [f"P{i:02d}" for i in range(25)]


async def make_persons(c: GQL, n: int = 25) -> None:
    # Created out of order: the connection sorts by name.
    for i in reversed(range(n)):
        await ok(c, "mutation($n: String!) { createPerson(input: {name: $n}) { id } }",
                 {"n": f"P{i:02d}"})


async def persons_page(c: GQL, **args: Any) -> dict[str, Any]:
    variables = {"f": args.get("first"), "a": args.get("after"), "l": args.get("last"),
                 "b": args.get("before")}
    return (await ok(c, PERSONS, variables))["persons"]  # type: ignore[no-any-return]


def page_names(page: dict[str, Any]) -> list[str]:
    return [e["node"]["name"] for e in page["edges"]]


def check_cursors(page: dict[str, Any]) -> None:
    cursors = [e["cursor"] for e in page["edges"]]
    info = page["pageInfo"]
    assert info["startCursor"] == (cursors[0] if cursors else None)
    assert info["endCursor"] == (cursors[-1] if cursors else None)


async def test_default_and_capped_page_sizes(alice: Account) -> None:
    c = alice.client
    await make_persons(c)
    page = await persons_page(c)
    assert page_names(page) == NAMES[:20]
    assert page["totalCount"] == 25
    assert page["pageInfo"]["hasNextPage"] is True
    assert page["pageInfo"]["hasPreviousPage"] is False
    check_cursors(page)

    page = await persons_page(c, first=500)
    assert page_names(page) == NAMES
    assert page["pageInfo"]["hasNextPage"] is False

    page = await persons_page(c, first=0)
    assert page["edges"] == []
    assert page["totalCount"] == 25


@pytest.mark.parametrize(
    ("args", "field"),
    [({"first": -1}, "first"), ({"last": -1}, "last"), ({"first": -100}, "first")],
)
async def test_negative_page_sizes_are_bad_input(alice: Account, args: dict[str, int],
                                                 field: str) -> None:
    r = await alice.client(PERSONS, {"f": args.get("first"), "l": args.get("last")})
    assert_bad_input(r, field)


async def test_page_size_cap_comes_from_settings(database_url: str) -> None:
    settings = make_settings(database_url, max_page_size=7, default_page_size=4)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            account = await sign_up(GQL(http), "Capped")
            c = account.client
            await make_persons(c, 10)
            page = await persons_page(c)
            assert page_names(page) == NAMES[:4]
            page = await persons_page(c, first=500)
            assert page_names(page) == NAMES[:7]
            assert page["pageInfo"]["hasNextPage"] is True
            assert page["totalCount"] == 10
            page = await persons_page(c, last=500)
            assert page_names(page) == NAMES[3:10]
            assert page["pageInfo"]["hasPreviousPage"] is True


async def test_walk_forward_visits_everything_once(alice: Account) -> None:
    c = alice.client
    await make_persons(c)
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        page = await persons_page(c, first=10, after=after)
        pages += 1
        assert page["totalCount"] == 25
        check_cursors(page)
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        seen += page_names(page)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
        assert pages < 10, "pagination does not terminate"
    assert pages == 3
    assert seen == NAMES
    # Past the end: an empty page, no next page.
    tail = await persons_page(c, first=10, after=page["pageInfo"]["endCursor"])
    assert tail["edges"] == []
    assert tail["pageInfo"]["hasNextPage"] is False
    assert tail["totalCount"] == 25


async def test_walk_backward_with_last_and_before(alice: Account) -> None:
    c = alice.client
    await make_persons(c)
    page = await persons_page(c, last=10)
    assert page_names(page) == NAMES[15:]
    assert page["pageInfo"]["hasPreviousPage"] is True
    assert page["pageInfo"]["hasNextPage"] is False
    assert page["totalCount"] == 25
    check_cursors(page)

    seen = page_names(page)
    before = page["pageInfo"]["startCursor"]
    while page["pageInfo"]["hasPreviousPage"]:
        page = await persons_page(c, last=10, before=before)
        assert page["totalCount"] == 25
        assert page["pageInfo"]["hasNextPage"] is True
        check_cursors(page)
        seen = page_names(page) + seen
        before = page["pageInfo"]["startCursor"]
    assert seen == NAMES
    assert page_names(page) == NAMES[:5]

    # first + before: the first rows before the cursor, in order.
    mid = await persons_page(c, first=3)
    after_mid = await persons_page(c, first=3, after=mid["pageInfo"]["endCursor"])
    assert page_names(after_mid) == NAMES[3:6]
    back = await persons_page(c, last=2, before=after_mid["pageInfo"]["startCursor"])
    assert page_names(back) == NAMES[1:3]


async def test_search_filter_and_pagination_compose(alice: Account) -> None:
    c = alice.client
    await make_persons(c)
    q = ("query($a: String) { persons(search: \"p1\", first: 4, after: $a) { totalCount"
         " pageInfo { hasNextPage endCursor } edges { node { name } } } }")
    first = (await ok(c, q, {"a": None}))["persons"]
    assert first["totalCount"] == 10
    assert page_names(first) == NAMES[10:14]
    second = (await ok(c, q, {"a": first["pageInfo"]["endCursor"]}))["persons"]
    assert page_names(second) == NAMES[14:18]
    assert second["totalCount"] == 10


async def _cursor_of(c: GQL, connection: str) -> str:
    data = await ok(c, f"{{ {connection}(first: 1) {{ edges {{ cursor }} }} }}")
    return data[connection]["edges"][0]["cursor"]  # type: ignore[no-any-return]


def _crafted(value: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    ("cursor_kind", "used_on"),
    [
        ("garbage", "persons"),
        ("base64-garbage", "persons"),
        ("json-object", "persons"),
        ("wrong-arity", "persons"),
        ("events", "persons"),
        ("persons", "occasions"),
        ("persons", "users"),
        ("occasions", "persons"),
        ("gifts", "persons"),
        ("lists", "gifts"),
        ("gifts", "users"),
        ("nul-in-name", "persons"),
        ("seq-too-big", "events"),
        ("seq-bool", "events"),
        ("year-zero", "occasions"),
    ],
)
@pytest.mark.parametrize("arg", ["after", "before"])
async def test_bad_cursors_are_bad_input(alice: Account, world: World, cursor_kind: str,
                                         used_on: str, arg: str) -> None:
    c = alice.client
    await make_persons(c, 3)
    cursor = {
        "garbage": "not a cursor!!",
        "base64-garbage": base64.urlsafe_b64encode(b"\xff\xfe garbage").decode(),
        "json-object": base64.urlsafe_b64encode(b'{"name": "P01"}').decode(),
        "wrong-arity": base64.urlsafe_b64encode(b'["P01"]').decode(),
        # Well-formed cursors whose values the database can't take: PostgreSQL text holds
        # no NUL, a seq is a bigint, and no date is in year 0.
        "nul-in-name": _crafted(["persons", "P\u0000", str(uuid.UUID(int=0))]),
        "seq-too-big": _crafted(["events", 2**63]),
        "seq-bool": _crafted(["events", True]),
        "year-zero": _crafted(["occasions", "0000-01-01", str(uuid.UUID(int=0))]),
    }.get(cursor_kind) or await _cursor_of(c, cursor_kind)
    size = "first" if arg == "after" else "last"
    r = await c(f"query($c: String) {{ {used_on}({size}: 5, {arg}: $c) {{ totalCount"
                " edges { cursor } } }", {"c": cursor})
    assert_bad_input(r, arg)


async def test_nested_items_paginate_per_list_in_one_query(alice: Account) -> None:
    c = alice.client
    sizes = {"A": 5, "B": 3, "C": 0, "D": 4}
    list_ids: dict[str, str] = {}
    items: dict[str, list[str]] = {}
    for name, n in sizes.items():
        gl = await ok(c, "mutation($n: String!) { createList(input: {name: $n, kind: IDEAS})"
                         " { id } }", {"n": name})
        list_ids[name] = gl["createList"]["id"]
        items[name] = []
        for j in range(n):
            it = await ok(c, "mutation($l: ID!, $n: String!) { addListItem(listId: $l, input:"
                             " {gift: {name: $n}}) { id } }",
                          {"l": list_ids[name], "n": f"{name}{j}"})
            items[name].append(it["addListItem"]["id"])

    # First page of every list through the lists connection: one request, one shape.
    first = await ok(c, "{ lists { edges { node { name items(first: 2) { totalCount"
                        " pageInfo { hasNextPage hasPreviousPage endCursor }"
                        " edges { node { id list { name } } } } } } } }")
    cursors: dict[str, str | None] = {}
    seen: dict[str, list[str]] = {name: [] for name in sizes}
    for edge in first["lists"]["edges"]:
        name, conn = edge["node"]["name"], edge["node"]["items"]
        assert conn["totalCount"] == sizes[name]
        assert conn["pageInfo"]["hasPreviousPage"] is False
        assert conn["pageInfo"]["hasNextPage"] is (sizes[name] > 2)
        assert all(e["node"]["list"]["name"] == name for e in conn["edges"])
        seen[name] += [e["node"]["id"] for e in conn["edges"]]
        cursors[name] = conn["pageInfo"]["endCursor"] if conn["pageInfo"]["hasNextPage"] else None

    # Then every list's next page, each with its own cursor, in a single query (aliases).
    rounds = 0
    while any(cursors.values()):
        rounds += 1
        assert rounds < 5, "nested pagination does not terminate"
        pending = [n for n, cur in cursors.items() if cur]
        params = ", ".join(f"$l{n}: ID!, $c{n}: String" for n in pending)
        body = " ".join(
            f"{n}: node(id: $l{n}) {{ ... on GiftList {{ items(first: 2, after: $c{n}) {{"
            " totalCount pageInfo { hasNextPage hasPreviousPage endCursor }"
            " edges { node { id } } } } }" for n in pending
        )
        variables: dict[str, Any] = {}
        for n in pending:
            variables[f"l{n}"] = list_ids[n]
            variables[f"c{n}"] = cursors[n]
        data = await ok(c, f"query({params}) {{ {body} }}", variables)
        for n in pending:
            conn = data[n]["items"]
            assert conn["totalCount"] == sizes[n]
            assert conn["pageInfo"]["hasPreviousPage"] is True
            assert 1 <= len(conn["edges"]) <= 2
            seen[n] += [e["node"]["id"] for e in conn["edges"]]
            more = conn["pageInfo"]["hasNextPage"]
            cursors[n] = conn["pageInfo"]["endCursor"] if more else None
    assert seen == items  # every item exactly once, in creation order, in its own list
    assert rounds == 2  # A: 2+2+1, D: 2+2, B: 2+1


async def test_nested_items_with_status_filter_and_paging(alice: Account) -> None:
    c = alice.client
    gl = (await ok(c, 'mutation { createList(input: {name: "L", kind: IDEAS}) { id } }'))
    list_id = gl["createList"]["id"]
    made = []
    for j in range(6):
        it = await ok(c, "mutation($l: ID!, $n: String!) { addListItem(listId: $l, input:"
                         " {gift: {name: $n}}) { id } }", {"l": list_id, "n": f"G{j}"})
        made.append(it["addListItem"]["id"])
    for item in made[::2]:
        await ok(c, "mutation($i: ID!) { setListItemStatus(id: $i, status: SELECTED) { id } }",
                 {"i": item})
    q = ("query($id: ID!, $a: String) { node(id: $id) { ... on GiftList {"
         " items(status: SELECTED, first: 2, after: $a) { totalCount"
         " pageInfo { hasNextPage endCursor } edges { node { id status } } } } } }")
    p1 = (await ok(c, q, {"id": list_id, "a": None}))["node"]["items"]
    assert p1["totalCount"] == 3
    assert [e["node"]["id"] for e in p1["edges"]] == made[0:4:2]
    assert p1["pageInfo"]["hasNextPage"] is True
    p2 = (await ok(c, q, {"id": list_id, "a": p1["pageInfo"]["endCursor"]}))["node"]["items"]
    assert [e["node"]["id"] for e in p2["edges"]] == [made[4]]
    assert p2["pageInfo"]["hasNextPage"] is False
    assert {e["node"]["status"] for e in p1["edges"] + p2["edges"]} == {"SELECTED"}


async def test_events_paginate_newest_first(alice: Account) -> None:
    c = alice.client
    await make_persons(c, 7)
    q = ("query($a: String) { events(first: 3, after: $a) { totalCount"
         " pageInfo { hasNextPage endCursor } edges { node { seq } } } }")
    seqs: list[int] = []
    after = None
    while True:
        page = (await ok(c, q, {"a": after}))["events"]
        assert page["totalCount"] == 8  # signUp + 7 persons
        seqs += [int(e["node"]["seq"]) for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(seqs) == 8
    assert seqs == sorted(seqs, reverse=True)
    assert len(set(seqs)) == 8


async def test_comments_paginate(alice: Account, world: World) -> None:
    c = alice.client
    for i in range(5):
        await ok(c, "mutation($id: ID!, $b: String!) { addComment(input: {target: PERSON,"
                    " targetId: $id, body: $b}) { id } }", {"id": world.person, "b": f"c{i}"})
    q = ("query($id: ID!, $a: String) { comments(target: PERSON, targetId: $id, first: 2,"
         " after: $a) { totalCount pageInfo { hasNextPage endCursor } edges { node { body } } } }")
    bodies: list[str] = []
    after = None
    while True:
        page = (await ok(c, q, {"id": world.person, "a": after}))["comments"]
        assert page["totalCount"] == 5
        bodies += [e["node"]["body"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert bodies == [f"c{i}" for i in range(5)]


async def test_a_capped_page_size_is_said_in_extensions(gql: GQL) -> None:
    """`first` over the maximum page is capped, not refused, and the response says so in
    `extensions.pageSizeCapped` (which fields, and the maximum); a page within the
    maximum says nothing. The same on a repeat (answered from the result cache)."""
    account = await sign_up(gql, "Capped")
    for _ in range(2):
        r = await account.client("{ persons(first: 500) { totalCount } "
                                 "few: lists(first: 3) { totalCount } }")
        assert r.body["data"]["persons"]["totalCount"] == 0
        assert r.body["extensions"]["pageSizeCapped"] == {"maximum": 100,
                                                          "fields": ["persons"]}
    r = await account.client("query($n: Int) { p: persons(first: $n) { totalCount } }",
                             {"n": 101})
    assert r.body["extensions"]["pageSizeCapped"]["fields"] == ["p"]
    r = await account.client("{ persons(first: 100) { totalCount } }")
    assert "pageSizeCapped" not in (r.body.get("extensions") or {})
