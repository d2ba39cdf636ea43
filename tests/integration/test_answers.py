"""What one answer may cost (giftgraph.admission.answers, admission.server): an answer over
`max_response_bytes` is QUERY_TOO_COMPLEX on every transport, and an answer its client does
not read holds its caller's turn until the connection is cut (`http_send_timeout_seconds`).
An adversary (2026-11-27) had 15 aliases of 100 gifts with emoji descriptions answer 55.7 MB
(cost ~18,000 of 50,000), and 60 connections that never read took the process to 2.8 GB."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import websockets

from tests.support import ACCEL, serving, text_frame, unread_stream, ws_upgrade

# A family's mutations, unpaced: the tests make their gifts in a burst.
MUTATIONS_LIFTED = {"GIFTGRAPH_MUTATION_RATE": "100000/minute",
                    "GIFTGRAPH_FAMILY_MUTATION_RATE": "100000/minute",
                    "GIFTGRAPH_FAMILY_MUTATION_BURST": "1000"}
SIGN_UP = ("mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }")
BIG = "x" * 4900
GIFTS = "{ a: gifts(first: 100) { edges { node { description } } } }"  # ~ 500 KB


def sign_up(base: str) -> str:
    r = httpx.post(f"{base}/graphql", timeout=30, json={"query": SIGN_UP, "variables": {"i": {
        "familyName": "Fat", "email": f"{uuid.uuid4().hex[:8]}@example.com",
        "password": "correct horse battery", "displayName": "Admin"}}})
    return str(r.json()["data"]["signUp"]["accessToken"])


def gql(base: str, token: str, query: str, variables: dict[str, object] | None = None
        ) -> dict[str, object]:
    r = httpx.post(f"{base}/graphql", timeout=60, headers={"authorization": f"Bearer {token}"},
                   json={"query": query, "variables": variables or {}})
    return dict(r.json())


def refused(base: str, bound: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    found = re.search(rf'giftgraph_admission_refused_total{{bound="{bound}"}} (\S+)', text)
    assert found, text
    return float(found.group(1))


def hundred_gifts(base: str, token: str) -> None:
    fields = " ".join(f'g{i}: createGift(input: {{name: "g{i}", description: $d}}) {{ id }}'
                      for i in range(10))
    for _ in range(10):
        body = gql(base, token, f"mutation($d: String!) {{ {fields} }}", {"d": BIG})
        assert "errors" not in body, body


def gifts_query(aliases: int, prefix: str = "") -> str:
    """`aliases` pages of 100 gifts' descriptions (~490 KB each of `hundred_gifts`)."""
    return prefix + "{ " + " ".join(
        f"a{i}: gifts(first: 100) {{ edges {{ node {{ description }} }} }}"
        for i in range(aliases)) + " }"


def unread_socket(base: str, token: str) -> socket.socket:
    """A WebSocket to `base`, acknowledged, whose client reads no more than that: a tiny
    receive buffer, and nothing read past the ack."""
    hold = socket.socket()
    hold.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hold.connect(("127.0.0.1", int(base.rsplit(":", 1)[1])))
    try:
        hold.sendall(ws_upgrade())
        hold.settimeout(10)
        got = b""
        while b"\r\n\r\n" not in got:  # the 101 first: bytes sent before it are not read
            chunk = hold.recv(4096)
            assert chunk, got
            got += chunk
        hold.sendall(text_frame(json.dumps({"type": "connection_init",
                                            "payload": {"authorization": f"Bearer {token}"}})))
        while b"connection_ack" not in got:
            chunk = hold.recv(4096)
            assert chunk, got
            got += chunk
    except BaseException:
        hold.close()
        raise
    return hold


def unread_answer(base: str, token: str, query: str) -> socket.socket:
    """A POST of `query` on a connection whose client reads nothing yet (a tiny receive
    buffer)."""
    body = json.dumps({"query": query}).encode()
    hold = socket.socket()
    hold.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hold.connect(("127.0.0.1", int(base.rsplit(":", 1)[1])))
    hold.sendall(b"POST /graphql HTTP/1.1\r\nHost: giftgraph\r\n"
                 b"Content-Type: application/json\r\nAuthorization: Bearer "
                 + token.encode() + b"\r\nContent-Length: " + str(len(body)).encode()
                 + b"\r\n\r\n" + body)
    return hold


def read_until_reset(hold: socket.socket) -> None:
    """What the kernel took is read, then the server's reset."""
    hold.settimeout(5)
    with pytest.raises(ConnectionResetError):  # noqa: PT012 - read until the reset
        while hold.recv(1 << 16):
            pass


