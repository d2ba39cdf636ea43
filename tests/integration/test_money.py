"""Money: each family has a currency; every `spent` counts only the items priced in it, and
`spentByCurrency` gives the total per currency, in the compiled reads and the executor
alike, in queries and in the dashboard subscription's snapshots."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from giftgraph.app import create_app
from giftgraph.db.engine import async_url
from giftgraph.db.migrate import alembic_config, upgrade
from tests.conftest import GQL, Account, _dsn, make_settings, sign_up
from tests.integration.test_compiled_reads import outcomes, same
from tests.integration.test_live import WsClient
from tests.integration.test_live_features import Server, live_server  # noqa: F401
from tests.integration.test_no_n_plus_one import count_statements
from tests.support import ACCEL

MONEY = "spent spentByCurrency { amount currency }"
SUMMARY = f"""query($o: ID!) {{ node(id: $o) {{ ... on Occasion {{ summary {{ budget {MONEY}
  people {{ person {{ name }} {MONEY} }} }} }} }} }}"""
DASHBOARD = f"{{ dashboard {{ budget {MONEY} people {{ person {{ name }} {MONEY} }} }} }}"
FAMILY = "{ family { name currency } }"
UPDATE_FAMILY = "mutation($i: FamilyPatch!) { updateFamily(input: $i) { id name currency } }"

# 34.99 USD and 2 x 4.50 EUR, both purchased, in a USD family.
MIXED = {"spent": "34.99", "spentByCurrency": [{"amount": "9.00", "currency": "EUR"},
                                               {"amount": "34.99", "currency": "USD"}]}


@pytest.fixture
def settings(database_url: str, request: pytest.FixtureRequest) -> Any:
    """The result cache on: a change of the family's currency must reach every read.
    Parametrized indirectly: whether reads compile."""
    return make_settings(database_url, compile_reads=getattr(request, "param", True))


@pytest.fixture
async def executor(database_url: str, alice: Account) -> AsyncIterator[GQL]:
    """The same service with the compiler off, on the same database, as Alice."""
    application = create_app(make_settings(database_url, compile_reads=False))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield GQL(client, alice.token)


async def _call(c: Any, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """`c`: a GQL client, or a Server with its token bound (see `_server_client`)."""
    return await c(query, variables)  # type: ignore[no-any-return]


async def _mixed(c: Any, *, eur_first: bool = False) -> dict[str, str]:
    """A person, an upcoming occasion and a list for both, with a 34.99 USD gift and
    2 x 4.50 EUR, both PURCHASED, and a 100.00 GBP idea (not spent)."""
    person = (await _call(c, 'mutation { createPerson(input: {name: "Ann"}) { id } }')
              )["createPerson"]["id"]
    occasion = (await _call(c, 'mutation { createOccasion(input: {name: "Party", kind: BIRTHDAY,'
                               ' date: "2099-01-01", budget: "50.00"}) { id } }')
                )["createOccasion"]["id"]
    gift_list = (await _call(c, "mutation($p: ID, $o: ID) { createList(input: {name: \"L\","
                                " kind: GIFT_PLAN, personId: $p, occasionId: $o}) { id } }",
                             {"p": person, "o": occasion}))["createList"]["id"]
    gifts = [({"name": "Book", "price": "34.99", "currency": "USD"}, 1, True),
             ({"name": "Chocolate", "price": "4.50", "currency": "eur"}, 2, True),
             ({"name": "Scarf", "price": "100.00", "currency": "GBP"}, 1, False)]
    if eur_first:
        gifts.reverse()
    for gift, quantity, bought in gifts:
        item = (await _call(c, "mutation($l: ID!, $i: ListItemInput!) { addListItem(listId: $l,"
                               " input: $i) { id gift { currency } } }",
                            {"l": gift_list, "i": {"gift": gift, "quantity": quantity}})
                )["addListItem"]
        assert item["gift"]["currency"] == gift["currency"].upper()
        for status in ("SELECTED", "PURCHASED") if bought else ():
            await _call(c, "mutation($i: ID!, $s: ItemStatus!) { setListItemStatus(id: $i,"
                           " status: $s) { id } }", {"i": item["id"], "s": status})
    return {"person": person, "occasion": occasion, "list": gift_list}


class Client:
    """A GQL client whose calls return `data` (errors fail the test)."""

    def __init__(self, gql: GQL) -> None:
        self.gql = gql

    async def __call__(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        return (await self.gql(query, variables)).data


def _money(block: dict[str, Any]) -> dict[str, Any]:
    return {"spent": block["spent"], "spentByCurrency": block["spentByCurrency"]}


async def _reads(alice: Account, executor: GQL, occasion: str) -> dict[str, Any]:
    """Every `spent` of the family, each read compiled and by the executor (equal)."""
    summary = (await same(alice.client, executor, SUMMARY, {"o": occasion})
               )["data"]["node"]["summary"]
    dashboard = (await same(alice.client, executor, DASHBOARD))["data"]["dashboard"]
    return {"summary": _money(summary), "summary_person": _money(summary["people"][0]),
            "dashboard": _money(dashboard), "dashboard_person": _money(dashboard["people"][0])}


async def test_spent_counts_only_the_family_currency(
        app: Any, alice: Account, executor: GQL) -> None:
    """34.99 USD + 2 x 4.50 EUR purchased for one occasion: a USD family has spent 34.99
    (it was 43.99, the EUR added as if USD), and 9.00 EUR beside it; the same in the
    occasion's summary, its people, the dashboard and its people, compiled or not."""
    assert (await alice.client(FAMILY)).data["family"]["currency"] == "USD"
    ids = await _mixed(Client(alice.client))
    before = outcomes(app)
    reads = await _reads(alice, executor, ids["occasion"])
    assert reads == {"summary": MIXED, "summary_person": MIXED, "dashboard": MIXED,
                     "dashboard_person": MIXED}
    if ACCEL:  # the dashboard was compiled (giftgraph.accel)
        assert outcomes(app).get("compiled", 0) > before.get("compiled", 0)
    summary = (await alice.client(SUMMARY, {"o": ids["occasion"]})).data["node"]["summary"]
    assert summary["budget"] == "50.00"


