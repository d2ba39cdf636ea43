"""Security checks generated from the schema, not hand-listed.

* Isolation: every Query, Mutation and Subscription field taking an `ID` (as an argument or
  inside an input object) is called by Mallory with an ID of Alice's family of the right kind,
  every other argument being minimal and valid (Mallory's own IDs where an ID is needed). The
  answer must be NOT_FOUND, exactly as for an ID that does not exist, nothing of Alice's may
  appear in it, and nothing may change. The same operation with Mallory's own ID must succeed:
  that proves the generated operation valid, so NOT_FOUND is due to the foreign ID alone.
  A coverage test fails when a new ID-taking field cannot be mapped to an entity.
* Tokens: a table of forged, expired, revoked and misused tokens against a query and a mutation.
* CSRF: a mutation via GET or a "simple" content type is refused and not executed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import graphql
import httpx
import jwt
import pytest
import websockets
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    get_named_type,
    is_leaf_type,
)

from giftgraph.config import Settings
from giftgraph.ids import decode_id, encode_id
from giftgraph.schema.schema import build_schema
from tests.conftest import GQL, Account, GQLResult

SCHEMA: GraphQLSchema = graphql.build_schema(build_schema().as_str())
ROOTS = ("Query", "Mutation", "Subscription")
NODE_TYPES: tuple[str, ...] = tuple(sorted(
    t.name for t in SCHEMA.get_implementations(SCHEMA.get_type("Node")).objects  # type: ignore[arg-type]
))

# --- which entity an ID names -------------------------------------------------------------

# An ID argument or input field named like this names this entity.
ARG_ENTITY: dict[str, str] = {
    "listId": "GiftList",
    "personId": "Person",
    "occasionId": "Occasion",
    "giftId": "Gift",
    "userId": "User",
}
# `targetId` names the entity its sibling `target: CommentTarget` says.
TARGET_ENTITY: dict[str, str] = {
    "LIST": "GiftList",
    "LIST_ITEM": "ListItem",
    "GIFT": "Gift",
    "PERSON": "Person",
    "OCCASION": "Occasion",
}
# Nouns in field names that are not the entity's type name.
NOUN_ALIASES: dict[str, str] = {"List": "GiftList"}
VERBS = ("update", "delete", "remove", "set", "assign", "add", "create")


@dataclass(frozen=True)
class Site:
    """An ID position: `root.field(path[0]: ... path[-1])`."""

    root: str
    field: str
    path: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.root}.{self.field}({'.'.join(self.path)})"


def _walk_ids(type_: GraphQLInputType, path: tuple[str, ...],
              seen: frozenset[str]) -> Iterator[tuple[str, ...]]:
    named = get_named_type(type_)
    if isinstance(named, GraphQLScalarType) and named.name == "ID":
        yield path
    elif isinstance(named, GraphQLInputObjectType) and named.name not in seen:
        for name, f in named.fields.items():
            yield from _walk_ids(f.type, (*path, name), seen | {named.name})


def id_sites(schema: GraphQLSchema) -> list[Site]:
    """Every position of an ID in the arguments of every root field."""
    sites: list[Site] = []
    for root in ROOTS:
        type_ = schema.get_type(root)
        assert isinstance(type_, GraphQLObjectType), root
        for name, f in type_.fields.items():
            for arg_name, arg in f.args.items():
                sites.extend(Site(root, name, p) for p in _walk_ids(arg.type, (arg_name,),
                                                                    frozenset()))
    return sites


def _root_field(site_root: str, name: str) -> GraphQLField:
    type_ = SCHEMA.get_type(site_root)
    assert isinstance(type_, GraphQLObjectType)
    return type_.fields[name]


def entity_of_field(root: str, name: str) -> str | None:
    """The entity a field's own `id` argument names: its return type, else its name's noun."""
    returned = get_named_type(_root_field(root, name).type)
    if returned.name in NODE_TYPES:
        return returned.name
    noun = name
    for verb in VERBS:
        if noun.startswith(verb) and noun[len(verb):][:1].isupper():
            noun = noun[len(verb):]
            break
    noun = noun.removesuffix("Status")
    noun = NOUN_ALIASES.get(noun, noun)
    return noun if noun in NODE_TYPES else None


def entities_at(site: Site) -> list[tuple[str, str | None]]:
    """(entity, comment target or None) for each kind of ID this position takes."""
    leaf = site.path[-1]
    if leaf == "id" and len(site.path) == 1:
        if site.field == "node":
            return [(t, None) for t in NODE_TYPES]
        entity = entity_of_field(site.root, site.field)
        return [(entity, None)] if entity else []
    if leaf == "targetId":
        enum = SCHEMA.get_type("CommentTarget")
        assert isinstance(enum, GraphQLEnumType)
        return [(TARGET_ENTITY[v], v) for v in enum.values if v in TARGET_ENTITY]
    entity = ARG_ENTITY.get(leaf)
    return [(entity, None)] if entity else []


# --- minimal valid operations ----------------------------------------------------------------

STRING_VALUES: dict[str, str] = {
    "email": "probe-{uid}@example.com",
    "password": "a long enough password",
    "url": "https://shop.example/p",
    "imageUrl": "https://shop.example/p.png",
    "currency": "EUR",
    "body": "probe comment",
    "refreshToken": "not-a-token",
    "familyName": "Probe family",
}
ENUM_VALUES: dict[str, str] = {"ItemStatus": "SELECTED", "Role": "MEMBER"}
SCALAR_VALUES: dict[str, Any] = {"Int": 1, "Float": 1.0, "Boolean": True, "Date": "2099-06-01",
                                 "Decimal": "1.00", "DateTime": "2099-06-01T00:00:00+00:00"}
# For an input object with no required and no ID field, set one of these (the first present).
PATCH_FIELDS = ("name", "displayName", "notes", "description", "body")


@dataclass(frozen=True)
class Case:
    """Mallory calls `site` with an ID of `entity` (comment `target`, if any)."""

    site: Site
    entity: str
    target: str | None = None

    @property
    def name(self) -> str:
        suffix = f"-{self.target}" if self.target else ""
        return f"{self.site.field}.{'.'.join(self.site.path)}-{self.entity}{suffix}"


@dataclass
class Family:
    """One family's entities (one ID per Node type) and the texts that identify them."""

    account: Account
    ids: dict[str, str]
    secrets: list[str] = field(default_factory=list)


