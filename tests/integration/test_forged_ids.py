"""Forged global IDs and cursors, generated: only NOT_FOUND or BAD_USER_INPUT, never a crash.

IDs and cursors are base64url text the server wrote; a client can send anything instead.
Hypothesis builds payloads (wrong and unknown type names, huge and negative ints, non-ASCII
digits, NUL, every spelling of a UUID, JSON of every type, lists, out-of-range datetimes)
and wraps them in base64 every way Python's decoder would take (unpadded, padded, the
standard alphabet, stray low bits) or not at all. They are put at every ID position of every
Query, Mutation and Subscription field (the positions test_security_generated finds in the
schema, with its operation builder) and at `after`/`before` of every connection, root or
nested. An ID answers NOT_FOUND (the same as a missing one; malformed IDs included) and a
cursor BAD_USER_INPUT, and nothing is written.
"""

from __future__ import annotations

import asyncio
import base64
import json
import string
import uuid
from typing import Any

import graphql
import pytest
from graphql import GraphQLObjectType
from hypothesis import strategies as st

from giftgraph.ids import encode_id
from tests.conftest import Account
from tests.integration.test_fuzz import JSON_VALUES, fuzz
from tests.integration.test_security_generated import (
    HTTP_CASES,
    NODE_TYPES,
    SCHEMA,
    WS_CASES,
    Case,
    Socket,
    World,
    event_counts,
    make_family,
    operation,
    server_token,
)

# --- payloads ------------------------------------------------------------------------------

NON_ASCII_DIGITS = "٠١٢٣٤٥٦٧٨٩۰۹०९০৯๐๙０９²³¹𝟎𝟗"
BIG_INTS = st.one_of(st.integers(min_value=2**63 - 3, max_value=2**64 + 3),
                     st.integers(min_value=10**19, max_value=10**40),
                     st.integers(max_value=0, min_value=-(2**70)))


@st.composite
def uuid_spellings(draw: st.DrawFn) -> str:
    """The same UUID as uuid.UUID() would also read it, or almost a UUID."""
    u = draw(st.uuids())
    return draw(st.sampled_from([
        str(u).upper(), u.hex, "{" + str(u) + "}", "urn:uuid:" + str(u), str(u) + "\x00",
        " " + str(u), str(u)[:-1], str(u).replace("-", "_"), str(u.int),
        "".join(NON_ASCII_DIGITS[int(c)] if c.isdigit() else c for c in str(u)),
    ]))


KEYS = st.one_of(
    BIG_INTS.map(str),
    st.integers(min_value=0, max_value=10**6).map(lambda n: f"0{n}"),  # leading zero
    st.integers(min_value=1, max_value=10**6).map(lambda n: f"{n:_}" if n > 999 else f"+{n}"),
    st.text(alphabet=NON_ASCII_DIGITS, min_size=1, max_size=20),
    st.text(alphabet=string.digits + "\x00 _+-", min_size=1, max_size=22),
    uuid_spellings(),
    st.uuids().map(str),  # well-formed: names nothing (or the wrong type)
    st.text(max_size=40),
)
TYPE_NAMES = st.one_of(st.sampled_from([*NODE_TYPES, "Bogus", "", "event", "EVENT", "Node",
                                        "Event\x00", "Pérson"]), st.text(max_size=12))
ID_TEXTS = st.builds(lambda t, sep, k: f"{t}{sep}{k}", TYPE_NAMES,
                     st.sampled_from([":", ":", ":", "::", "", " : "]), KEYS)

# Cursor-shaped JSON: a connection's tag, then values of every kind where its keys go.
OUT_OF_RANGE_TIMES = [
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0000-01-01T00:00:00+00:00",
    "10000-01-01T00:00:00+00:00", "2024-13-01T00:00:00+00:00", "2024-02-30T00:00:00+00:00",
    "2024-01-01T24:00:00+00:00", "2024-01-01 00:00:00", "2024-01-01T00:00:00",
    "\u0662\u0660\u0662\u0664-01-01T00:00:00+00:00", "20240101T000000Z", "2024-W01-1",
    "0000-01-01", "0001-01-01", "9999-12-31", "2024-02-30", "-2024-01-01",
    "\u0662\u0660\u0662\u0664-\u0660\u0661-\u0660\u0661", "2024-01-01T00:00:00.5+00:00",
]
CURSOR_VALUES = st.one_of(
    st.sampled_from(OUT_OF_RANGE_TIMES), st.datetimes().map(lambda d: d.isoformat()),
    st.uuids().map(lambda u: u.int), st.uuids().map(lambda u: [str(u)]), uuid_spellings(),
    st.uuids().map(str), BIG_INTS, JSON_VALUES,
)
CONNECTION_TAGS = ["users", "persons", "occasions", "lists", "gifts", "items", "history",
                   "comments", "events", "bogus", ""]
