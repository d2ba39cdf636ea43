"""Every entity query and mutation of the contract, end to end over GraphQL-over-HTTP.

Covers CRUD, patch semantics (omitted = unchanged, null = cleared), filters, derived views
(store, giftHistory, Occasion.summary), node(id:), the events log and the status pipeline.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import GQL, Account, GQLResult

PERSON = "id name relationship birthday interests notes createdAt updatedAt"
OCCASION = "id name kind date description budget createdAt updatedAt"
GIFT_LIST = "id name kind budget person { id name } occasion { id name } owner { id }"
GIFT = "id name url store price currency imageUrl description createdAt updatedAt"
ITEM = "id status quantity notes gift { id name price } list { id } assignee { id }"
COMMENT = "id target targetId body author { id }"

STATUSES = ("IDEA", "SELECTED", "PURCHASED", "RECEIVED")


# --- helpers -------------------------------------------------------------------------------


async def ok(c: GQL, query: str, variables: dict[str, Any] | None = None) -> Any:
    """The data of an operation that must succeed."""
    return (await c(query, variables)).data


async def create_person(c: GQL, **inp: Any) -> dict[str, Any]:
    inp.setdefault("name", "Mom")
    q = f"mutation($i: PersonInput!) {{ createPerson(input: $i) {{ {PERSON} }} }}"
    return (await ok(c, q, {"i": inp}))["createPerson"]  # type: ignore[no-any-return]


async def create_occasion(c: GQL, **inp: Any) -> dict[str, Any]:
    inp = {"name": "Xmas", "kind": "HOLIDAY", "date": "2099-12-25", **inp}
    q = f"mutation($i: OccasionInput!) {{ createOccasion(input: $i) {{ {OCCASION} }} }}"
    return (await ok(c, q, {"i": inp}))["createOccasion"]  # type: ignore[no-any-return]


async def create_list(c: GQL, **inp: Any) -> dict[str, Any]:
    inp = {"name": "List", "kind": "IDEAS", **inp}
    q = f"mutation($i: GiftListInput!) {{ createList(input: $i) {{ {GIFT_LIST} }} }}"
    return (await ok(c, q, {"i": inp}))["createList"]  # type: ignore[no-any-return]


async def create_gift(c: GQL, **inp: Any) -> dict[str, Any]:
    inp.setdefault("name", "Book")
    q = f"mutation($i: GiftInput!) {{ createGift(input: $i) {{ {GIFT} }} }}"
    return (await ok(c, q, {"i": inp}))["createGift"]  # type: ignore[no-any-return]


async def add_item(c: GQL, list_id: str, **inp: Any) -> dict[str, Any]:
    q = (f"mutation($l: ID!, $i: ListItemInput!) {{ addListItem(listId: $l, input: $i)"
         f" {{ {ITEM} }} }}")
    return (await ok(c, q, {"l": list_id, "i": inp}))["addListItem"]  # type: ignore[no-any-return]


async def set_status(c: GQL, item_id: str, status: str) -> GQLResult:
    return await c(
        "mutation($i: ID!, $s: ItemStatus!) { setListItemStatus(id: $i, status: $s)"
        " { id status } }",
        {"i": item_id, "s": status},
    )


async def walk_to(c: GQL, item_id: str, status: str) -> None:
    """Move a fresh (IDEA) item one legal step at a time up to `status`."""
    for s in STATUSES[1 : STATUSES.index(status) + 1]:
        assert (await set_status(c, item_id, s)).data["setListItemStatus"]["status"] == s


async def node(c: GQL, gid: str, fields: str = "") -> GQLResult:
    return await c(f"query($id: ID!) {{ node(id: $id) {{ __typename id {fields} }} }}",
                   {"id": gid})


async def event_count(c: GQL) -> int:
    return (await ok(c, "{ events { totalCount } }"))["events"]["totalCount"]  # type: ignore[no-any-return]


async def register_member(c: GQL, email: str = "bob@example.com") -> str:
    r = await c(
        "mutation($i: RegisterUserInput!) { registerUser(input: $i) { id email role } }",
        {"i": {"email": email, "password": "member password 1", "displayName": "Bob"}},
    )
    user = r.data["registerUser"]
    assert user["role"] == "MEMBER"
    return user["id"]  # type: ignore[no-any-return]


def names(conn: dict[str, Any]) -> list[str]:
    return [e["node"]["name"] for e in conn["edges"]]


def ids(conn: dict[str, Any]) -> list[str]:
    return [e["node"]["id"] for e in conn["edges"]]


def bad_input(r: GQLResult, field: str) -> None:
    assert r.codes == ["BAD_USER_INPUT"], r.body
    assert field in r.errors[0]["extensions"]["fields"], r.errors[0]["extensions"]


# --- users, me, family ---------------------------------------------------------------------


async def test_me_family_and_users(alice: Account) -> None:
    c = alice.client
    me = (await ok(c, "{ me { id email displayName role isActive family { id name } } }"))["me"]
    assert me["id"] == alice.user_id
    assert me["email"] == alice.email
    assert me["role"] == "ADMIN"
    assert me["isActive"] is True
    family = (await ok(c, "{ family { id name } }"))["family"]
    assert family == {"id": me["family"]["id"], "name": "Alice's family"}

    member = await register_member(c)
    users = (await ok(c, "{ users { totalCount edges { node { id email role } } } }"))["users"]
    assert users["totalCount"] == 2
    assert {e["node"]["id"]: e["node"]["role"] for e in users["edges"]} == {
        alice.user_id: "ADMIN", member: "MEMBER"}


async def test_users_are_scoped_to_the_family(alice: Account, mallory: Account) -> None:
    users = (await ok(alice.client, "{ users { totalCount edges { node { id } } } }"))["users"]
    assert users["totalCount"] == 1
    assert ids(users) == [alice.user_id]


# --- Person --------------------------------------------------------------------------------


async def test_person_create_read_update_delete(alice: Account) -> None:
    c = alice.client
    p = await create_person(c, name="Grandma", relationship="grandmother",
                            birthday="1950-04-01", interests=["knitting", "tea"], notes="soft")
    assert p["name"] == "Grandma"
    assert p["relationship"] == "grandmother"
    assert p["birthday"] == "1950-04-01"
    assert p["interests"] == ["knitting", "tea"]
    assert p["notes"] == "soft"
    assert p["createdAt"]
    assert p["updatedAt"]

    listed = (await ok(c, f"{{ persons {{ totalCount edges {{ node {{ {PERSON} }} }} }} }}"))
    assert listed["persons"]["totalCount"] == 1
    assert listed["persons"]["edges"][0]["node"] == p

    # Only notes given: every other field is left as it was.
    upd = await c(f"mutation($id: ID!) {{ updatePerson(id: $id, input: {{notes: \"wool\"}})"
                  f" {{ {PERSON} }} }}", {"id": p["id"]})
    q = upd.data["updatePerson"]
    assert q["notes"] == "wool"
    assert {k: q[k] for k in ("name", "relationship", "birthday", "interests")} == {
        "name": "Grandma", "relationship": "grandmother", "birthday": "1950-04-01",
        "interests": ["knitting", "tea"]}

    # An explicit null clears the field, and only that one.
    upd = await c(f"mutation($id: ID!) {{ updatePerson(id: $id, input: {{relationship: null,"
                  f" birthday: null}}) {{ {PERSON} }} }}", {"id": p["id"]})
    q = upd.data["updatePerson"]
    assert q["relationship"] is None
    assert q["birthday"] is None
    assert q["name"] == "Grandma"
    assert q["notes"] == "wool"
    fetched = (await node(c, p["id"], "... on Person { relationship birthday notes }")).data
    assert fetched["node"]["relationship"] is None
    assert fetched["node"]["notes"] == "wool"

    deleted = await c("mutation($id: ID!) { deletePerson(id: $id) }", {"id": p["id"]})
    assert deleted.data["deletePerson"] == p["id"]
    assert (await node(c, p["id"])).codes == ["NOT_FOUND"]
    assert (await ok(c, "{ persons { totalCount } }"))["persons"]["totalCount"] == 0
    again = await c("mutation($id: ID!) { deletePerson(id: $id) }", {"id": p["id"]})
    assert again.codes == ["NOT_FOUND"]


async def test_persons_search_is_case_insensitive_substring(alice: Account) -> None:
    c = alice.client
    for n in ("Grandma Rose", "grandpa Joe", "Aunt May", "Rosalind", "100% Cotton Fan"):
        await create_person(c, name=n)
    q = "query($s: String) { persons(search: $s) { totalCount edges { node { name } } } }"

    async def search(s: str | None) -> list[str]:
        conn = (await ok(c, q, {"s": s}))["persons"]
        assert conn["totalCount"] == len(conn["edges"])
        return names(conn)

    assert await search("GRAND") == ["Grandma Rose", "grandpa Joe"]
    assert await search("ros") == ["Grandma Rose", "Rosalind"]
    assert await search("y") == ["Aunt May"]
    assert await search("nobody") == []
    assert await search("%") == ["100% Cotton Fan"]  # LIKE wildcards are literal
    assert await search("_") == []
    assert len(await search(None)) == 5


# --- Occasion ------------------------------------------------------------------------------


async def test_occasion_create_read_update_delete(alice: Account) -> None:
    c = alice.client
    o = await create_occasion(c, name="Mom's birthday", kind="BIRTHDAY", date="2099-03-04",
                              description="cake", budget="150.50")
    assert {k: o[k] for k in ("name", "kind", "date", "description", "budget")} == {
        "name": "Mom's birthday", "kind": "BIRTHDAY", "date": "2099-03-04",
        "description": "cake", "budget": "150.50"}

    upd = (await ok(c, f"mutation($id: ID!) {{ updateOccasion(id: $id, input: {{budget: null,"
                       f" kind: OTHER}}) {{ {OCCASION} }} }}", {"id": o["id"]}))["updateOccasion"]
    assert upd["budget"] is None
    assert upd["kind"] == "OTHER"
    assert (upd["name"], upd["date"], upd["description"]) == ("Mom's birthday", "2099-03-04",
                                                              "cake")
    fetched = (await node(c, o["id"], "... on Occasion { budget kind }")).data["node"]
    assert fetched == {"__typename": "Occasion", "id": o["id"], "budget": None, "kind": "OTHER"}

    r = await c("mutation($id: ID!) { deleteOccasion(id: $id) }", {"id": o["id"]})
    assert r.data["deleteOccasion"] == o["id"]
    assert (await node(c, o["id"])).codes == ["NOT_FOUND"]


async def test_occasions_filter_by_kind_and_dates(alice: Account) -> None:
    c = alice.client
    for name, kind, day in (("Jan bday", "BIRTHDAY", "2030-01-01"),
                            ("Summer", "HOLIDAY", "2030-06-15"),
                            ("Dec bday", "BIRTHDAY", "2030-12-31"),
                            ("Wedding", "ANNIVERSARY", "2031-05-05")):
        await create_occasion(c, name=name, kind=kind, date=day)
    q = ("query($k: OccasionKind, $f: Date, $t: Date) { occasions(kind: $k, from: $f, to: $t)"
         " { totalCount edges { node { name } } } }")

    async def occ(k: str | None = None, f: str | None = None, t: str | None = None) -> list[str]:
        conn = (await ok(c, q, {"k": k, "f": f, "t": t}))["occasions"]
        assert conn["totalCount"] == len(conn["edges"])
        return names(conn)

    assert await occ() == ["Jan bday", "Summer", "Dec bday", "Wedding"]  # by date
    assert await occ(k="BIRTHDAY") == ["Jan bday", "Dec bday"]
    assert await occ(k="OTHER") == []
    assert await occ(f="2030-06-15") == ["Summer", "Dec bday", "Wedding"]  # inclusive
    assert await occ(t="2030-06-15") == ["Jan bday", "Summer"]  # inclusive
    assert await occ(f="2030-06-15", t="2030-12-31") == ["Summer", "Dec bday"]
    assert await occ(k="BIRTHDAY", f="2030-02-01") == ["Dec bday"]
    assert await occ(f="2032-01-01") == []


# --- GiftList ------------------------------------------------------------------------------


async def test_list_create_read_update_delete(alice: Account) -> None:
    c = alice.client
    p = await create_person(c, name="Dad")
    o = await create_occasion(c, name="Fathers day", kind="OTHER", date="2099-06-20")
    gl = await create_list(c, name="Dad ideas", kind="WISHLIST", personId=p["id"],
                           occasionId=o["id"], budget="80.00")
    assert gl["name"] == "Dad ideas"
    assert gl["kind"] == "WISHLIST"
    assert gl["budget"] == "80.00"
    assert gl["person"] == {"id": p["id"], "name": "Dad"}
    assert gl["occasion"] == {"id": o["id"], "name": "Fathers day"}
    assert gl["owner"] == {"id": alice.user_id}

    listed = (await ok(c, f"{{ lists {{ totalCount edges {{ node {{ {GIFT_LIST} }} }} }} }}"))
    assert listed["lists"]["totalCount"] == 1
    assert listed["lists"]["edges"][0]["node"] == gl

    # personId: null detaches the person; the omitted occasion stays.
    upd = (await ok(c, f"mutation($id: ID!) {{ updateList(id: $id, input: {{personId: null,"
                       f" name: \"Renamed\"}}) {{ {GIFT_LIST} }} }}", {"id": gl["id"]}))
    upd = upd["updateList"]
    assert upd["person"] is None
    assert upd["occasion"] == {"id": o["id"], "name": "Fathers day"}
    assert upd["name"] == "Renamed"
    assert upd["budget"] == "80.00"
    assert upd["kind"] == "WISHLIST"

    upd = (await ok(c, "mutation($id: ID!, $p: ID) { updateList(id: $id, input: {personId: $p,"
                       " occasionId: null, budget: null}) { person { id } occasion { id } budget }"
                       " }", {"id": gl["id"], "p": p["id"]}))["updateList"]
    assert upd == {"person": {"id": p["id"]}, "occasion": None, "budget": None}

    r = await c("mutation($id: ID!) { deleteList(id: $id) }", {"id": gl["id"]})
    assert r.data["deleteList"] == gl["id"]
    assert (await node(c, gl["id"])).codes == ["NOT_FOUND"]
    # The person and occasion it pointed to are untouched.
    assert (await node(c, p["id"])).data["node"]["id"] == p["id"]
    assert (await node(c, o["id"])).data["node"]["id"] == o["id"]


async def test_lists_filter_by_kind_person_occasion(alice: Account) -> None:
    c = alice.client
    p1 = (await create_person(c, name="P1"))["id"]
    p2 = (await create_person(c, name="P2"))["id"]
    o1 = (await create_occasion(c, name="O1"))["id"]
    o2 = (await create_occasion(c, name="O2"))["id"]
    await create_list(c, name="L1", kind="WISHLIST", personId=p1, occasionId=o1)
    await create_list(c, name="L2", kind="IDEAS", personId=p1)
    await create_list(c, name="L3", kind="GIFT_PLAN", personId=p2, occasionId=o1)
    await create_list(c, name="L4", kind="IDEAS")
    q = ("query($k: ListKind, $p: ID, $o: ID) { lists(kind: $k, personId: $p, occasionId: $o)"
         " { totalCount edges { node { name } } } }")

    async def lists(k: str | None = None, p: str | None = None,
                    o: str | None = None) -> list[str]:
        conn = (await ok(c, q, {"k": k, "p": p, "o": o}))["lists"]
        assert conn["totalCount"] == len(conn["edges"])
        return names(conn)

    assert await lists() == ["L1", "L2", "L3", "L4"]  # creation order
    assert await lists(k="IDEAS") == ["L2", "L4"]
    assert await lists(k="GIFT_PLAN") == ["L3"]
    assert await lists(p=p1) == ["L1", "L2"]
    assert await lists(p=p2) == ["L3"]
    assert await lists(o=o1) == ["L1", "L3"]
    assert await lists(o=o2) == []
    assert await lists(k="IDEAS", p=p1) == ["L2"]
    assert await lists(p=p2, o=o1) == ["L3"]
    assert await lists(k="WISHLIST", p=p2) == []


async def test_deleting_a_list_removes_its_items(alice: Account) -> None:
    c = alice.client
    gl = await create_list(c)
    other = await create_list(c, name="Other")
    gift = await create_gift(c, name="Kept gift")
    a = await add_item(c, gl["id"], giftId=gift["id"])
    b = await add_item(c, gl["id"], gift={"name": "Inline"})
    keep = await add_item(c, other["id"], giftId=gift["id"])
    await ok(c, "mutation($id: ID!) { deleteList(id: $id) }", {"id": gl["id"]})
    for item in (a, b):
        assert (await node(c, item["id"])).codes == ["NOT_FOUND"]
    # Items of other lists and the gifts themselves stay.
    assert (await node(c, keep["id"])).data["node"]["id"] == keep["id"]
    gifts = (await ok(c, "{ gifts { totalCount } }"))["gifts"]
    assert gifts["totalCount"] == 2
    items = (await ok(c, "query($id: ID!) { node(id: $id) { ... on GiftList { items"
                         " { totalCount } } } }", {"id": other["id"]}))
    assert items["node"]["items"]["totalCount"] == 1


# --- Gift ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "store"),
    [
        ("https://www.amazon.com/dp/B000", "amazon.com"),
        ("http://shop.example.co.uk/p?q=1#x", "shop.example.co.uk"),
        ("https://WWW.Etsy.com/listing/1", "etsy.com"),
        ("https://bookshop.org:8443/b/1", "bookshop.org"),
        ("https://wwwstore.com/a", "wwwstore.com"),
        (None, None),
    ],
)
async def test_gift_store_is_derived_from_url_host(alice: Account, url: str | None,
                                                   store: str | None) -> None:
    gift = await create_gift(alice.client, name="Thing", url=url)
    assert gift["store"] == store
    assert gift["url"] == url


async def test_gift_create_read_update_delete(alice: Account) -> None:
    c = alice.client
    g = await create_gift(c, name="Kindle", url="https://www.amazon.com/kindle", price="99.99",
                          currency="eur", imageUrl="https://img.example.com/k.png",
                          description="e-reader")
    assert {k: g[k] for k in ("name", "url", "store", "price", "currency", "imageUrl",
                              "description")} == {
        "name": "Kindle", "url": "https://www.amazon.com/kindle", "store": "amazon.com",
        "price": "99.99", "currency": "EUR", "imageUrl": "https://img.example.com/k.png",
        "description": "e-reader"}
    plain = await create_gift(c, name="Socks")
    assert plain["currency"] == "USD"
    assert plain["price"] is None

    # A new URL re-derives the store; omitted fields stay.
    upd = (await ok(c, f"mutation($id: ID!) {{ updateGift(id: $id, input: {{url:"
                       f" \"https://www.target.com/k\"}}) {{ {GIFT} }} }}", {"id": g["id"]}))
    upd = upd["updateGift"]
    assert (upd["url"], upd["store"]) == ("https://www.target.com/k", "target.com")
    assert (upd["name"], upd["price"], upd["currency"]) == ("Kindle", "99.99", "EUR")

    # url: null clears url and store; price: null clears price.
    upd = (await ok(c, f"mutation($id: ID!) {{ updateGift(id: $id, input: {{url: null,"
                       f" price: null}}) {{ {GIFT} }} }}", {"id": g["id"]}))["updateGift"]
    assert (upd["url"], upd["store"], upd["price"]) == (None, None, None)
    assert upd["imageUrl"] == "https://img.example.com/k.png"

    r = await c("mutation($id: ID!) { deleteGift(id: $id) }", {"id": g["id"]})
    assert r.data["deleteGift"] == g["id"]
    assert (await node(c, g["id"])).codes == ["NOT_FOUND"]
    assert names((await ok(c, "{ gifts { edges { node { name } } } }"))["gifts"]) == ["Socks"]


async def test_gifts_search_by_name(alice: Account) -> None:
    c = alice.client
    for n in ("Lego Castle", "LEGO Train", "Scarf", "Mega blocks"):
        await create_gift(c, name=n)
    q = "query($s: String) { gifts(search: $s) { totalCount edges { node { name } } } }"
    conn = (await ok(c, q, {"s": "lego"}))["gifts"]
    assert conn["totalCount"] == 2
    assert sorted(names(conn)) == ["LEGO Train", "Lego Castle"]
    assert names((await ok(c, q, {"s": "ARF"}))["gifts"]) == ["Scarf"]
    assert (await ok(c, q, {"s": "zzz"}))["gifts"]["totalCount"] == 0
    assert (await ok(c, q, {"s": None}))["gifts"]["totalCount"] == 4


async def test_delete_gift_on_a_list_is_a_conflict_and_deletes_nothing(alice: Account) -> None:
    c = alice.client
    gl = await create_list(c)
    gift = await create_gift(c, name="Busy")
    item = await add_item(c, gl["id"], giftId=gift["id"])
    before = await event_count(c)

    r = await c("mutation($id: ID!) { deleteGift(id: $id) }", {"id": gift["id"]})
    assert r.codes == ["CONFLICT"]
    assert (await node(c, gift["id"], "... on Gift { name }")).data["node"]["name"] == "Busy"
    assert (await node(c, item["id"])).data["node"]["id"] == item["id"]
    assert await event_count(c) == before

    await ok(c, "mutation($id: ID!) { removeListItem(id: $id) }", {"id": item["id"]})
    r = await c("mutation($id: ID!) { deleteGift(id: $id) }", {"id": gift["id"]})
    assert r.data["deleteGift"] == gift["id"]


# --- ListItem ------------------------------------------------------------------------------


async def test_list_items_add_update_remove(alice: Account) -> None:
    c = alice.client
    gl = await create_list(c)
    gift = await create_gift(c, name="Existing", price="12.00")

    by_id = await add_item(c, gl["id"], giftId=gift["id"], quantity=2, notes="blue one")
    assert by_id["status"] == "IDEA"
    assert by_id["quantity"] == 2
    assert by_id["notes"] == "blue one"
    assert by_id["gift"] == {"id": gift["id"], "name": "Existing", "price": "12.00"}
    assert by_id["list"] == {"id": gl["id"]}
    assert by_id["assignee"] is None

    inline = await add_item(c, gl["id"], gift={"name": "Fresh", "price": "3.50",
                                               "url": "https://www.ikea.com/x"})
    assert inline["quantity"] == 1  # the default
    assert inline["notes"] is None
    assert inline["gift"]["name"] == "Fresh"
    # The inline gift is a real gift of the family.
    fresh = (await node(c, inline["gift"]["id"], "... on Gift { name store }")).data["node"]
    assert fresh == {"__typename": "Gift", "id": inline["gift"]["id"], "name": "Fresh",
                     "store": "ikea.com"}
    assert (await ok(c, "{ gifts { totalCount } }"))["gifts"]["totalCount"] == 2

    # Patch: quantity only, notes unchanged.
    upd = (await ok(c, f"mutation($id: ID!) {{ updateListItem(id: $id, input: {{quantity: 5}})"
                       f" {{ {ITEM} }} }}", {"id": by_id["id"]}))["updateListItem"]
    assert (upd["quantity"], upd["notes"]) == (5, "blue one")
    assert upd["gift"]["id"] == gift["id"]
    # notes: null clears, quantity stays.
    upd = (await ok(c, f"mutation($id: ID!) {{ updateListItem(id: $id, input: {{notes: null}})"
                       f" {{ {ITEM} }} }}", {"id": by_id["id"]}))["updateListItem"]
    assert (upd["quantity"], upd["notes"]) == (5, None)
    # Swap the gift for another existing one.
    upd = (await ok(c, f"mutation($id: ID!, $g: ID) {{ updateListItem(id: $id, input:"
                       f" {{giftId: $g}}) {{ {ITEM} }} }}",
                    {"id": by_id["id"], "g": inline["gift"]["id"]}))["updateListItem"]
    assert upd["gift"]["id"] == inline["gift"]["id"]
    assert upd["status"] == "IDEA"

    items = (await ok(c, "query($id: ID!) { node(id: $id) { ... on GiftList { items"
                         " { totalCount edges { node { id } } } } } }", {"id": gl["id"]}))
    assert ids(items["node"]["items"]) == [by_id["id"], inline["id"]]

    r = await c("mutation($id: ID!) { removeListItem(id: $id) }", {"id": by_id["id"]})
    assert r.data["removeListItem"] == by_id["id"]
    assert (await node(c, by_id["id"])).codes == ["NOT_FOUND"]
    items = (await ok(c, "query($id: ID!) { node(id: $id) { ... on GiftList { items"
                         " { totalCount } } } }", {"id": gl["id"]}))
    assert items["node"]["items"]["totalCount"] == 1
    # Removing an item keeps the gift.
    assert (await node(c, gift["id"])).data["node"]["id"] == gift["id"]


async def test_assign_and_unassign_list_item(alice: Account) -> None:
    c = alice.client
    member = await register_member(c)
    gl = await create_list(c)
    item = await add_item(c, gl["id"], gift={"name": "Watch"})
    q = ("mutation($i: ID!, $u: ID) { assignListItem(id: $i, userId: $u)"
         " { id assignee { id displayName } } }")

    r = (await ok(c, q, {"i": item["id"], "u": member}))["assignListItem"]
    assert r["assignee"] == {"id": member, "displayName": "Bob"}
    r = (await ok(c, q, {"i": item["id"], "u": alice.user_id}))["assignListItem"]
    assert r["assignee"]["id"] == alice.user_id
    fetched = (await node(c, item["id"], "... on ListItem { assignee { id } }")).data["node"]
    assert fetched["assignee"] == {"id": alice.user_id}

    r = (await ok(c, q, {"i": item["id"], "u": None}))["assignListItem"]
    assert r["assignee"] is None
    fetched = (await node(c, item["id"], "... on ListItem { assignee { id } }")).data["node"]
    assert fetched["assignee"] is None


async def test_list_items_filter_by_status(alice: Account) -> None:
    c = alice.client
    gl = await create_list(c)
    made = [await add_item(c, gl["id"], gift={"name": f"G{i}"}) for i in range(4)]
    await walk_to(c, made[1]["id"], "SELECTED")
    await walk_to(c, made[2]["id"], "PURCHASED")
    q = ("query($id: ID!, $s: ItemStatus) { node(id: $id) { ... on GiftList {"
         " items(status: $s) { totalCount edges { node { id status } } } } } }")

    async def items(status: str | None) -> list[str]:
        conn = (await ok(c, q, {"id": gl["id"], "s": status}))["node"]["items"]
        assert conn["totalCount"] == len(conn["edges"])
        assert all(status in (None, e["node"]["status"]) for e in conn["edges"])
        return ids(conn)

    assert await items("IDEA") == [made[0]["id"], made[3]["id"]]
    assert await items("SELECTED") == [made[1]["id"]]
    assert await items("PURCHASED") == [made[2]["id"]]
    assert await items("RECEIVED") == []
    assert await items(None) == [m["id"] for m in made]


# --- Status pipeline -----------------------------------------------------------------------


@pytest.mark.parametrize(("start", "target"), list(itertools.product(STATUSES, STATUSES)))
async def test_status_transitions(alice: Account, start: str, target: str) -> None:
    c = alice.client
    gl = await create_list(c)
    item = await add_item(c, gl["id"], gift={"name": "Bike"})
    await walk_to(c, item["id"], start)
    before = await event_count(c)

    r = await set_status(c, item["id"], target)
    allowed = abs(STATUSES.index(start) - STATUSES.index(target)) == 1
    current = (await node(c, item["id"], "... on ListItem { status }")).data["node"]["status"]
    if allowed:
        assert r.data["setListItemStatus"] == {"id": item["id"], "status": target}
        assert current == target
        assert await event_count(c) == before + 1
    else:
        assert r.codes == ["INVALID_TRANSITION"], r.body
        assert current == start
        assert await event_count(c) == before


async def test_each_root_mutation_commits_on_its_own(alice: Account) -> None:
    """Root mutations run one by one, each its own transaction, though they share the
    operation's session with its reads (the caller, `a`'s nested selection): a later
    failure rolls back only itself, and what `a` read and wrote stands."""
    c = alice.client
    gl = await create_list(c, name="Xmas")
    item = await add_item(c, gl["id"], gift={"name": "Bike"})
    before = await event_count(c)
    r = await c(
        "mutation($i: ID!) {"
        " a: setListItemStatus(id: $i, status: SELECTED) { id status list { name"
        "   items(first: 5) { edges { node { id status gift { name } } } } } }"
        " b: setListItemStatus(id: $i, status: RECEIVED) { id }"
        ' c: createPerson(input: {name: "Dad"}) { id } }', {"i": item["id"]})
    assert r.codes == ["INVALID_TRANSITION"], r.body
    assert r.errors[0]["path"] == ["b"]
    assert r.body["data"] is None  # `b` is non-null: its error nulls the whole result
    current = (await node(c, item["id"], "... on ListItem { status }")).data["node"]["status"]
    assert current == "SELECTED"  # `a` committed before `b` failed
    assert await event_count(c) == before + 1
    latest = (await ok(c, LATEST))["events"]["edges"][0]["node"]
    assert (latest["kind"], latest["entityId"]) == ("STATUS_CHANGED", item["id"])
    # the next operation starts clean
    assert (await set_status(c, item["id"], "PURCHASED")).data["setListItemStatus"]["status"] \
        == "PURCHASED"


# --- Comments ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["LIST", "LIST_ITEM", "GIFT", "PERSON", "OCCASION"])
async def test_comments_add_query_delete(alice: Account, target: str) -> None:
    c = alice.client
    gl = await create_list(c)
    item = await add_item(c, gl["id"], gift={"name": "Pen"})
    targets = {
        "LIST": gl["id"], "LIST_ITEM": item["id"], "GIFT": item["gift"]["id"],
        "PERSON": (await create_person(c))["id"], "OCCASION": (await create_occasion(c))["id"],
    }
    target_id = targets[target]
    add = (f"mutation($t: CommentTarget!, $id: ID!, $b: String!) {{ addComment(input:"
           f" {{target: $t, targetId: $id, body: $b}}) {{ {COMMENT} }} }}")
    query = ("query($t: CommentTarget!, $id: ID!) { comments(target: $t, targetId: $id)"
             " { totalCount edges { node { id body author { id } } } } }")

    first = (await ok(c, add, {"t": target, "id": target_id, "b": "  Love it  "}))["addComment"]
    assert first["target"] == target
    assert first["targetId"] == target_id
    assert first["body"] == "Love it"
    assert first["author"] == {"id": alice.user_id}
    second = (await ok(c, add, {"t": target, "id": target_id, "b": "Me too"}))["addComment"]
    # A comment on another target does not show up here.
    other = "PERSON" if target != "PERSON" else "OCCASION"
    await ok(c, add, {"t": other, "id": targets[other], "b": "Elsewhere"})

    conn = (await ok(c, query, {"t": target, "id": target_id}))["comments"]
    assert conn["totalCount"] == 2
    assert [e["node"]["body"] for e in conn["edges"]] == ["Love it", "Me too"]  # oldest first

    r = await c("mutation($id: ID!) { deleteComment(id: $id) }", {"id": first["id"]})
    assert r.data["deleteComment"] == first["id"]
    conn = (await ok(c, query, {"t": target, "id": target_id}))["comments"]
    assert ids(conn) == [second["id"]]
    assert (await node(c, first["id"])).codes == ["NOT_FOUND"]


async def test_comment_target_id_must_match_target_kind(alice: Account) -> None:
    c = alice.client
    person = await create_person(c)
    r = await c("mutation($id: ID!) { addComment(input: {target: GIFT, targetId: $id,"
                " body: \"x\"}) { id } }", {"id": person["id"]})
    assert r.codes == ["NOT_FOUND"]
    r = await c("query($id: ID!) { comments(target: GIFT, targetId: $id) { totalCount } }",
                {"id": person["id"]})
    assert r.codes == ["NOT_FOUND"]


# --- node(id:) -----------------------------------------------------------------------------


async def test_node_resolves_every_type(alice: Account) -> None:
    c = alice.client
    person = await create_person(c, name="Nana")
    occasion = await create_occasion(c, name="Easter")
    gl = await create_list(c, name="Nana list")
    item = await add_item(c, gl["id"], gift={"name": "Teapot"})
    comment = (await ok(c, "mutation($id: ID!) { addComment(input: {target: PERSON,"
                           " targetId: $id, body: \"hi\"}) { id } }",
                        {"id": person["id"]}))["addComment"]
    me = (await ok(c, "{ me { id family { id } } }"))["me"]
    event = (await ok(c, "{ events(first: 1) { edges { node { id seq } } } }"))
    event = event["events"]["edges"][0]["node"]

    fields = ("... on Family { name } ... on User { email } ... on Person { name }"
              " ... on Occasion { name } ... on GiftList { name } ... on Gift { name }"
              " ... on ListItem { status } ... on Comment { body } ... on Event { seq }")
    expected = [
        (me["family"]["id"], "Family", "name", "Alice's family"),
        (me["id"], "User", "email", alice.email),
        (person["id"], "Person", "name", "Nana"),
        (occasion["id"], "Occasion", "name", "Easter"),
        (gl["id"], "GiftList", "name", "Nana list"),
        (item["gift"]["id"], "Gift", "name", "Teapot"),
        (item["id"], "ListItem", "status", "IDEA"),
        (comment["id"], "Comment", "body", "hi"),
        (event["id"], "Event", "seq", event["seq"]),
    ]
    for gid, typename, field, value in expected:
        got = (await node(c, gid, fields)).data["node"]
        assert got == {"__typename": typename, "id": gid, field: value}


async def test_node_of_another_family_is_not_found(alice: Account, mallory: Account) -> None:
    person = await create_person(alice.client, name="Private")
    r = await node(mallory.client, person["id"])
    assert r.codes == ["NOT_FOUND"]


# --- Events --------------------------------------------------------------------------------

EVENT_NODE = (
    "node { __typename id ... on Person { name notes } ... on Occasion { name budget }"
    " ... on GiftList { name } ... on Gift { name store }"
    " ... on ListItem { status quantity assignee { id } } ... on Comment { body } }"
)
LATEST = ("{ events(first: 1) { totalCount edges { node { seq kind entityType entityId"
          f" actor {{ id }} at {EVENT_NODE} }} }} }} }}")


async def test_events_log_one_event_per_mutation_with_snapshots(alice: Account) -> None:
    c = alice.client
    state: dict[str, str] = {}
    log: list[tuple[str, str, str]] = []  # (kind, entityType, entityId), oldest first

    async def step(query: str, variables: dict[str, Any], kind: str, entity_type: str,
                   key: str, snapshot: dict[str, Any] | None) -> None:
        before = await event_count(c)
        data = (await c(query, variables)).data
        result = next(iter(data.values()))
        entity_id = result["id"] if isinstance(result, dict) else result
        state.setdefault(key, entity_id)
        latest = (await ok(c, LATEST))["events"]
        assert latest["totalCount"] == before + 1, query
        ev = latest["edges"][0]["node"]
        assert (ev["kind"], ev["entityType"], ev["entityId"]) == (kind, entity_type,
                                                                  state[key]), query
        assert ev["actor"] == {"id": alice.user_id}
        assert ev["at"]
        if snapshot is None:
            assert ev["node"] is None, query
        else:
            assert ev["node"]["__typename"] == entity_type
            assert ev["node"]["id"] == state[key]
            assert {k: ev["node"][k] for k in snapshot} == snapshot, query
        log.append((kind, entity_type, state[key]))

    await step('mutation { createPerson(input: {name: "Mom"}) { id } }', {}, "ADDED",
               "Person", "p", {"name": "Mom", "notes": None})
    await step('mutation($id: ID!) { updatePerson(id: $id, input: {notes: "roses"}) { id } }',
               {"id": state["p"]}, "UPDATED", "Person", "p", {"name": "Mom", "notes": "roses"})
    await step('mutation { createOccasion(input: {name: "Xmas", kind: HOLIDAY,'
               ' date: "2099-12-25", budget: "10.00"}) { id } }', {}, "ADDED", "Occasion", "o",
               {"name": "Xmas", "budget": "10.00"})
    await step("mutation($id: ID!) { updateOccasion(id: $id, input: {budget: null}) { id } }",
               {"id": state["o"]}, "UPDATED", "Occasion", "o", {"name": "Xmas", "budget": None})
    await step("mutation($p: ID) { createList(input: {name: \"L\", kind: IDEAS, personId: $p})"
               " { id } }", {"p": state["p"]}, "ADDED", "GiftList", "l", {"name": "L"})
    await step('mutation($id: ID!) { updateList(id: $id, input: {name: "L2"}) { id } }',
               {"id": state["l"]}, "UPDATED", "GiftList", "l", {"name": "L2"})
    await step('mutation { createGift(input: {name: "Vase", url: "https://www.vases.com/1"})'
               " { id } }", {}, "ADDED", "Gift", "g", {"name": "Vase", "store": "vases.com"})
    await step('mutation($id: ID!) { updateGift(id: $id, input: {name: "Big vase"}) { id } }',
               {"id": state["g"]}, "UPDATED", "Gift", "g", {"name": "Big vase"})
    await step("mutation($l: ID!, $g: ID) { addListItem(listId: $l, input: {giftId: $g})"
               " { id } }", {"l": state["l"], "g": state["g"]}, "ADDED", "ListItem", "i",
               {"status": "IDEA", "quantity": 1})
    await step("mutation($id: ID!) { updateListItem(id: $id, input: {quantity: 3}) { id } }",
               {"id": state["i"]}, "UPDATED", "ListItem", "i", {"quantity": 3})
    await step("mutation($id: ID!) { setListItemStatus(id: $id, status: SELECTED) { id } }",
               {"id": state["i"]}, "STATUS_CHANGED", "ListItem", "i", {"status": "SELECTED"})
    await step("mutation($id: ID!, $u: ID) { assignListItem(id: $id, userId: $u) { id } }",
               {"id": state["i"], "u": alice.user_id}, "ASSIGNED", "ListItem", "i",
               {"assignee": {"id": alice.user_id}})
    await step("mutation($id: ID!) { assignListItem(id: $id, userId: null) { id } }",
               {"id": state["i"]}, "ASSIGNED", "ListItem", "i", {"assignee": None})
    await step("mutation($id: ID!) { addComment(input: {target: LIST_ITEM, targetId: $id,"
               ' body: "nice"}) { id } }', {"id": state["i"]}, "COMMENT_ADDED", "Comment", "c",
               {"body": "nice"})
    await step("mutation($id: ID!) { deleteComment(id: $id) }", {"id": state["c"]}, "DELETED",
               "Comment", "c", None)
    await step("mutation($id: ID!) { removeListItem(id: $id) }", {"id": state["i"]}, "DELETED",
               "ListItem", "i", None)
    await step("mutation($id: ID!) { deleteGift(id: $id) }", {"id": state["g"]}, "DELETED",
               "Gift", "g", None)
    await step("mutation($id: ID!) { deleteList(id: $id) }", {"id": state["l"]}, "DELETED",
               "GiftList", "l", None)
    await step("mutation($id: ID!) { deleteOccasion(id: $id) }", {"id": state["o"]}, "DELETED",
               "Occasion", "o", None)
    await step("mutation($id: ID!) { deletePerson(id: $id) }", {"id": state["p"]}, "DELETED",
               "Person", "p", None)

    # The whole log: newest first, seq strictly decreasing, exactly the steps above.
    # (signUp itself logged the admin's creation first.)
    full = (await ok(c, "{ events(first: 100) { totalCount edges { node { seq kind entityType"
                        f" entityId {EVENT_NODE} }} }} }} }}"))["events"]
    nodes = [e["node"] for e in full["edges"]]
    assert full["totalCount"] == len(nodes) == len(log) + 1
    seqs = [int(n["seq"]) for n in nodes]
    assert seqs == sorted(seqs, reverse=True)
    assert len(set(seqs)) == len(seqs)
    assert [(n["kind"], n["entityType"], n["entityId"]) for n in nodes[:-1]] == log[::-1]
    assert (nodes[-1]["kind"], nodes[-1]["entityType"]) == ("ADDED", "User")
    # Old snapshots are frozen at their change, even after later updates and the delete.
    person_events = [n for n in nodes if n["entityType"] == "Person"]
    assert [(n["kind"], n["node"] and n["node"]["notes"]) for n in person_events] == [
        ("DELETED", None), ("UPDATED", "roses"), ("ADDED", None)]
    assert person_events[2]["node"]["name"] == "Mom"


async def test_inline_gift_logs_the_gift_and_the_item(alice: Account) -> None:
    c = alice.client
    gl = await create_list(c)
    before = await event_count(c)
    item = await add_item(c, gl["id"], gift={"name": "Inline"})
    latest = (await ok(c, "{ events(first: 5) { totalCount edges { node { kind entityType"
                          " entityId } } } }"))["events"]
    new = [e["node"] for e in latest["edges"]][: latest["totalCount"] - before]
    assert {(n["kind"], n["entityType"], n["entityId"]) for n in new} == {
        ("ADDED", "Gift", item["gift"]["id"]), ("ADDED", "ListItem", item["id"])}
    assert new[0]["entityType"] == "ListItem"  # the item is the newest


async def test_events_are_scoped_to_the_family(alice: Account, mallory: Account) -> None:
    await create_person(alice.client, name="Secret")
    mine = (await ok(mallory.client, "{ events { totalCount edges { node { entityType } } } }"))
    assert [e["node"]["entityType"] for e in mine["events"]["edges"]] == ["User"]


# --- Derived views -------------------------------------------------------------------------


async def test_person_gift_history(alice: Account) -> None:
    c = alice.client
    mom = await create_person(c, name="Mom")
    dad = await create_person(c, name="Dad")
    mom_list = await create_list(c, name="Mom 1", personId=mom["id"])
    mom_list2 = await create_list(c, name="Mom 2", personId=mom["id"])
    dad_list = await create_list(c, name="Dad", personId=dad["id"])
    loose = await create_list(c, name="Nobody")

    idea = await add_item(c, mom_list["id"], gift={"name": "idea"})
    selected = await add_item(c, mom_list["id"], gift={"name": "selected"})
    first = await add_item(c, mom_list["id"], gift={"name": "bought first"})
    second = await add_item(c, mom_list2["id"], gift={"name": "bought second"})
    back = await add_item(c, mom_list["id"], gift={"name": "returned"})
    dads = await add_item(c, dad_list["id"], gift={"name": "dads"})
    nobody = await add_item(c, loose["id"], gift={"name": "nobody's"})
    await walk_to(c, selected["id"], "SELECTED")
    await walk_to(c, back["id"], "PURCHASED")
    await walk_to(c, first["id"], "PURCHASED")
    await walk_to(c, second["id"], "RECEIVED")
    await walk_to(c, dads["id"], "PURCHASED")
    await walk_to(c, nobody["id"], "PURCHASED")
    assert (await set_status(c, back["id"], "SELECTED")).data  # no longer bought
    assert idea["status"] == "IDEA"

    q = ("query($id: ID!) { node(id: $id) { ... on Person { giftHistory { totalCount"
         " edges { node { id status gift { name } } } } } } }")
    hist = (await ok(c, q, {"id": mom["id"]}))["node"]["giftHistory"]
    assert [(e["node"]["gift"]["name"], e["node"]["status"]) for e in hist["edges"]] == [
        ("bought second", "RECEIVED"), ("bought first", "PURCHASED")]
    assert hist["totalCount"] == 2
    dad_hist = (await ok(c, q, {"id": dad["id"]}))["node"]["giftHistory"]
    assert ids(dad_hist) == [dads["id"]]

    # Paging over the history.
    paged = (await ok(c, "query($id: ID!) { node(id: $id) { ... on Person { giftHistory(first: 1)"
                         " { totalCount pageInfo { hasNextPage endCursor } edges { node { id } }"
                         " } } } }", {"id": mom["id"]}))["node"]["giftHistory"]
    assert ids(paged) == [second["id"]]
    assert paged["pageInfo"]["hasNextPage"] is True
    assert paged["totalCount"] == 2
    rest = (await ok(c, "query($id: ID!, $a: String) { node(id: $id) { ... on Person {"
                        " giftHistory(first: 5, after: $a) { pageInfo { hasNextPage }"
                        " edges { node { id } } } } } }",
                     {"id": mom["id"], "a": paged["pageInfo"]["endCursor"]}))
    rest = rest["node"]["giftHistory"]
    assert ids(rest) == [first["id"]]
    assert rest["pageInfo"]["hasNextPage"] is False


async def test_occasion_summary(alice: Account) -> None:
    c = alice.client
    xmas = await create_occasion(c, name="Xmas", budget="100.00")
    other = await create_occasion(c, name="Other", budget="5.00")
    ann = await create_person(c, name="Ann")
    ben = await create_person(c, name="Ben")
    cat = await create_person(c, name="Cat")
    ann_list = await create_list(c, name="Ann xmas", personId=ann["id"], occasionId=xmas["id"])
    ann_list2 = await create_list(c, name="Ann xmas 2", personId=ann["id"],
                                  occasionId=xmas["id"])
    ben_list = await create_list(c, name="Ben xmas", personId=ben["id"], occasionId=xmas["id"])
    ann_other = await create_list(c, name="Ann other", personId=ann["id"],
                                  occasionId=other["id"])
    await create_list(c, name="Cat other", personId=cat["id"], occasionId=other["id"])

    async def item(list_id: str, price: str | None, qty: int, status: str) -> None:
        it = await add_item(c, list_id, gift={"name": "g", "price": price}, quantity=qty)
        await walk_to(c, it["id"], status)

    await item(ann_list["id"], "10.00", 3, "PURCHASED")   # 30.00
    await item(ann_list2["id"], "5.50", 2, "RECEIVED")    # 11.00
    await item(ann_list["id"], "99.00", 1, "IDEA")        # not spent
    await item(ann_list["id"], "42.00", 2, "SELECTED")    # not spent
    await item(ann_list["id"], None, 4, "PURCHASED")      # no price: 0
    await item(ben_list["id"], "20.00", 1, "PURCHASED")   # 20.00
    await item(ann_other["id"], "1000.00", 1, "RECEIVED")  # another occasion

    q = ("query($id: ID!) { node(id: $id) { ... on Occasion { summary { occasion { id }"
         " budget spent people { person { name } spent"
         " pipeline { idea selected purchased received } } } } } }")
    s = (await ok(c, q, {"id": xmas["id"]}))["node"]["summary"]
    assert s["occasion"] == {"id": xmas["id"]}
    assert s["budget"] == "100.00"
    assert Decimal(s["spent"]) == Decimal("61.00")
    people = {p["person"]["name"]: p for p in s["people"]}
    assert set(people) == {"Ann", "Ben"}
    assert people["Ann"]["pipeline"] == {"idea": 1, "selected": 1, "purchased": 2, "received": 1}
    assert Decimal(people["Ann"]["spent"]) == Decimal("41.00")
    assert people["Ben"]["pipeline"] == {"idea": 0, "selected": 0, "purchased": 1, "received": 0}
    assert Decimal(people["Ben"]["spent"]) == Decimal("20.00")

    s2 = (await ok(c, q, {"id": other["id"]}))["node"]["summary"]
    assert s2["budget"] == "5.00"
    assert Decimal(s2["spent"]) == Decimal("1000.00")
    people2 = {p["person"]["name"]: p for p in s2["people"]}
    assert Decimal(people2["Ann"]["spent"]) == Decimal("1000.00")
    assert Decimal(people2.get("Cat", {"spent": "0"})["spent"]) == 0

    empty = await create_occasion(c, name="Empty")
    s3 = (await ok(c, q, {"id": empty["id"]}))["node"]["summary"]
    assert s3["people"] == []
    assert s3["budget"] is None
    assert Decimal(s3["spent"]) == 0


# --- Patch validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutation", "field"),
    [
        ("updatePerson", "name"),
        ("updateOccasion", "name"),
        ("updateOccasion", "kind"),
        ("updateOccasion", "date"),
        ("updateList", "name"),
        ("updateList", "kind"),
        ("updateGift", "name"),
        ("updateListItem", "quantity"),
    ],
)
async def test_null_on_a_required_field_is_bad_input(alice: Account, mutation: str,
                                                     field: str) -> None:
    c = alice.client
    gl = await create_list(c, name="Orig")
    item = await add_item(c, gl["id"], gift={"name": "Orig"}, quantity=2)
    target = {
        "updatePerson": (await create_person(c, name="Orig"))["id"],
        "updateOccasion": (await create_occasion(c, name="Orig"))["id"],
        "updateList": gl["id"],
        "updateGift": item["gift"]["id"],
        "updateListItem": item["id"],
    }[mutation]
    check = ("... on Person { name } ... on Occasion { name occasionKind: kind date }"
             " ... on GiftList { name listKind: kind } ... on Gift { name }"
             " ... on ListItem { quantity }")
    before = (await node(c, target, check)).data["node"]
    events = await event_count(c)

    r = await c(f"mutation($id: ID!) {{ {mutation}(id: $id, input: {{{field}: null}}) {{ id }} }}",
                {"id": target})
    bad_input(r, field)
    assert (await node(c, target, check)).data["node"] == before
    assert await event_count(c) == events