def _type_str(type_: Any) -> str:
    return str(type_)


def _value(type_: GraphQLInputType, path: tuple[str, ...], case: Case, probe: str,
           own: Family, target: str | None) -> Any:
    """A minimal valid value at `path`; the probed ID at the site's path, own IDs elsewhere."""
    nullable = not isinstance(type_, GraphQLNonNull)
    inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    if isinstance(inner, GraphQLList):
        return [_value(inner.of_type, path, case, probe, own, target)]
    name = path[-1]
    if isinstance(inner, GraphQLScalarType) and inner.name == "ID":
        if path == case.site.path:
            return probe
        site = Site(case.site.root, case.site.field, path)
        kinds = [k for k in entities_at(site) if k[1] is None or k[1] == target]
        assert kinds, f"no entity known for {site}"
        return own.ids[kinds[0][0]]
    if isinstance(inner, GraphQLScalarType):
        if inner.name == "String":
            return STRING_VALUES.get(name, "probe").format(uid=uuid.uuid4().hex[:8])
        return SCALAR_VALUES[inner.name]
    if isinstance(inner, GraphQLEnumType):
        if inner.name == "CommentTarget" and target is not None:
            return target
        return ENUM_VALUES.get(inner.name, next(iter(inner.values)))
    assert isinstance(inner, GraphQLInputObjectType), inner
    obj: dict[str, Any] = {}
    for fname, f in inner.fields.items():
        required = graphql.is_required_input_field(f)
        has_id = any(True for _ in _walk_ids(f.type, (), frozenset())) and is_leaf_type(
            get_named_type(f.type))
        if required or has_id:
            obj[fname] = _value(f.type, (*path, fname), case, probe, own, target)
    if not obj:
        for fname in PATCH_FIELDS:
            if fname in inner.fields:
                obj[fname] = _value(inner.fields[fname].type, (*path, fname), case, probe, own,
                                    target)
                break
    assert obj or nullable, f"cannot build {inner.name}"
    return obj