CURSOR_JSON = st.builds(lambda tag, values: [tag, *values],
                        st.one_of(st.sampled_from(CONNECTION_TAGS), JSON_VALUES),
                        st.lists(CURSOR_VALUES, max_size=3))

PAYLOADS = st.one_of(
    ID_TEXTS.map(lambda s: s.encode("utf-8", "surrogatepass")),
    CURSOR_JSON.map(lambda v: json.dumps(v).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=60),
)


def _stray_bits(text: str) -> str:
    """Another text base64 decodes to the same bytes: the unused low bits set."""
    if len(text) % 4 in (2, 3):
        alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
        i = alphabet.index(text[-1])
        return text[:-1] + alphabet[i | (0b1111 if len(text) % 4 == 2 else 0b11)]
    return text + "="


WRAPPINGS = {
    "base64url": lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("="),
    "padded": lambda raw: base64.urlsafe_b64encode(raw).decode(),
    "standard": lambda raw: base64.b64encode(raw).decode(),
    "stray-bits": lambda raw: _stray_bits(base64.urlsafe_b64encode(raw).decode().rstrip("=")),
    "spaced": lambda raw: " " + base64.urlsafe_b64encode(raw).decode().rstrip("=") + "\n",
    "raw": lambda raw: raw.decode("utf-8", "replace"),
}
FORGED = st.builds(lambda raw, wrap: WRAPPINGS[wrap](raw), PAYLOADS,
                   st.sampled_from(sorted(WRAPPINGS)))

# The audit's own examples, always tried first.
KNOWN_FORGERIES = [
    encode_id("Event", 2**63), encode_id("Event", 10**30), encode_id("Event", "\u0661\u0662"),
    encode_id("Event", "²"), encode_id("Event", "-1"), encode_id("Event", "0"),
    encode_id("Person", str(uuid.uuid4()).upper()), encode_id("Person", uuid.uuid4().hex),
    encode_id("Person", "\x00"), base64.urlsafe_b64encode(b"Person:\xff").decode(),
]
KNOWN_CURSORS = [
    base64.urlsafe_b64encode(json.dumps(v).encode()).decode().rstrip("=") for v in (
        ["persons", "P", 5], ["persons", "P", [str(uuid.uuid4())]],
        ["users", "0001-01-01T00:00:00+14:00", str(uuid.uuid4())],
        ["occasions", "0001-01-01", {"a": 1}], ["events", 2**63], ["events", "1"],
        ["items", "9999-12-31T23:59:59-14:00", str(uuid.uuid4())],
    )
]

def _an_event(gid: str) -> bool:
    try:
        raw = base64.urlsafe_b64decode(gid + "=" * (-len(gid) % 4))
    except ValueError:
        return False
    return raw.startswith(b"Event:")


# --- where they go -------------------------------------------------------------------------


def connections() -> list[tuple[str, str]]:
    """(type, field) of every connection: a field taking `after` and `before`."""
    found = []
    for name, type_ in SCHEMA.type_map.items():
        if isinstance(type_, GraphQLObjectType) and not name.startswith("__"):
            found += [(name, f) for f, d in type_.fields.items()
                      if "after" in d.args and "before" in d.args]
    return sorted(found)


CONNECTIONS = connections()


def cursor_operation(type_name: str, field: str, arg: str, cursor: str,
                     ids: dict[str, str]) -> tuple[str, dict[str, Any]]:
    size = "first" if arg == "after" else "last"
    args, declared = f"{size}: 2, {arg}: $c", ["$c: String"]
    variables: dict[str, Any] = {"c": cursor}
    if field == "comments":
        args += ", target: PERSON, targetId: $p"
        declared.append("$p: ID!")
        variables["p"] = ids["Person"]
    call = f"{field}({args}) {{ totalCount edges {{ cursor }} }}"
    if type_name != "Query":
        declared.append("$n: ID!")
        variables["n"] = ids[type_name]
        call = f"node(id: $n) {{ ... on {type_name} {{ {call} }} }}"
    return f"query({', '.join(declared)}) {{ {call} }}", variables


def test_every_connection_is_covered() -> None:
    """A new connection is probed as soon as it exists: each builds a valid document."""
    assert len(CONNECTIONS) >= 9, CONNECTIONS
    ids = {t: encode_id(t, uuid.uuid4()) for t in NODE_TYPES}
    for type_name, field in CONNECTIONS:
        assert type_name == "Query" or type_name in NODE_TYPES, (type_name, field)
        for arg in ("after", "before"):
            doc, _ = cursor_operation(type_name, field, arg, "c", ids)
            assert graphql.validate(SCHEMA, graphql.parse(doc)) == [], doc


# --- the tests -----------------------------------------------------------------------------

ALLOWED = {"NOT_FOUND", "BAD_USER_INPUT"}