def resets(holds: list[socket.socket], idle: float = 2) -> int:
    """How many of `holds` the server reset: each read until its end, its reset, or `idle`
    seconds without anything."""
    reset = 0
    for hold in holds:
        hold.settimeout(idle)
        with contextlib.suppress(TimeoutError):
            try:
                while hold.recv(1 << 16):
                    pass
            except ConnectionResetError:
                reset += 1
    return reset


@pytest.fixture(scope="module")
def service(database_url: str) -> Iterator[str]:
    """A service whose answers may be 600 KB."""
    with serving(database_url, GIFTGRAPH_MAX_RESPONSE_BYTES=str(600 * 1024),
                 **MUTATIONS_LIFTED,
                 GIFTGRAPH_MAX_REQUESTS_PER_CALLER="1",
                 GIFTGRAPH_REQUEST_WAIT_SECONDS="0.5",
                 GIFTGRAPH_HTTP_SEND_TIMEOUT_SECONDS="3") as base:
        yield base


@pytest.fixture
def fat(service: str) -> tuple[str, str]:
    """The service, and a family of its with 100 gifts of ~5 KB (each test's database is
    emptied after it)."""
    token = sign_up(service)
    hundred_gifts(service, token)
    return service, token


def test_an_answer_over_the_bound_is_refused_with_a_code(fat: tuple[str, str]) -> None:
    base, token = fat
    one = gql(base, token, GIFTS)
    assert "errors" not in one, one
    assert len(one["data"]["a"]["edges"]) == 100  # type: ignore[index]
    before = refused(base, "response_bytes")
    two = gql(base, token, "{ a: gifts(first: 100) { edges { node { description } } } "
                           "b: gifts(first: 100) { edges { node { description } } } }")
    assert "data" in two, str(two)[:600]
    assert two["data"] is None, str(two)[:300]
    (error,) = two["errors"]  # type: ignore[misc]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert re.fullmatch(r"[0-9a-f]{32}", error["extensions"]["traceId"])
    assert "select fewer fields or smaller pages" in error["message"]
    assert refused(base, "response_bytes") == before + 1


def compiled(base: str, outcome: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    found = re.search(rf'giftgraph_compiled_reads_total{{outcome="{outcome}"}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


@pytest.mark.accel  # compiled reads are a fast path
def test_a_compiled_read_over_the_bound_leaves_postgresql_as_its_size(
        fat: tuple[str, str]) -> None:
    """The statement gives back the JSON only within the bound: over it, its size alone
    (the answer says exactly how large), and the executor does not run the read again."""
    base, token = fat
    before = {o: compiled(base, o) for o in ("compiled", "fallback", "executor")}
    two = gql(base, token, "{ b: gifts(first: 100) { edges { node { description } } } "
                           "a: gifts(first: 100) { edges { node { description } } } }")
    assert two["data"] is None, str(two)[:300]
    (error,) = two["errors"]  # type: ignore[misc]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert error["path"] == ["b"]
    size = int(re.search(r"The answer is ([0-9,]+) bytes", error["message"])[1]  # type: ignore[index]
               .replace(",", ""))
    assert 2 * 100 * len(BIG) < size < 2 * 100 * (len(BIG) + 200), error["message"]
    assert compiled(base, "compiled") == before["compiled"] + 1
    assert compiled(base, "fallback") == before["fallback"]
    assert compiled(base, "executor") == before["executor"]


def test_an_executed_answer_over_the_bound_is_refused_before_it_is_written(
        fat: tuple[str, str]) -> None:
    """An operation the compiler leaves to the executor (`__schema` at its root): the
    answer is measured by its strings before orjson writes it (`at_least`)."""
    base, token = fat
    before = compiled(base, "executor")  # counted by the fast paths' executor only
    four = gql(base, token, "{ " + " ".join(
        f"a{i}: gifts(first: 100) {{ edges {{ node {{ description }} }} }}" for i in range(4))
        + " __schema { queryType { name } } }")
    assert compiled(base, "executor") == before + (1 if ACCEL else 0)
    assert four["data"] is None, str(four)[:300]
    (error,) = four["errors"]  # type: ignore[misc]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert error["path"] == ["a0"]
    assert re.match(r"The answer is at least [0-9,]+ bytes, over the 614,400 allowed",
                    error["message"]), error["message"]


async def test_a_live_result_over_the_bound_is_an_error_and_the_socket_goes_on(
        fat: tuple[str, str]) -> None:
    base, token = fat
    two = ("subscription { live { a: gifts(first: 100) { edges { node { description } } } "
           "b: gifts(first: 100) { edges { node { description } } } } }")
    async with websockets.connect(base.replace("http", "ws") + "/graphql",
                                  subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                                  max_size=None) as ws:
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"authorization": f"Bearer {token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": two}}))
        message = await asyncio.wait_for(ws.recv(), 30)
        assert len(message) < 10_000
        result = json.loads(message)
        assert result["type"] == "next", result
        assert result["payload"]["data"] is None
        assert result["payload"]["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        await ws.send(json.dumps({"id": "2", "type": "subscribe",
                                  "payload": {"query": "{ me { id } }"}}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert answer["id"] == "2"
        assert answer["payload"]["data"]["me"]["id"]