def _selection(type_: Any, depth: int, concrete: str | None = None) -> str:
    """Every scalar field, and objects' scalars `depth` levels down (no required args); on
    an interface, the scalars of the `concrete` type too."""
    named = get_named_type(type_)
    if is_leaf_type(named):
        return ""
    assert isinstance(named, GraphQLObjectType | GraphQLInterfaceType), named
    parts = ["__typename"]
    for fname, f in named.fields.items():
        if any(isinstance(a.type, GraphQLNonNull) for a in f.args.values()):
            continue
        sub = get_named_type(f.type)
        if is_leaf_type(sub):
            parts.append(fname)
        elif depth > 0:
            parts.append(f"{fname} {{ {_selection(f.type, depth - 1)} }}")
    if isinstance(named, GraphQLInterfaceType) and concrete is not None:
        impl = SCHEMA.get_type(concrete)
        assert isinstance(impl, GraphQLObjectType), concrete
        scalars = " ".join(n for n, f in impl.fields.items()
                           if is_leaf_type(get_named_type(f.type)) and not f.args)
        parts.append(f"... on {impl.name} {{ {scalars} }}")
    return " ".join(parts)


def operation(case: Case, probe: str, own: Family) -> tuple[str, dict[str, Any]]:
    """The document and variables of `case`, with `probe` at the site's ID position."""
    f = _root_field(case.site.root, case.site.field)
    declared: list[str] = []
    passed: list[str] = []
    variables: dict[str, Any] = {}
    target = case.target
    for arg_name, arg in f.args.items():
        is_site = arg_name == case.site.path[0]
        needed = (isinstance(arg.type, GraphQLNonNull) and arg.default_value is graphql.Undefined)
        has_id = any(True for _ in _walk_ids(arg.type, (), frozenset()))
        if not (is_site or needed or has_id):
            continue
        declared.append(f"${arg_name}: {_type_str(arg.type)}")
        passed.append(f"{arg_name}: ${arg_name}")
        variables[arg_name] = _value(arg.type, (arg_name,), case, probe, own, target)
    depth = 2 if get_named_type(f.type).name.endswith("Connection") else 1
    selection = _selection(f.type, depth, case.entity)
    kind = case.site.root.lower()
    head = f"{kind}({', '.join(declared)})" if declared else kind
    call = f"{case.site.field}({', '.join(passed)})" if passed else case.site.field
    body = f"{call} {{ {selection} }}" if selection else call
    return f"{head} {{ {body} }}", variables


def random_id(entity: str) -> str:
    if entity == "Event":
        return encode_id("Event", 10**12 + uuid.uuid4().int % 10**12)
    return encode_id(entity, uuid.uuid4())


SITES: list[Site] = id_sites(SCHEMA)
CASES: list[Case] = [Case(site, entity, target) for site in SITES
                     for entity, target in entities_at(site)]
HTTP_CASES = [c for c in CASES if c.site.root != "Subscription"]
WS_CASES = [c for c in CASES if c.site.root == "Subscription"]


def test_cases_cover_every_id_taking_field() -> None:
    """Every ID position of the schema maps to an entity (a new, unmapped field fails here),
    `node` is probed with every Node type, and each case builds a document that validates."""
    assert len(SITES) >= 30, SITES  # the schema as specified has (at least) these
    covered = {c.site for c in CASES}
    assert [str(s) for s in SITES if s not in covered] == []
    node_cases = {c.entity for c in CASES if c.site.field == "node"}
    assert node_cases == set(NODE_TYPES)
    for root in ROOTS:
        type_ = SCHEMA.get_type(root)
        assert isinstance(type_, GraphQLObjectType)
        fields_with_ids = {name for name, f in type_.fields.items()
                           if any(any(True for _ in _walk_ids(a.type, (), frozenset()))
                                  for a in f.args.values())}
        assert fields_with_ids == {s.field for s in SITES if s.root == root}
    fake = Family(Account(None, "", "", "", "", ""),  # type: ignore[arg-type]
                  {t: random_id(t) for t in NODE_TYPES})
    for case in CASES:
        doc, _ = operation(case, random_id(case.entity), fake)
        assert graphql.validate(SCHEMA, graphql.parse(doc)) == [], (case.name, doc)


# --- the two families ----------------------------------------------------------------------

PERSON = "mutation($i: PersonInput!) { createPerson(input: $i) { id } }"
OCCASION = "mutation($i: OccasionInput!) { createOccasion(input: $i) { id } }"
LIST = "mutation($i: GiftListInput!) { createList(input: $i) { id } }"
GIFT = "mutation($i: GiftInput!) { createGift(input: $i) { id } }"
ITEM = "mutation($l: ID!, $i: ListItemInput!) { addListItem(listId: $l, input: $i) { id } }"
REGISTER = "mutation($i: RegisterUserInput!) { registerUser(input: $i) { id } }"
COMMENT = "mutation($i: CommentInput!) { addComment(input: $i) { id } }"