@pytest.fixture
async def world(alice: Account, mallory: Account) -> World:
    return World(await make_family(alice, "Alice"), await make_family(mallory, "Mallory"))


async def test_forged_ids_everywhere_are_not_found(world: World) -> None:
    mallory = world.mallory
    before = await event_counts(world)

    async def check(example: tuple[Case, str]) -> None:
        case, forged = example
        doc, variables = operation(case, forged, mallory)
        r = await mallory.account.client(doc, variables)
        assert r.status == 200, (case.name, forged, r.body)
        # Not a crash, and nothing else: malformed IDs are as missing as unknown ones. Only
        # `node` with a small seq may name one of Mallory's own events.
        # A NUL in the variable itself is refused before any ID is read (RefuseNul).
        expected = ["BAD_USER_INPUT"] if "\x00" in forged else ["NOT_FOUND"]
        if not (case.site.field == "node" and r.errors == [] and _an_event(forged)):
            assert r.codes == expected, (case.name, forged, r.body)

    for forged in KNOWN_FORGERIES:
        for case in HTTP_CASES:
            await check((case, forged))
    ran = await fuzz(st.tuples(st.sampled_from(HTTP_CASES), FORGED), check, max_examples=400)
    assert ran >= 300
    assert await event_counts(world) == before, "a forged ID wrote something"


async def test_forged_cursors_everywhere_are_bad_input(world: World) -> None:
    ids = world.mallory.ids
    client = world.mallory.account.client

    async def check(example: tuple[tuple[str, str], str, str]) -> None:
        (type_name, field), arg, cursor = example
        doc, variables = cursor_operation(type_name, field, arg, cursor, ids)
        r = await client(doc, variables)
        assert r.status == 200, (field, cursor, r.body)
        # A generated cursor may happen to be well-formed (a name and a UUID): a page.
        assert r.codes in ([], ["BAD_USER_INPUT"]), (type_name, field, arg, cursor, r.body)
        if r.errors:  # the argument, or the variable for a NUL (refused before parsing)
            assert list(r.errors[0]["extensions"]["fields"]) in ([arg], ["c"]), r.body

    for cursor in KNOWN_CURSORS:
        for conn in CONNECTIONS:
            for arg in ("after", "before"):
                await check((conn, arg, cursor))
    ran = await fuzz(st.tuples(st.sampled_from(CONNECTIONS), st.sampled_from(["after", "before"]),
                               st.one_of(FORGED, st.builds(lambda v: WRAPPINGS["base64url"](
                                   json.dumps(v).encode()), CURSOR_JSON))),
                     check, max_examples=300)
    assert ran >= 200
    # Control: a real cursor of every connection is taken.
    for type_name, field in CONNECTIONS:
        doc, variables = cursor_operation(type_name, field, "after", None, ids)  # type: ignore[arg-type]
        first = await client(doc, variables)
        assert first.errors == [], (field, first.body)


async def test_forged_ids_in_subscriptions_are_refused(world: World, server: str) -> None:
    """Each subscription field and presence's topics: a `next` with NOT_FOUND (or, for a
    topic that is no topic, BAD_USER_INPUT), then `complete`; the socket stays open."""
    token = await server_token(server, world.mallory.account)
    sock = await Socket.open(server, token)
    presence = "subscription($t: String!) { presence(topic: $t) { topic } }"

    async def check(example: tuple[Case, str, str]) -> None:
        case, forged, prefix = example
        if prefix:
            doc, variables = presence, {"t": prefix + forged}
        else:
            doc, variables = operation(case, forged, world.mallory)
        op = await sock.subscribe(doc, variables)
        # Both messages are read before anything is asserted: a failed example must not leave
        # its `complete` on the socket for the next one (hypothesis replays it to shrink).
        first, last = await sock.receive(), await sock.receive()
        assert first["id"] == op, (forged, first)
        assert first["type"] == "next", (forged, first)
        codes = [e["extensions"]["code"] for e in first["payload"]["errors"]]
        assert len(codes) == 1, first
        # As over HTTP, a NUL in the variable is refused before any ID is read (RefuseNul).
        expected = ALLOWED if prefix else (
            {"BAD_USER_INPUT"} if "\x00" in forged else {"NOT_FOUND"})
        assert set(codes) <= expected, (case.name, prefix, forged, first)
        assert last == {"id": op, "type": "complete"}, forged

    prefixes = st.sampled_from(["", "", "list:", "person:", "occasion:", "comments:LIST:",
                                "comments:LIST_ITEM:", "comments:GIFT:"])
    try:
        for forged in KNOWN_FORGERIES:
            for case in WS_CASES:
                await check((case, forged, ""))
        ran = await fuzz(st.tuples(st.sampled_from(WS_CASES), FORGED, prefixes), check,
                         max_examples=120)
        assert ran >= 80
        await sock.ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(sock.ws.recv(), 5)) == {"type": "pong"}
    finally:
        await sock.ws.close()