def test_an_unread_answer_holds_its_callers_turn_until_the_connection_is_cut(
        fat: tuple[str, str]) -> None:
    """Ten pipelined answers of ~500 KB fill the loopback's buffers (~3 MB) of a client
    that reads none of them. The family's next request waits for that turn (one a caller
    here) and is refused; once the server has cut the connection, the family is served
    again."""
    base, token = fat
    port = int(base.rsplit(":", 1)[1])
    body = json.dumps({"query": GIFTS}).encode()
    request = (b"POST /graphql HTTP/1.1\r\nHost: giftgraph\r\n"
               b"Content-Type: application/json\r\nAuthorization: Bearer " + token.encode()
               + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    before = refused(base, "send_timeout")
    hold = socket.socket()
    hold.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hold.connect(("127.0.0.1", port))
    try:
        hold.sendall(request * 10)
        time.sleep(2.0)  # answered until the buffers are full; the next one waits
        waited = gql(base, token, "{ me { id } }")
        assert waited["errors"][0]["extensions"]["code"] == "RATE_LIMITED", waited  # type: ignore[index]
        deadline = time.monotonic() + 15
        while refused(base, "send_timeout") == before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert refused(base, "send_timeout") == before + 1
        assert gql(base, token, "{ me { id } }")["data"]
        # What the client finds: part of the answer, then the cut.
        hold.settimeout(5)
        got = 0
        with pytest.raises(ConnectionResetError):  # noqa: PT012 - read until the reset
            while chunk := hold.recv(1 << 16):
                got += len(chunk)
        assert 0 < got < 10 * 100 * 4900
    finally:
        hold.close()


@pytest.fixture(scope="module")
def roomy(database_url: str) -> Iterator[str]:
    """A service with the default answer bound (4 MiB) and a 3 s send timeout."""
    with serving(database_url, **MUTATIONS_LIFTED,
                 GIFTGRAPH_HTTP_SEND_TIMEOUT_SECONDS="3") as base:
        yield base


def test_a_socket_that_takes_none_of_its_answer_is_cut(roomy: str) -> None:
    """A ~3.4 MB answer on a WebSocket whose client reads nothing: past what the
    loopback's buffers take (~3 MB), the server's buffer stays full, and the socket is cut
    after `http_send_timeout_seconds` (uvicorn's ping timeout closes it only once its
    buffer drains, which it never does), with or without the fast paths."""
    base, token = roomy, sign_up(roomy)
    hundred_gifts(base, token)
    before = refused(base, "send_timeout")
    hold = unread_socket(base, token)
    try:
        hold.sendall(text_frame(json.dumps({"id": "1", "type": "subscribe",
                                            "payload": {"query": gifts_query(7)}})))
        deadline = time.monotonic() + 20
        while refused(base, "send_timeout") == before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert refused(base, "send_timeout") == before + 1
        read_until_reset(hold)
    finally:
        hold.close()


def test_a_callers_answers_are_paid_for_before_its_next_request(database_url: str) -> None:
    """Bytes of answers per caller (`answer_bytes`): a family that was sent ~500 KB, past a
    burst of 100 KB at 50 KB a second, waits ~8 s before its next request runs, so within
    the 0.5 s wait it is refused; another family is not."""
    with serving(database_url, **MUTATIONS_LIFTED,
                 GIFTGRAPH_ANSWER_BYTES_RATE=str(50 * 1024),
                 GIFTGRAPH_ANSWER_BYTES_BURST=str(100 * 1024),
                 GIFTGRAPH_REQUEST_WAIT_SECONDS="0.5") as base:
        token, other = sign_up(base), sign_up(base)
        hundred_gifts(base, token)
        before = refused(base, "answer_bytes")
        assert "errors" not in gql(base, token, GIFTS)
        waited = gql(base, token, "{ me { id } }")
        assert waited["errors"][0]["extensions"]["code"] == "RATE_LIMITED", waited  # type: ignore[index]
        assert refused(base, "answer_bytes") == before + 1
        assert "errors" not in gql(base, other, "{ me { id } }")


def test_a_callers_executed_values_are_paid_for_before_its_next_request(
        metered: tuple[str, str, str]) -> None:
    """Values of executed answers per caller (`answer_values`): ~4,000 values (ten aliases
    of 100 gifts' ids and names, `__schema` keeping the read on the executor), past a
    burst of 2,000 at 1,000 a second, have the family's next request wait ~2 s: refused
    within the 0.5 s wait; another family is not. The same read compiled (PostgreSQL
    writes its JSON) costs no values."""
    base, token, other = metered
    if ACCEL:  # compiled: no values
        for _ in range(3):
            assert "errors" not in gql(base, token, "{ " + READS + " }")
    before = refused(base, "answer_values")
    executed = gql(base, token, "{ " + READS + " __schema { queryType { name } } }")
    assert "errors" not in executed, str(executed)[:300]
    waited = gql(base, token, "{ me { id } }")
    assert waited["errors"][0]["extensions"]["code"] == "RATE_LIMITED", waited  # type: ignore[index]
    assert refused(base, "answer_values") == before + 1
    assert "errors" not in gql(base, other, "{ me { id } }")


@pytest.fixture(scope="module")
def metered_service(database_url: str) -> Iterator[str]:
    """A service whose callers may have 2,000 values of executed answers, then 1,000 a
    second, and 2 requests (or socket operations) in flight."""
    with serving(database_url, **MUTATIONS_LIFTED,
                 GIFTGRAPH_RESULT_CACHE_BYTES="0",
                 GIFTGRAPH_ANSWER_VALUES_RATE="1000",
                 GIFTGRAPH_ANSWER_VALUES_BURST="2000",
                 GIFTGRAPH_MAX_REQUESTS_PER_CALLER="2",
                 GIFTGRAPH_REQUEST_WAIT_SECONDS="0.5") as base:
        yield base


@pytest.fixture
def metered(metered_service: str) -> tuple[str, str, str]:
    """That service, a family of it with 100 gifts (its answers paid for), and another."""
    base = metered_service
    token, other = sign_up(base), sign_up(base)
    fields = " ".join(f'g{i}: createGift(input: {{name: "g{i}"}}) {{ id }}'
                      for i in range(10))
    for _ in range(10):
        assert "errors" not in gql(base, token, f"mutation {{ {fields} }}")
    time.sleep(1)
    return base, token, other


READS = " ".join(f"a{i}: gifts(first: 100) {{ edges {{ node {{ id name }} }} }}"
                 for i in range(10))  # ~4,000 values


def test_values_an_error_threw_away_are_charged(metered: tuple[str, str, str]) -> None:
    """A non-null field's error nulls the answer up to its root: ~4,000 values built and
    none sent. Such a result is charged its measured cost: the next request waits."""
    base, token, other = metered
    before = refused(base, "answer_values")
    lost = gql(base, token, "{ " + READS + " bad: lists(first: -1) { totalCount } }")
    assert lost["data"] is None, str(lost)[:300]
    assert lost["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"  # type: ignore[index]
    waited = gql(base, token, "{ me { id } }")
    assert waited["errors"][0]["extensions"]["code"] == "RATE_LIMITED", waited  # type: ignore[index]
    assert refused(base, "answer_values") == before + 1
    assert "errors" not in gql(base, other, "{ me { id } }")


async def test_a_sockets_queries_wait_for_their_callers_turn_and_payment(
        metered: tuple[str, str, str]) -> None:
    """Six executed reads of ~4,000 values sent at once over one socket: they run within
    the caller's requests in flight, each once the answers before it are paid for; past
    the wait, RATE_LIMITED. All six had run before the first was charged."""
    base, token, _ = metered
    query = "{ " + READS + " __schema { queryType { name } } }"
    async with websockets.connect(base.replace("http", "ws") + "/graphql",
                                  subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                                  max_size=None) as ws:
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"authorization": f"Bearer {token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        for i in range(6):
            await ws.send(json.dumps({"id": str(i), "type": "subscribe",
                                      "payload": {"query": query}}))
        answered: dict[str, dict[str, object]] = {}
        while len(answered) < 6:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] == "next":
                answered[message["id"]] = message["payload"]
    codes = [p["errors"][0]["extensions"]["code"]  # type: ignore[index]
             for p in answered.values() if p.get("errors")]
    ran = [p for p in answered.values() if not p.get("errors")]
    assert len(ran) <= 2, codes
    assert codes == ["RATE_LIMITED"] * (6 - len(ran))


@pytest.mark.parametrize("failing", [False, True])
async def test_a_familys_renders_for_its_subscribers_are_charged_to_it(
        metered: tuple[str, str, str], failing: bool) -> None:
    """An event rendered for a family's subscription (~4,000 values: eight pages of its
    list's 100 items) is charged to the family as its own answers are: its next request
    waits. The mutation pace alone had let one family's renders take a core. A render
    whose error nulled all it built (`failing`: each item's list has a bad cursor) is
    charged its selection's measured cost: 5 such selections took 51-91% of a core."""
    base, token, other = metered
    created = gql(base, token, 'mutation { createList(input: {name: "L", kind: IDEAS}) '
                               "{ id } }")
    list_id = created["data"]["createList"]["id"]  # type: ignore[index]
    gifts = gql(base, token, "{ gifts(first: 100) { edges { node { id } } } }")
    ids = [e["node"]["id"] for e in gifts["data"]["gifts"]["edges"]]  # type: ignore[index]
    for start in range(0, 100, 10):
        adds = " ".join(f'a{i}: addListItem(listId: "{list_id}", input: {{giftId: "{g}"}}) '
                        "{ id }" for i, g in enumerate(ids[start:start + 10]))
        assert "errors" not in gql(base, token, f"mutation {{ {adds} }}")
    await asyncio.sleep(3)  # answers paid for
    bad = ' list { items(after: "garbage") { totalCount } }' if failing else ""
    pages = " ".join(f"p{i}: items(first: 100) {{ edges {{ node {{ id status quantity{bad} }} }} }}"
                     for i in range(8))
    selection = ("subscription { familyEvents { seq node { ... on GiftList { "
                 + pages + " } } } }")
    async with websockets.connect(base.replace("http", "ws") + "/graphql",
                                  subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                                  max_size=None) as ws:
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"authorization": f"Bearer {token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe",
                                  "payload": {"query": selection}}))
        await asyncio.sleep(1)  # subscribed
        changed = await asyncio.to_thread(gql, base, token, (
            f'mutation {{ updateList(id: "{list_id}", input: {{name: "M"}}) {{ id }} }}'))
        assert "errors" not in changed, changed
        event = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert event["type"] == "next", event
        node = event["payload"]["data"]["familyEvents"]["node"]
        if failing:
            assert node is None, str(event)[:300]
            assert event["payload"]["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        else:
            assert len(node["p7"]["edges"]) == 100
        before = await asyncio.to_thread(refused, base, "answer_values")
        waited = await asyncio.to_thread(gql, base, token, "{ me { id } }")
    assert waited["errors"][0]["extensions"]["code"] == "RATE_LIMITED", waited  # type: ignore[index]
    assert refused(base, "answer_values") == before + 1
    assert "errors" not in gql(base, other, "{ me { id } }")


def test_a_socket_closed_with_operations_running_gives_their_turns_back(
        database_url: str) -> None:
    """Operations running when their socket closes are cancelled, and Strawberry never
    resumes their hooks: each held one of the family's requests in flight for good, and
    the family's every request after was refused (adversary, 2026-11-27)."""
    with serving(database_url, GIFTGRAPH_MAX_REQUESTS_PER_CALLER="2",
                 GIFTGRAPH_REQUEST_WAIT_SECONDS="3") as base:
        token = sign_up(base)
        asyncio.run(close_with_operations_running(base, token))
        for _ in range(3):
            answer = gql(base, token, "{ me { id } }")
            assert "errors" not in answer, answer


async def close_with_operations_running(base: str, token: str) -> None:
    query = "{ me { id } persons(first: 5) { edges { node { id name } } } }"
    for _ in range(5):
        ws = await websockets.connect(base.replace("http", "ws") + "/graphql",
                                      subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"authorization": f"Bearer {token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        for i in range(10):
            await ws.send(json.dumps({"id": str(i), "type": "subscribe",
                                      "payload": {"query": query}}))
        await ws.close()
        await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
def owing(database_url: str) -> Iterator[str]:
    """A service whose sockets may owe their clients the least the bound takes (5 x
    max_response_bytes: 5 MiB), with the default 30 s send timeout."""
    with serving(database_url, **MUTATIONS_LIFTED,
                 GIFTGRAPH_MAX_RESPONSE_BYTES=str(2**20),
                 GIFTGRAPH_MAX_SOCKET_OWED_BYTES=str(64 * 1024)) as base:
        yield base


def test_a_socket_that_owes_its_client_too_much_is_cut(owing: str) -> None:
    """Sixteen live queries of ~1 MB each on a WebSocket whose client reads nothing: their
    results wait to be written, and the one that would take the socket past what it may
    owe cuts it (`socket_owed_bytes`), long before the 30 s send timeout, by a reset (its
    waiting sends let go; uvicorn's own protocol, without the fast paths, kept them until
    the client closed). Another family is served meanwhile."""
    base = owing
    token, other = sign_up(base), sign_up(base)
    hundred_gifts(base, token)
    query = gifts_query(2, "query Big @live ")
    before = refused(base, "socket_owed_bytes")
    hold = unread_socket(base, token)
    try:
        started = time.monotonic()
        for n in range(16):  # ~16 MB, of which the kernel's buffers take ~3 MB
            hold.sendall(text_frame(json.dumps({"id": str(n), "type": "subscribe",
                                                "payload": {"query": query}})))
        while refused(base, "socket_owed_bytes") == before \
                and time.monotonic() < started + 20:
            time.sleep(0.2)
        assert refused(base, "socket_owed_bytes") == before + 1
        assert time.monotonic() - started < 20
        assert refused(base, "send_timeout") == 0  # cut by what it owed, not by the time
        me = gql(base, other, "{ me { id } }")
        assert "errors" not in me, me
        read_until_reset(hold)  # with or without the fast paths
    finally:
        hold.close()


async def test_live_results_are_charged_to_their_caller_as_they_are_sent(
        database_url: str) -> None:
    """Eight subscribers of one family's live query of ~500 KB share each run, but every
    result sent is its caller's answer (`answer_bytes`): with 1 MB a second after a burst
    of 1 MB, changes for 4 s send the family about that much in 5 s, not eight times what
    its runs cost (each run was charged once, its deliveries not at all)."""
    rate = 1_000_000
    with serving(database_url, **MUTATIONS_LIFTED,
                 GIFTGRAPH_ANSWER_BYTES_RATE=str(rate),
                 GIFTGRAPH_ANSWER_BYTES_BURST=str(rate)) as base:
        token = sign_up(base)
        hundred_gifts(base, token)
        first = gql(base, token, "{ gifts(first: 1) { edges { node { id } } } }")
        gift = first["data"]["gifts"]["edges"][0]["node"]["id"]  # type: ignore[index]
        query = ("query Big @live { gifts(first: 100) { edges { node { price "
                 "description } } } }")
        url = base.replace("http", "ws", 1) + "/graphql"
        received = 0
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                                      max_size=None) as ws:
            await ws.send(json.dumps({"type": "connection_init",
                                      "payload": {"authorization": f"Bearer {token}"}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            for n in range(8):
                await ws.send(json.dumps({"id": str(n), "type": "subscribe",
                                          "payload": {"query": query}}))
            firsts: set[str] = set()
            while len(firsts) < 8:  # each subscriber's result now
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert message["type"] == "next", message
                firsts.add(message["id"])

            loop = asyncio.get_running_loop()
            started = loop.time()

            async def change() -> None:  # (each waits for the family's answers paid too)
                async with httpx.AsyncClient(timeout=30) as http:
                    k = 0
                    while loop.time() < started + 4:
                        k += 1
                        r = await http.post(f"{base}/graphql", json={
                            "query": "mutation($i: ID!, $p: Decimal) { updateGift(id: $i, "
                                     "input: {price: $p}) { id } }",
                            "variables": {"i": gift, "p": f"{k}.00"}},
                            headers={"authorization": f"Bearer {token}"})
                        assert "errors" not in r.json(), r.text
                        await asyncio.sleep(0.1)

            changing = asyncio.ensure_future(change())
            try:
                while loop.time() < started + 5:
                    with contextlib.suppress(TimeoutError):
                        received += len(await asyncio.wait_for(ws.recv(), 0.5))
            finally:
                await changing
        # the burst, and the rate for the 5 s (and one result in flight per subscriber
        # beyond it); without the charge, several times this
        assert received < rate * 6 + 8 * 600_000, received


def test_unread_subscription_streams_count_in_what_the_process_owes(database_url: str) -> None:
    """Eight multipart streams of a ~1 MB live result, never read, and changes that give
    each a new result: each stream holds a result in its connection's buffer while
    uvicorn's `send` waits for it to drain. Counted with the sockets' (the process may owe
    5 MiB here), the stream owing most is cut with a reset long before the 30 s send
    timeout; another family is served meanwhile."""
    with serving(database_url, **MUTATIONS_LIFTED,
                 GIFTGRAPH_MAX_RESPONSE_BYTES=str(2**20),
                 GIFTGRAPH_MAX_SOCKET_OWED_BYTES=str(64 * 1024),
                 GIFTGRAPH_MAX_OWED_BYTES=str(64 * 1024),
                 GIFTGRAPH_ANSWER_BYTES_RATE=str(2**30),
                 GIFTGRAPH_ANSWER_BYTES_BURST=str(2**30)) as base:
        token, other = sign_up(base), sign_up(base)
        hundred_gifts(base, token)
        query = "subscription { live " + gifts_query(2) + " }"
        first = gql(base, token, "{ gifts(first: 1) { edges { node { id } } } }")
        gift = first["data"]["gifts"]["edges"][0]["node"]["id"]  # type: ignore[index]
        before = refused(base, "socket_owed_bytes")
        streams = [unread_stream(base, token, query) for _ in range(8)]
        try:
            started = time.monotonic()
            n = 0
            while refused(base, "socket_owed_bytes") == before \
                    and time.monotonic() < started + 20:
                n += 1  # each change makes every stream a new result
                body = gql(base, token, "mutation($i: ID!, $d: String!) { updateGift(id: $i, "
                           "input: {description: $d}) { id } }", {"i": gift, "d": f"{n}"})
                assert "errors" not in body, body
                time.sleep(0.3)
            assert refused(base, "socket_owed_bytes") > before
            assert time.monotonic() - started < 20
            assert refused(base, "send_timeout") == 0
            me = gql(base, other, "{ me { id } }")
            assert "errors" not in me, me
            assert resets(streams) >= 1
        finally:
            for stream in streams:
                stream.close()


def test_unread_plain_answers_count_in_what_the_process_owes(database_url: str) -> None:
    """Answers of ~4 MB on eight connections whose clients read none of them (the kernel
    takes the first MB or two of each): uvicorn's `send` returns once an answer is in its
    transport, but it stays counted as owed, with the body its view holds, until its
    client takes it (the process may owe 20 MiB here), so connections are cut with a reset
    long before the 30 s send timeout; another family is served meanwhile."""
    with serving(database_url, **MUTATIONS_LIFTED,
                 GIFTGRAPH_MAX_RESPONSE_BYTES=str(4 * 2**20),
                 GIFTGRAPH_MAX_SOCKET_OWED_BYTES=str(64 * 1024),
                 GIFTGRAPH_MAX_OWED_BYTES=str(64 * 1024),
                 GIFTGRAPH_MAX_REQUESTS_PER_CALLER="20",
                 GIFTGRAPH_ANSWER_BYTES_RATE=str(2**30),
                 GIFTGRAPH_ANSWER_BYTES_BURST=str(2**30)) as base:
        token, other = sign_up(base), sign_up(base)
        hundred_gifts(base, token)
        before = refused(base, "socket_owed_bytes")
        holds = []
        try:
            for _ in range(8):
                holds.append(unread_answer(base, token, gifts_query(8)))
            cut_and_others_served(base, other, before, holds, within=10)
        finally:
            for hold in holds:
                hold.close()


def cut_and_others_served(base: str, other: str, before: float, holds: list[socket.socket],
                          within: float, idle: float = 2.0) -> None:
    """Within `within` seconds a socket is cut for what it owes (`socket_owed_bytes` past
    `before`), by its bound and not by the send timeout; the `other` family is answered;
    and at least one of `holds` was reset."""
    deadline = time.monotonic() + within
    while refused(base, "socket_owed_bytes") == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert refused(base, "socket_owed_bytes") > before
    assert refused(base, "send_timeout") == 0
    me = gql(base, other, "{ me { id } }")
    assert "errors" not in me, me
    assert resets(holds, idle=idle) >= 1


def test_unread_socket_answers_count_in_what_the_process_owes(database_url: str) -> None:
    """One ~7.4 MB answer on each of twelve WebSockets whose clients read none of it:
    uvicorn's `send` returns once an answer is in its socket's transport, but the answer
    stays owed, whole, while the transport holds any of it (uvloop keeps the write's
    chunk; the process may owe 40 MiB here), so sockets are cut with a reset long before
    the 30 s send timeout, with or without the fast paths; another family is served
    meanwhile. Counted only while a later send waited, 100 sockets of one unread answer
    each held ~106 MB in their transports with ~8 KB counted (adversary, 2026-11-29)."""
    with serving(database_url, **MUTATIONS_LIFTED,
                 GIFTGRAPH_MAX_RESPONSE_BYTES=str(8 * 2**20),
                 GIFTGRAPH_MAX_SOCKET_OWED_BYTES=str(64 * 1024),
                 GIFTGRAPH_MAX_OWED_BYTES=str(64 * 1024),
                 GIFTGRAPH_ANSWER_BYTES_RATE=str(2**30),
                 GIFTGRAPH_ANSWER_BYTES_BURST=str(2**30),
                 GIFTGRAPH_ANSWER_VALUES_RATE=str(2**30),
                 GIFTGRAPH_ANSWER_VALUES_BURST=str(2**30)) as base:
        token, other = sign_up(base), sign_up(base)
        hundred_gifts(base, token)
        before = refused(base, "socket_owed_bytes")
        holds: list[socket.socket] = []
        try:
            for _ in range(12):
                holds.append(unread_socket(base, token))
                holds[-1].sendall(text_frame(json.dumps({
                    "id": "1", "type": "subscribe", "payload": {"query": gifts_query(15)}})))
            # (the cut reset already, the others read: a short idle)
            cut_and_others_served(base, other, before, holds, within=20, idle=0.5)
        finally:
            for hold in holds:
                hold.close()


def test_the_process_bound_cuts_the_family_owing_most_not_the_largest_answer(
        database_url: str) -> None:
    """One family's unread answers of ~3.4 MB each, another family's one unread answer of
    ~3.9 MB: past the process's bound the first family's connections are cut, and the
    other family's answer, the largest, is read in full once its client reads. Counted by
    connection, the larger answer was cut first (adversary, 2026-11-28)."""
    with serving(database_url, **MUTATIONS_LIFTED,
                 GIFTGRAPH_MAX_RESPONSE_BYTES=str(4 * 2**20),
                 GIFTGRAPH_MAX_OWED_BYTES=str(12 * 2**20),
                 GIFTGRAPH_MAX_REQUESTS_PER_CALLER="20",
                 GIFTGRAPH_ANSWER_BYTES_RATE=str(2**30),
                 GIFTGRAPH_ANSWER_BYTES_BURST=str(2**30)) as base:
        many, one = sign_up(base), sign_up(base)
        hundred_gifts(base, many)
        hundred_gifts(base, one)
        before = refused(base, "socket_owed_bytes")
        reader = unread_answer(base, one, gifts_query(8))
        holds = []
        try:
            time.sleep(1)  # its answer in its transport first, owed
            for _ in range(6):
                holds.append(unread_answer(base, many, gifts_query(7)))
                time.sleep(0.3)
            deadline = time.monotonic() + 10
            while refused(base, "socket_owed_bytes") == before and time.monotonic() < deadline:
                time.sleep(0.2)
            assert refused(base, "socket_owed_bytes") > before
            reader.settimeout(10)
            got = b""
            while chunk := reader.recv(1 << 16):  # the whole answer; a reset raises
                got += chunk
                if got.endswith(b"}") and b"\r\n\r\n" in got:
                    head, _, answer = got.partition(b"\r\n\r\n")
                    length = re.search(rb"content-length: (\d+)", head.lower())
                    if length and len(answer) == int(length.group(1)):
                        break
            head, _, answer = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            assert len(json.loads(answer)["data"]) == 8
            assert resets(holds) >= 1
        finally:
            reader.close()
            for hold in holds:
                hold.close()


def test_a_sockets_unread_answers_hold_no_database_connection(database_url: str) -> None:
    """Two sockets that read nothing, three ~3.4 MB queries each, on a pool of two
    connections: each answer waits for its client while the operation's stage stays open
    (Strawberry streams a socket's every operation), but its reads' connection has gone
    back, so another family's request is answered at once. Held, 8 such sockets' 40
    queries took the whole pool and every other request failed after 30 s (without the
    fast paths; adversary, 2026-11-29)."""
    with serving(database_url, **MUTATIONS_LIFTED, GIFTGRAPH_DB_POOL_SIZE="2",
                 GIFTGRAPH_MAX_RESPONSE_BYTES=str(4 * 2**20),
                 GIFTGRAPH_ANSWER_BYTES_RATE=str(2**30),
                 GIFTGRAPH_ANSWER_BYTES_BURST=str(2**30)) as base:
        token, other = sign_up(base), sign_up(base)
        hundred_gifts(base, token)
        holds = [unread_socket(base, token) for _ in range(2)]
        try:
            for hold in holds:
                for n in range(3):
                    hold.sendall(text_frame(json.dumps({
                        "id": str(n), "type": "subscribe",
                        "payload": {"query": gifts_query(7)}})))
            time.sleep(3)  # the answers made, and waiting for their clients
            started = time.monotonic()
            me = gql(base, other, "{ me { id } }")
            assert "errors" not in me, me
            assert time.monotonic() - started < 5
        finally:
            for hold in holds:
                hold.close()