async def make_family(account: Account, label: str) -> Family:
    """One entity of every kind, named with `label` (so its texts can be searched for)."""
    c = account.client
    member_email = f"{label.lower()}-member-{uuid.uuid4().hex[:6]}@example.com"
    fam = Family(account, {}, [f"{label} Mom", f"{label} secret notes", f"{label} Xmas",
                               f"{label} plan", f"{label} Book", f"{label} item note",
                               f"{label} comment", member_email, account.email,
                               f"{label}'s family", f"{label} Member"])
    ids = fam.ids
    ids["Person"] = (await c(PERSON, {"i": {"name": f"{label} Mom",
                                            "notes": f"{label} secret notes"}})
                     ).data["createPerson"]["id"]
    ids["Occasion"] = (await c(OCCASION, {"i": {"name": f"{label} Xmas", "kind": "HOLIDAY",
                                                "date": "2099-12-25", "budget": "50.00"}})
                       ).data["createOccasion"]["id"]
    ids["GiftList"] = (await c(LIST, {"i": {"name": f"{label} plan", "kind": "GIFT_PLAN",
                                            "personId": ids["Person"],
                                            "occasionId": ids["Occasion"]}})
                       ).data["createList"]["id"]
    ids["Gift"] = (await c(GIFT, {"i": {"name": f"{label} Book", "price": "5.00"}})
                   ).data["createGift"]["id"]
    ids["ListItem"] = (await c(ITEM, {"l": ids["GiftList"], "i": {
        "gift": {"name": f"{label} Book"}, "notes": f"{label} item note"}})
                       ).data["addListItem"]["id"]
    ids["User"] = (await c(REGISTER, {"i": {"email": member_email, "password": "member password",
                                            "displayName": f"{label} Member"}})
                   ).data["registerUser"]["id"]
    ids["Comment"] = (await c(COMMENT, {"i": {"target": "PERSON", "targetId": ids["Person"],
                                              "body": f"{label} comment"}})
                      ).data["addComment"]["id"]
    top = (await c("{ family { id } events(first: 1) { edges { node { id } } } }")).data
    ids["Family"] = top["family"]["id"]
    ids["Event"] = top["events"]["edges"][0]["node"]["id"]
    missing = set(NODE_TYPES) - set(ids)
    assert not missing, f"make_family creates no {missing}: extend it"
    return fam


@dataclass
class World:
    alice: Family
    mallory: Family


@pytest.fixture
async def world(alice: Account, mallory: Account) -> World:
    return World(await make_family(alice, "Alice"), await make_family(mallory, "Mallory"))


async def event_counts(w: World) -> tuple[int, int]:
    q = "{ events(first: 1) { totalCount } }"
    a = (await w.alice.account.client(q)).data["events"]["totalCount"]
    m = (await w.mallory.account.client(q)).data["events"]["totalCount"]
    return a, m


def assert_no_leak(text: str, alice: Family) -> None:
    leaked = [s for s in alice.secrets if s.lower() in text.lower()]
    assert not leaked, (leaked, text)


def without_trace(r: GQLResult) -> tuple[int, Any, list[dict[str, Any]]]:
    errors = [{**e, "extensions": {k: v for k, v in e["extensions"].items() if k != "traceId"}}
              for e in r.errors]
    return r.status, r.body.get("data"), errors


def assert_not_found(r: GQLResult, what: object) -> None:
    assert r.codes == ["NOT_FOUND"], (what, r.body)
    data = r.body.get("data")
    assert data is None or all(v is None for v in data.values()), (what, r.body)


@pytest.mark.parametrize("case", HTTP_CASES, ids=[c.name for c in HTTP_CASES])
async def test_foreign_id_is_not_found(world: World, case: Case) -> None:
    mallory = world.mallory.account.client
    before = await event_counts(world)

    doc, variables = operation(case, world.alice.ids[case.entity], world.mallory)
    foreign = await mallory(doc, variables)
    assert_not_found(foreign, (case.name, doc, variables))
    assert_no_leak(json.dumps(foreign.body), world.alice)
    assert await event_counts(world) == before, "something was written"

    # Exactly as for an ID that exists nowhere (same variables but the probed ID).
    missing_doc, missing_vars = operation(case, random_id(case.entity), world.mallory)
    for key, value in variables.items():  # keep generated strings (emails) identical
        if key != case.site.path[0]:
            missing_vars[key] = value
    missing = await mallory(missing_doc, missing_vars)
    assert without_trace(missing) == without_trace(foreign), case.name
    assert await event_counts(world) == before, "something was written"

    # Control: with Mallory's own ID the very same operation succeeds.
    own_doc, own_vars = operation(case, world.mallory.ids[case.entity], world.mallory)
    own = await mallory(own_doc, own_vars)
    assert own.errors == [], (case.name, own_doc, own_vars, own.body)
    assert own.body["data"][case.site.field] is not None