async def test_spent_by_currency_order_and_empty_lists(alice: Account, executor: GQL) -> None:
    """Sorted by currency code whatever the order of the items; nothing spent: [] and
    "0.00" (no entry is added for the family's currency)."""
    empty = (await same(alice.client, executor, DASHBOARD))["data"]["dashboard"]
    assert _money(empty) == {"spent": "0.00", "spentByCurrency": []}
    ids = await _mixed(Client(alice.client), eur_first=True)
    reads = await _reads(alice, executor, ids["occasion"])
    assert reads["dashboard"] == MIXED
    # An occasion with a list but nothing purchased; a person with nothing at all.
    await alice.client('mutation { createPerson(input: {name: "Zed"}) { id } }')
    other = (await alice.client('mutation { createOccasion(input: {name: "Later", kind: OTHER,'
                                ' date: "2099-06-01"}) { id } }')).data["createOccasion"]["id"]
    await alice.client('mutation($o: ID) { createList(input: {name: "M", kind: IDEAS,'
                       ' occasionId: $o}) { id } }', {"o": other})
    summary = (await same(alice.client, executor, SUMMARY, {"o": other}))["data"]["node"]
    assert _money(summary["summary"]) == {"spent": "0.00", "spentByCurrency": []}
    dashboard = (await same(alice.client, executor, DASHBOARD))["data"]["dashboard"]
    assert [(p["person"]["name"], _money(p)) for p in dashboard["people"]] == [
        ("Ann", MIXED), ("Zed", {"spent": "0.00", "spentByCurrency": []})]


async def test_update_family_changes_what_spent_counts(
        app: Any, alice: Account, executor: GQL) -> None:
    """An ADMIN's updateFamily: the currency is upper-cased, `spent` counts the new
    currency at once everywhere (the result cache too), and the change is an UPDATED
    Family event on the family topic."""
    ids = await _mixed(Client(alice.client))
    assert (await _reads(alice, executor, ids["occasion"]))["dashboard"] == MIXED  # cached
    before = (await alice.client("{ family { updatedAt } }")).data["family"]["updatedAt"]
    r = await alice.client("mutation($i: FamilyPatch!) { updateFamily(input: $i)"
                           " { id name currency updatedAt } }", {"i": {"currency": "eur"}})
    changed = r.data["updateFamily"]
    assert (changed["name"], changed["currency"]) == ("Alice's family", "EUR")
    assert changed["updatedAt"] > before
    eur = {"spent": "9.00", "spentByCurrency": MIXED["spentByCurrency"]}
    assert await _reads(alice, executor, ids["occasion"]) == {
        "summary": eur, "summary_person": eur, "dashboard": eur, "dashboard_person": eur}
    assert (await alice.client(FAMILY)).data["family"] == {"name": "Alice's family",
                                                           "currency": "EUR"}
    events = (await alice.client("{ events(first: 1) { edges { node { kind entityType topic"
                                 " node { ... on Family { name currency } } } } } }")
              ).data["events"]["edges"]
    assert events[0]["node"] == {"kind": "UPDATED", "entityType": "Family", "topic": "family",
                                 "node": {"name": "Alice's family", "currency": "EUR"}}
    # The name alone: the currency stays.
    r = await alice.client(UPDATE_FAMILY, {"i": {"name": "  The A's  "}})
    assert r.data["updateFamily"]["name"] == "The A's"
    assert r.data["updateFamily"]["currency"] == "EUR"
    assert (await _reads(alice, executor, ids["occasion"]))["dashboard"] == eur


