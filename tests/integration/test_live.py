"""Subscriptions over graphql-transport-ws against a uvicorn server, with real sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from giftgraph.ids import encode_id

PROTOCOL = "graphql-transport-ws"
EVENT_FIELDS = "seq kind topic entityType node { id ... on ListItem { status } }"


class WsClient:
    """A minimal graphql-transport-ws peer (the protocol is the thing under test)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0

    @classmethod
    async def connect(cls, base: str, payload: dict[str, Any],
                      timeout: float = 5) -> WsClient:  # noqa: ASYNC109
        ws = await websockets.connect(base.replace("http", "ws") + "/graphql",
                                      subprotocols=[PROTOCOL])  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        assert ack["type"] == "connection_ack", ack
        return cls(ws)

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        self.next_id += 1
        op = str(self.next_id)
        await self.ws.send(json.dumps({"id": op, "type": "subscribe",
                                       "payload": {"query": query,
                                                   "variables": variables or {}}}))
        return op

    # Every receive has a deadline (a test never hangs on a silent server); the tests that
    # expect silence pass a short one. An `asyncio.timeout` around each call would be noise.
    async def receive(self, timeout: float = 5) -> dict[str, Any]:  # noqa: ASYNC109
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))  # type: ignore[no-any-return]


async def listeners(base: str) -> int:
    """The server's hub listeners now (its `giftgraph_subscriptions_listening` gauge)."""
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        text = (await http.get("/metrics")).text
    return next(int(float(line.split()[1])) for line in text.splitlines()
                if line.startswith("giftgraph_subscriptions_listening "))


async def listening(base: str, count: int, within: float = 10) -> None:
    """Until the server's hub holds `count` listeners. A subscribe message has no reply
    until an event, and on a slow machine a subscription may still be starting when the
    test's mutation commits: that event would then come before the subscription's start."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (now := await listeners(base)) < count:
        assert loop.time() < deadline, f"{now} of {count} subscriptions listening"
        await asyncio.sleep(0.02)


def post(base: str, query: str, variables: dict[str, Any] | None = None,
         token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.post(f"{base}/graphql", json={"query": query, "variables": variables or {}},
                   headers=headers, timeout=10)
    return r.json()  # type: ignore[no-any-return]


def signup(base: str, email: str) -> str:
    r = post(base, "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
             {"i": {"familyName": "F", "email": email, "password": "long password",
                    "displayName": "D"}})
    return r["data"]["signUp"]["accessToken"]  # type: ignore[no-any-return]


def new_item(base: str, token: str) -> tuple[str, str]:
    gl = post(base, 'mutation { createList(input: {name: "L", kind: IDEAS}) { id } }',
              token=token)["data"]["createList"]["id"]
    item = post(base, 'mutation($l: ID!) { addListItem(listId: $l, input: {gift: {name: "G"}})'
                ' { id } }', {"l": gl}, token)["data"]["addListItem"]["id"]
    return gl, item


def set_status(base: str, token: str, item: str, status: str) -> None:
    r = post(base, "mutation($i: ID!, $s: ItemStatus!) { setListItemStatus(id: $i, status: $s)"
             " { status } }", {"i": item, "s": status}, token)
    assert "errors" not in r, r


async def test_list_events_delivered_and_isolated(server: str) -> None:
    alice = signup(server, "alice@live-example.com")
    mallory = signup(server, "mallory@live-example.com")
    gl, item = new_item(server, alice)

    watcher = await WsClient.connect(server, {"authorization": f"Bearer {alice}"})
    op = await watcher.subscribe(
        f"subscription($l: ID!) {{ listEvents(listId: $l) {{ {EVENT_FIELDS} }} }}", {"l": gl})
    spy = await WsClient.connect(server, {"token": mallory})  # the {"token": ...} form
    await spy.subscribe(f"subscription {{ familyEvents {{ {EVENT_FIELDS} }} }}")
    await listening(server, 2)

    set_status(server, alice, item, "SELECTED")
    msg = await watcher.receive()
    assert msg["type"] == "next"
    assert msg["id"] == op
    event = msg["payload"]["data"]["listEvents"]
    assert event["kind"] == "STATUS_CHANGED"
    assert event["topic"] == f"list:{gl}"
    assert event["node"] == {"id": item, "status": "SELECTED"}
    with pytest.raises(TimeoutError):
        await spy.receive(timeout=1)  # another family hears nothing
    await watcher.ws.close()
    await spy.ws.close()


async def test_other_familys_list_is_not_found(server: str) -> None:
    alice = signup(server, "a2@live-example.com")
    mallory = signup(server, "m2@live-example.com")
    gl, _ = new_item(server, alice)
    spy = await WsClient.connect(server, {"authorization": f"Bearer {mallory}"})
    for list_id in (gl, encode_id("GiftList", "00000000-0000-0000-0000-000000000000")):
        op = await spy.subscribe("subscription($l: ID!) { listEvents(listId: $l) { seq } }",
                                 {"l": list_id})
        msg = await spy.receive()
        assert msg["id"] == op, msg
        assert msg["type"] == "next", msg
        assert msg["payload"]["data"] is None
        assert [e["extensions"]["code"] for e in msg["payload"]["errors"]] == ["NOT_FOUND"]
        assert await spy.receive() == {"id": op, "type": "complete"}
    await spy.ws.close()


@pytest.mark.parametrize("payload", [{}, {"authorization": "Bearer nope"}, {"token": "x.y.z"}])
async def test_bad_connection_init_is_closed_4403(server: str, payload: dict[str, Any]) -> None:
    ws = await websockets.connect(server.replace("http", "ws") + "/graphql",
                                  subprotocols=[PROTOCOL])  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


async def test_resume_with_since_misses_nothing_and_repeats_nothing(server: str) -> None:
    alice = signup(server, "a3@live-example.com")
    gl, item = new_item(server, alice)
    query = ("subscription($l: ID!, $s: String) {"
             f" listEvents(listId: $l, since: $s) {{ {EVENT_FIELDS} }} }}")

    client = await WsClient.connect(server, {"authorization": f"Bearer {alice}"})
    await client.subscribe(query, {"l": gl})
    await listening(server, 1)
    set_status(server, alice, item, "SELECTED")
    first = (await client.receive())["payload"]["data"]["listEvents"]
    await client.ws.close()  # the dashboard loses its socket...

    for status in ("PURCHASED", "RECEIVED", "PURCHASED"):  # ...while changes happen
        set_status(server, alice, item, status)

    client = await WsClient.connect(server, {"authorization": f"Bearer {alice}"})
    await client.subscribe(query, {"l": gl, "s": first["seq"]})
    replayed = [(await client.receive())["payload"]["data"]["listEvents"] for _ in range(3)]
    assert [e["node"]["status"] for e in replayed] == ["PURCHASED", "RECEIVED", "PURCHASED"]
    set_status(server, alice, item, "RECEIVED")  # and then live, with no duplicate
    live = (await client.receive())["payload"]["data"]["listEvents"]
    seqs = [int(first["seq"])] + [int(e["seq"]) for e in [*replayed, live]]
    assert seqs == sorted(set(seqs)), seqs
    assert live["node"]["status"] == "RECEIVED"
    with pytest.raises(TimeoutError):
        await client.receive(timeout=0.5)
    await client.ws.close()