# --- topics named by strings ----------------------------------------------------------------

def topics(ids: dict[str, str]) -> list[str]:
    """A topic string for every ID-named topic (list:, person:, occasion:, comments:)."""
    out = [f"list:{ids['GiftList']}", f"person:{ids['Person']}",
           f"occasion:{ids['Occasion']}"]
    out += [f"comments:{t}:{ids[e]}" for t, e in TARGET_ENTITY.items()]
    return out


async def test_foreign_topic_in_events_query_shows_nothing(world: World) -> None:
    q = "query($t: String) { events(topic: $t, first: 100) { totalCount edges { node { id } } } }"
    for topic in topics(world.alice.ids):
        r = await world.mallory.account.client(q, {"t": topic})
        assert_no_leak(json.dumps(r.body), world.alice)
        if r.errors:
            assert r.codes == ["NOT_FOUND"], (topic, r.body)
        else:
            assert r.body["data"]["events"] == {"totalCount": 0, "edges": []}, topic
    own = await world.mallory.account.client(q, {"t": f"list:{world.mallory.ids['GiftList']}"})
    assert own.body["data"]["events"]["totalCount"] >= 1  # control: the topic form is right


# --- subscriptions over graphql-transport-ws ------------------------------------------------

PROTOCOL = "graphql-transport-ws"


async def server_token(base: str, account: Account) -> str:
    """An access token issued by the server process (it has its own signing key)."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        r = await c.post("/graphql", json={
            "query": "mutation($e: String!, $p: String!) { login(email: $e, password: $p)"
                     " { accessToken } }", "variables": {"e": account.email,
                                                          "p": account.password}})
    return r.json()["data"]["login"]["accessToken"]  # type: ignore[no-any-return]


class Socket:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.n = 0

    @classmethod
    async def open(cls, base: str, token: str) -> Socket:
        ws = await websockets.connect(base.replace("http", "ws") + "/graphql",
                                      subprotocols=[PROTOCOL])  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"authorization": f"Bearer {token}"}}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert ack["type"] == "connection_ack", ack
        return cls(ws)

    async def subscribe(self, query: str, variables: dict[str, Any]) -> str:
        self.n += 1
        op = f"op{self.n}"
        await self.ws.send(json.dumps({"id": op, "type": "subscribe",
                                       "payload": {"query": query, "variables": variables}}))
        return op

    async def receive(self, within: float = 5) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), within))  # type: ignore[no-any-return]


async def expect_not_found_stream(sock: Socket, op: str, what: object,
                                  alice: Family) -> None:
    first = await sock.receive()
    assert_no_leak(json.dumps(first), alice)
    assert first["id"] == op, (what, first)
    assert first["type"] == "next", (what, first)
    assert first["payload"].get("data") is None, (what, first)
    codes = [e["extensions"]["code"] for e in first["payload"]["errors"]]
    assert codes == ["NOT_FOUND"], (what, first)
    assert await sock.receive() == {"id": op, "type": "complete"}, what


async def expect_active(sock: Socket, op: str, what: object) -> None:
    """Control: the subscription with Mallory's own ID is accepted and quietly listening."""
    try:
        msg = await sock.receive(within=0.4)
    except TimeoutError:
        pass
    else:
        pytest.fail(f"{what}: own subscription answered {msg}")
    await sock.ws.send(json.dumps({"id": op, "type": "complete"}))