async def _state(database_url: str) -> tuple[list[Any], int]:
    """Every family's name and currency, and the number of events."""
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        families = [tuple(r) for r in await conn.fetch(
            "SELECT name, currency FROM families ORDER BY created_at")]
        return families, await conn.fetchval("SELECT count(*) FROM events")
    finally:
        await conn.close()


async def test_update_family_refuses_members_and_bad_input(
        gql: GQL, alice: Account, database_url: str) -> None:
    """A member is FORBIDDEN; an unknown currency, a null or blank name, a null currency
    are BAD_USER_INPUT naming the field; each changes nothing (no event either)."""
    email = "member@example.com"
    await alice.client("mutation($i: RegisterUserInput!) { registerUser(input: $i) { id } }",
                       {"i": {"email": email, "password": "member password 1",
                              "displayName": "Bob"}})
    login = await gql("mutation($e: String!) { login(email: $e, password: \"member password 1\")"
                      " { accessToken } }", {"e": email})
    member = gql.as_(login.data["login"]["accessToken"])
    before = await _state(database_url)
    r = await member(UPDATE_FAMILY, {"i": {"currency": "EUR"}})
    assert r.codes == ["FORBIDDEN"]
    assert r.body["data"] is None
    bad = [({"currency": "XYZ"}, "currency"), ({"currency": "EURO"}, "currency"),
           ({"currency": ""}, "currency"), ({"currency": None}, "currency"),
           ({"name": None}, "name"), ({"name": "   "}, "name"),
           ({"name": "ok", "currency": "US"}, "currency")]
    for patch, field in bad:
        r = await alice.client(UPDATE_FAMILY, {"i": patch})
        assert r.codes == ["BAD_USER_INPUT"], (patch, r.body)
        assert list(r.errors[0]["extensions"]["fields"]) == [field], (patch, r.body)
    assert await _state(database_url) == before
    assert (await alice.client(FAMILY)).data["family"]["currency"] == "USD"


async def test_sign_up_with_a_currency(gql: GQL, database_url: str) -> None:
    """signUp takes the family's currency (any case; USD when omitted); an unknown one is
    BAD_USER_INPUT on `currency`, and nothing is created."""
    r = await gql("mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
                  {"i": {"familyName": "Euro", "email": "eu@example.com",
                         "password": "correct horse battery", "displayName": "E",
                         "currency": " eur "}})
    euro = gql.as_(r.data["signUp"]["accessToken"])
    assert (await euro(FAMILY)).data["family"] == {"name": "Euro", "currency": "EUR"}
    default = await sign_up(gql, "Plain")
    assert (await default.client(FAMILY)).data["family"]["currency"] == "USD"
    before = await _state(database_url)
    r = await gql("mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
                  {"i": {"familyName": "Bad", "email": "bad@example.com",
                         "password": "correct horse battery", "displayName": "B",
                         "currency": "ABC"}})
    assert r.codes == ["BAD_USER_INPUT"]
    assert list(r.errors[0]["extensions"]["fields"]) == ["currency"]
    assert await _state(database_url) == before
    # The family's currency is what its spending is counted in.
    ids = await _mixed(Client(euro))
    summary = (await euro(SUMMARY, {"o": ids["occasion"]})).data["node"]["summary"]
    assert _money(summary) == {"spent": "9.00", "spentByCurrency": MIXED["spentByCurrency"]}