async def test_foreign_id_in_subscriptions_is_not_found(world: World, server: str) -> None:
    assert WS_CASES, "the schema's subscriptions take IDs"
    token = await server_token(server, world.mallory.account)
    sock = await Socket.open(server, token)
    try:
        for case in WS_CASES:
            doc, variables = operation(case, world.alice.ids[case.entity], world.mallory)
            op = await sock.subscribe(doc, variables)
            await expect_not_found_stream(sock, op, case.name, world.alice)
            doc, variables = operation(case, random_id(case.entity), world.mallory)
            op = await sock.subscribe(doc, variables)
            await expect_not_found_stream(sock, op, (case.name, "missing"), world.alice)
            doc, variables = operation(case, world.mallory.ids[case.entity], world.mallory)
            await expect_active(sock, await sock.subscribe(doc, variables), case.name)
        presence = "subscription($t: String!) { presence(topic: $t) { topic viewers { id } } }"
        for topic in topics(world.alice.ids):
            op = await sock.subscribe(presence, {"t": topic})
            await expect_not_found_stream(sock, op, ("presence", topic), world.alice)
        own = await sock.subscribe(presence, {"t": f"list:{world.mallory.ids['GiftList']}"})
        first = await sock.receive()  # control: her own topic answers with its viewers
        assert first["id"] == own, first
        assert first["type"] == "next", first
        assert "errors" not in first["payload"], first
    finally:
        await sock.ws.close()


# --- tokens ---------------------------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _claims(user_id: str, family_id: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": str(decode_id(user_id, "User")), "fam": str(decode_id(family_id, "Family")),
            "role": "ADMIN", "typ": "access", "iat": now, "exp": now + 600, **extra}


@dataclass
class TokenKit:
    """What the bad-token factories need."""

    settings: Settings
    alice: Family
    mallory: Family
    gql: GQL

    def sign(self, claims: dict[str, Any], key: str | None = None,
             algorithm: str = "HS256") -> str:
        return jwt.encode(claims, key or self.settings.jwt_secret, algorithm=algorithm)

    def alice_claims(self, **extra: Any) -> dict[str, Any]:
        return _claims(self.alice.account.user_id, self.alice.ids["Family"], **extra)


async def _alg_none(k: TokenKit) -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(k.alice_claims())}."


async def _wrong_key(k: TokenKit) -> str:
    return k.sign(k.alice_claims(), key="another-secret-that-is-long-enough-9876543210")


async def _other_algorithm(k: TokenKit) -> str:
    with warnings.catch_warnings():  # the key is short for HS512; it is refused anyway
        warnings.simplefilter("ignore")
        return k.sign(k.alice_claims(), algorithm="HS512")


async def _expired(k: TokenKit) -> str:
    past = int(time.time()) - 3600
    return k.sign(k.alice_claims(iat=past, exp=past + 60))


async def _refresh_as_access(k: TokenKit) -> str:
    return k.alice.account.refresh


async def _forged_refresh_typ(k: TokenKit) -> str:
    return k.sign(k.alice_claims(typ="refresh"))


async def _missing_typ(k: TokenKit) -> str:
    claims = k.alice_claims()
    del claims["typ"]
    return k.sign(claims)


async def _revoked_refresh(k: TokenKit) -> str:
    """A second session's refresh token, logged out (the first session, whose access token
    counts the events, stays signed in: a logout ends its own chain's access tokens)."""
    account = k.alice.account
    login = await k.gql("mutation($e: String!, $p: String!) { login(email: $e, password: $p)"
                        " { refreshToken } }", {"e": account.email, "p": account.password})
    token = login.data["login"]["refreshToken"]
    r = await account.client("mutation($t: String!) { logout(refreshToken: $t) }",
                             {"t": token})
    assert r.data == {"logout": True}
    return token


async def _tampered_claims(k: TokenKit) -> str:
    """Alice's real token with its payload rewritten to Mallory's user (signature kept)."""
    header, _payload, signature = k.alice.account.token.split(".")
    claims = _claims(k.mallory.account.user_id, k.mallory.ids["Family"])
    return f"{header}.{_b64(claims)}.{signature}"


async def _tampered_expiry(k: TokenKit) -> str:
    header, payload, signature = k.alice.account.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] = int(claims["exp"]) + 10**6
    return f"{header}.{_b64(claims)}.{signature}"


async def _family_mismatch(k: TokenKit) -> str:
    """Correctly signed, but Alice's user id with Mallory's family."""
    return k.sign(_claims(k.alice.account.user_id, k.mallory.ids["Family"]))


async def _unknown_user(k: TokenKit) -> str:
    return k.sign(_claims(encode_id("User", uuid.uuid4()), k.alice.ids["Family"]))


async def _member(k: TokenKit, then: str) -> str:
    email = f"victim-{uuid.uuid4().hex[:6]}@example.com"
    admin = k.alice.account.client
    uid = (await admin(REGISTER, {"i": {"email": email, "password": "member password",
                                        "displayName": "V"}})).data["registerUser"]["id"]
    token: str = (await k.gql("mutation($e: String!, $p: String!) { login(email: $e,"
                              " password: $p) { accessToken } }",
                              {"e": email, "p": "member password"})).data["login"]["accessToken"]
    assert (await k.gql.as_(token)("{ me { id } }")).data == {"me": {"id": uid}}
    if then == "deactivate":
        r = await admin("mutation($id: ID!) { updateUser(id: $id, input: {isActive: false})"
                        " { isActive } }", {"id": uid})
        assert r.data == {"updateUser": {"isActive": False}}
    else:
        assert (await admin("mutation($id: ID!) { deleteUser(id: $id) }", {"id": uid})).data
    return token


async def _deactivated_user(k: TokenKit) -> str:
    return await _member(k, "deactivate")


async def _deleted_user(k: TokenKit) -> str:
    return await _member(k, "delete")


async def _garbage(_k: TokenKit) -> str:
    return "not.a.jwt"


BAD_TOKENS: dict[str, Callable[[TokenKit], Awaitable[str]]] = {
    "alg-none": _alg_none,
    "wrong-key": _wrong_key,
    "other-algorithm-HS512": _other_algorithm,
    "expired": _expired,
    "refresh-as-access": _refresh_as_access,
    "forged-typ-refresh": _forged_refresh_typ,
    "missing-typ": _missing_typ,
    "revoked-refresh": _revoked_refresh,
    "tampered-claims": _tampered_claims,
    "tampered-expiry": _tampered_expiry,
    "family-mismatch": _family_mismatch,
    "unknown-user": _unknown_user,
    "deactivated-user": _deactivated_user,
    "deleted-user": _deleted_user,
    "garbage": _garbage,
}
TOKEN_OPERATIONS: dict[str, str] = {
    "me": "{ me { id email } }",
    "createPerson": 'mutation { createPerson(input: {name: "Intruder"}) { id name } }',
}


async def _account_only(account: Account, label: str) -> Family:
    family_id = (await account.client("{ family { id } }")).data["family"]["id"]
    return Family(account, {"Family": family_id}, [account.email, f"{label}'s family"])


@pytest.fixture
async def accounts(alice: Account, mallory: Account) -> World:
    """The two families without their entities (the token tests need none)."""
    return World(await _account_only(alice, "Alice"), await _account_only(mallory, "Mallory"))


@pytest.mark.parametrize("operation_name", list(TOKEN_OPERATIONS))
@pytest.mark.parametrize("token_name", list(BAD_TOKENS))
async def test_bad_token_is_unauthenticated(accounts: World, settings: Settings, gql: GQL,
                                            token_name: str, operation_name: str) -> None:
    world = accounts
    kit = TokenKit(settings, world.alice, world.mallory, gql)
    token = await BAD_TOKENS[token_name](kit)
    before = await event_counts(world)
    r = await gql.as_(token)(TOKEN_OPERATIONS[operation_name])
    assert r.codes == ["UNAUTHENTICATED"], (token_name, r.body)
    assert r.body.get("data") is None, r.body
    assert_no_leak(json.dumps(r.body), world.alice)
    assert_no_leak(json.dumps(r.body), world.mallory)
    assert "Intruder" not in json.dumps(r.body)
    assert await event_counts(world) == before, "the mutation ran"


@pytest.mark.parametrize("header", ["Basic YWxpY2U6cHc=", "Bearer", "Bearer ", "Token abc",
                                    "bearer  "])
async def test_malformed_authorization_header_is_unauthenticated(alice: Account,
                                                                 http: httpx.AsyncClient,
                                                                 header: str) -> None:
    r = await http.post("/graphql", json={"query": "{ me { id } }"},
                        headers={"Authorization": header})
    assert r.status_code == 200, r.text
    assert [e["extensions"]["code"] for e in r.json()["errors"]] == ["UNAUTHENTICATED"]


async def test_valid_token_control(accounts: World, gql: GQL) -> None:
    """Control for the table above: the genuine token works for both operations."""
    alice = accounts.alice.account
    assert (await gql.as_(alice.token)(TOKEN_OPERATIONS["me"])).data == {
        "me": {"id": alice.user_id, "email": alice.email}}
    assert (await gql.as_(alice.token)(TOKEN_OPERATIONS["createPerson"])
            ).data["createPerson"]["name"] == "Intruder"


REFRESH = "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken } }"