async def test_a_gift_without_a_currency_takes_the_familys(alice: Account) -> None:
    """createGift and a new gift on a list, without a currency or with null: the family's
    currency at that moment; updateGift with null: the family's currency now; a gift keeps
    its currency when the family's changes."""
    c = alice.client
    first = (await c('mutation { createGift(input: {name: "A"}) { id currency } }')
             ).data["createGift"]
    assert first["currency"] == "USD"
    await c(UPDATE_FAMILY, {"i": {"currency": "JPY"}})
    made = (await c('mutation { createGift(input: {name: "B", currency: null}) { currency } }')
            ).data["createGift"]
    assert made["currency"] == "JPY"
    gift_list = (await c('mutation { createList(input: {name: "L", kind: IDEAS}) { id } }')
                 ).data["createList"]["id"]
    item = (await c('mutation($l: ID!) { addListItem(listId: $l, input: {gift: {name: "C"}})'
                    " { gift { currency } } }", {"l": gift_list})).data["addListItem"]
    assert item["gift"]["currency"] == "JPY"
    kept = (await c("query($g: ID!) { node(id: $g) { ... on Gift { currency } } }",
                    {"g": first["id"]})).data["node"]
    assert kept["currency"] == "USD"
    renamed = (await c('mutation($g: ID!) { updateGift(id: $g, input: {name: "A2"})'
                       " { currency } }", {"g": first["id"]})).data["updateGift"]
    assert renamed["currency"] == "USD"  # omitted: unchanged
    reset = (await c("mutation($g: ID!) { updateGift(id: $g, input: {currency: null})"
                     " { currency } }", {"g": first["id"]})).data["updateGift"]
    assert reset["currency"] == "JPY"


@pytest.mark.parametrize("settings", [True, False], ids=["compiled", "executor"],
                         indirect=True)
async def test_the_dashboard_statement_count_does_not_grow(
        app: Any, alice: Account) -> None:
    """The money of the dashboard (and of its people) comes from the statements that
    computed `spent` before: selecting spentByCurrency adds none (nor a second computation
    of the same part), however many currencies."""
    bare = "{ dashboard { budget spent people { person { name } spent } } }"
    await alice.client('mutation { createPerson(input: {name: "Zed"}) { id } }')
    counts = []
    for round_ in range(2):
        for query in (bare, DASHBOARD):
            with count_statements(app) as statements:
                r = await alice.client(query)
            assert not r.errors
            counts.append(len(statements))
        if round_ == 0:
            await _mixed(Client(alice.client))
    assert len(set(counts)) == 1, counts


class _ServerClient:
    def __init__(self, srv: Server, token: str) -> None:
        self.srv, self.token = srv, token

    async def __call__(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        return await self.srv.gql(query, variables, self.token)


async def test_the_dashboard_subscription_counts_the_family_currency(
        live_server: Server) -> None:  # noqa: F811 - the fixture, imported
    """The live dashboard's snapshot has the same money as the query, and a change of
    the family's currency sends a new one."""
    srv = live_server
    token, _ = await srv.signup("money-dash@example.com")
    c = _ServerClient(srv, token)
    await _mixed(c)
    query = f"subscription {{ dashboard {{ {MONEY} people {{ {MONEY} }} }} }}"
    client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    try:
        await client.subscribe(query)
        first = (await client.receive())["payload"]["data"]["dashboard"]
        assert _money(first) == MIXED
        assert _money(first["people"][0]) == MIXED
        await c(UPDATE_FAMILY, {"i": {"currency": "EUR"}})
        deadline = time.monotonic() + 10
        while True:  # snapshots are coalesced: the change's, or one after it
            nxt = (await client.receive(10))["payload"]["data"]["dashboard"]
            if nxt["spent"] != first["spent"] or time.monotonic() > deadline:
                break
        eur = {"spent": "9.00", "spentByCurrency": MIXED["spentByCurrency"]}
        assert _money(nxt) == eur
        assert _money(nxt["people"][0]) == eur
    finally:
        await client.ws.close()


async def test_migration_0004_gives_existing_families_usd(empty_database: str) -> None:
    """Families that existed before 0004 get USD (what every gift defaulted to); the
    column then refuses what is not a code, and the migration goes down and up again."""
    url = empty_database
    await upgrade(url, "0003")
    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute("INSERT INTO families (id, name, created_at, updated_at) "
                           "VALUES (gen_random_uuid(), 'Old', now(), now())")
        await upgrade(url)
        assert await conn.fetchval("SELECT currency FROM families") == "USD"
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE families SET currency = 'usd'")
    finally:
        await conn.close()
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as sa_conn:
            def _down(sync_conn: object) -> None:
                cfg = alembic_config(url)
                cfg.attributes["connection"] = sync_conn
                command.downgrade(cfg, "0003")

            await sa_conn.run_sync(_down)
    finally:
        await engine.dispose()
    await upgrade(url)