async def test_revoked_and_rotated_refresh_tokens_are_refused(alice: Account, gql: GQL) -> None:
    rotated = (await gql(REFRESH, {"t": alice.refresh})).data["refreshToken"]
    again = await gql(REFRESH, {"t": alice.refresh})  # reuse of a rotated token
    assert again.codes == ["UNAUTHENTICATED"], again.body
    assert (await gql("mutation($t: String!) { logout(refreshToken: $t) }",
                      {"t": rotated["refreshToken"]})).data in ({"logout": True},
                                                                {"logout": False})
    after = await gql(REFRESH, {"t": rotated["refreshToken"]})
    assert after.codes == ["UNAUTHENTICATED"], after.body
    access = await gql(REFRESH, {"t": alice.token})  # an access token is no refresh token
    assert access.codes == ["UNAUTHENTICATED"], access.body


# --- CSRF -----------------------------------------------------------------------------------

CSRF_MUTATION = 'mutation { createPerson(input: {name: "CSRF victim"}) { id } }'


async def persons_named(account: Account, name: str) -> int:
    r = await account.client("query($s: String) { persons(search: $s) { totalCount } }",
                             {"s": name})
    return int(r.data["persons"]["totalCount"])


@pytest.mark.parametrize("accept", ["application/json", "application/graphql-response+json",
                                    "*/*",
                                    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"])
async def test_mutation_via_get_is_405_and_not_executed(alice: Account, http: httpx.AsyncClient,
                                                        accept: str) -> None:
    r = await http.get("/graphql", params={"query": CSRF_MUTATION},
                       headers={"Authorization": f"Bearer {alice.token}", "Accept": accept})
    assert r.status_code == 405, (r.status_code, r.text[:300])
    assert r.headers.get("allow") == "POST"
    assert await persons_named(alice, "CSRF victim") == 0


async def test_query_via_get_is_allowed(alice: Account, http: httpx.AsyncClient) -> None:
    """Control for the GET test: queries do work over GET."""
    r = await http.get("/graphql", params={"query": "{ me { id } }"},
                       headers={"Authorization": f"Bearer {alice.token}",
                                "Accept": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json() == {"data": {"me": {"id": alice.user_id}}}


def _multipart(boundary: str) -> str:
    ops = json.dumps({"query": CSRF_MUTATION, "variables": {}})
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n"
            f"{ops}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n"
            f"{{}}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\n"
            f"{CSRF_MUTATION}\r\n--{boundary}--\r\n")


SIMPLE_REQUESTS: dict[str, tuple[str, str]] = {
    "text/plain": ("text/plain", json.dumps({"query": CSRF_MUTATION})),
    "text/plain;charset=UTF-8": ("text/plain;charset=UTF-8", json.dumps({"query": CSRF_MUTATION})),
    "form-urlencoded": ("application/x-www-form-urlencoded",
                        str(httpx.QueryParams({"query": CSRF_MUTATION}))),
    "multipart": ("multipart/form-data; boundary=xyzzy", _multipart("xyzzy")),
    # Types that merely contain "application/json": another media type, never JSON.
    "jsonx": ("application/jsonx", json.dumps({"query": CSRF_MUTATION})),
    "json-patch": ("application/json-patch+json", json.dumps({"query": CSRF_MUTATION})),
    "text-with-json-param": ("text/plain; x=application/json",
                             json.dumps({"query": CSRF_MUTATION})),
    "json-list": ("application/json, text/plain", json.dumps({"query": CSRF_MUTATION})),
}


@pytest.mark.parametrize("kind", list(SIMPLE_REQUESTS))
async def test_mutation_with_simple_content_type_is_415_and_not_executed(
    alice: Account, http: httpx.AsyncClient, kind: str
) -> None:
    content_type, content = SIMPLE_REQUESTS[kind]
    r = await http.post("/graphql", content=content,
                        headers={"Authorization": f"Bearer {alice.token}",
                                 "Content-Type": content_type})
    assert r.status_code == 415, (r.status_code, r.text[:300])
    assert await persons_named(alice, "CSRF victim") == 0


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          " application/json ;charset=UTF-8"])
async def test_mutation_with_json_is_executed(alice: Account, http: httpx.AsyncClient,
                                              content_type: str) -> None:
    """Control for the CSRF tests: the same mutation as application/json runs."""
    r = await http.post("/graphql", content=json.dumps({"query": CSRF_MUTATION}),
                        headers={"Authorization": f"Bearer {alice.token}",
                                 "Content-Type": content_type})
    assert r.status_code == 200, r.text
    assert await persons_named(alice, "CSRF victim") == 1
