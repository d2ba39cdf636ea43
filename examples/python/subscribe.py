#!/usr/bin/env python3
"""GiftGraph with the Python `gql` client (gql >= 4).

Queries and mutations go over HTTP (HTTPXAsyncTransport); the subscription goes over a
WebSocket speaking graphql-transport-ws (WebsocketsTransport), authenticated by the
`connection_init` payload {"authorization": "Bearer <access>"}. The flow: sign up (or log in
with EMAIL/PASSWORD), create a list with one item, subscribe to listEvents(listId), move the
item IDEA -> SELECTED, and print the event as one line:

    EVENT {"kind": "STATUS_CHANGED", "seq": "42", "topic": "list:…", "node": {"id": "…", ...}}

Usage: python examples/python/subscribe.py [BASE_URL]
       (or GIFTGRAPH_URL; default http://127.0.0.1:8000)
Exits 0 once the event arrives, 1 on any error or when nothing arrives within 10 s.
Needs `pip install "gql[httpx,websockets]>=4"` (the project's dev extras have it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from typing import Any

from gql import Client, GraphQLRequest, gql
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

TIMEOUT_SECONDS = 10.0

SIGN_UP = gql("""
mutation SignUp($input: SignUpInput!) {
  signUp(input: $input) { accessToken user { id email } }
}""")
LOGIN = gql("""
mutation Login($email: String!, $password: String!) {
  login(email: $email, password: $password) { accessToken user { id email } }
}""")
CREATE_LIST = gql("""
mutation CreateList($input: GiftListInput!) {
  createList(input: $input) { id name }
}""")
ADD_ITEM = gql("""
mutation AddItem($listId: ID!, $input: ListItemInput!) {
  addListItem(listId: $listId, input: $input) { id status gift { id name } }
}""")
# The newest event's seq: subscribing `since` it means the status change below is delivered
# even if it commits before the server has started listening (replay, then live, no gap).
LATEST_SEQ = gql("""
query LatestSeq {
  events(first: 1) { edges { node { id seq } } }
}""")
SET_STATUS = gql("""
mutation SetStatus($id: ID!, $status: ItemStatus!) {
  setListItemStatus(id: $id, status: $status) { id status }
}""")
LIST_EVENTS = gql("""
subscription ListEvents($listId: ID!, $since: String) {
  listEvents(listId: $listId, since: $since) {
    id seq kind topic entityType entityId
    node { id ... on ListItem { status } }
  }
}""")


def request(operation: GraphQLRequest, **variables: Any) -> GraphQLRequest:
    return GraphQLRequest(operation, variable_values=variables)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def http_call(url: str, operation: GraphQLRequest, token: str | None = None,
                    **variables: Any) -> dict[str, Any]:
    """One operation over HTTP (a short-lived session keeps the example linear)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = HTTPXAsyncTransport(url=url, headers=headers, timeout=TIMEOUT_SECONDS)
    async with Client(transport=transport) as session:
        return await session.execute(request(operation, **variables))


async def authenticate(url: str) -> dict[str, Any]:
    email, password = os.environ.get("EMAIL"), os.environ.get("PASSWORD")
    if email and password:
        return (await http_call(url, LOGIN, email=email, password=password))["login"]
    data = await http_call(url, SIGN_UP, input={
        "familyName": "gql Example Family",
        "email": f"gql-{uuid.uuid4().hex[:12]}@example.com",
        "password": "gql example password",
        "displayName": "gql Example",
    })
    return data["signUp"]  # type: ignore[no-any-return]


async def run(base: str) -> dict[str, Any]:
    http_url = f"{base}/graphql"
    ws_url = "ws" + http_url.removeprefix("http")  # http -> ws, https -> wss

    auth = await authenticate(http_url)
    token = auth["accessToken"]
    log(f"signed in as {auth['user']['email']}")

    gift_list = (await http_call(http_url, CREATE_LIST, token,
                                 input={"name": "Birthday ideas", "kind": "IDEAS"}))["createList"]
    item = (await http_call(http_url, ADD_ITEM, token, listId=gift_list["id"],
                            input={"gift": {"name": "Board game", "price": "29.99"}})
            )["addListItem"]
    log(f"list {gift_list['id']}, item {item['id']} ({item['status']})")
    edges = (await http_call(http_url, LATEST_SEQ, token))["events"]["edges"]
    since = edges[0]["node"]["seq"] if edges else None

    ws = WebsocketsTransport(
        url=ws_url,
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],  # graphql-transport-ws
        init_payload={"authorization": f"Bearer {token}"},
    )
    async with Client(transport=ws) as ws_session:
        subscription = ws_session.subscribe(
            request(LIST_EVENTS, listId=gift_list["id"], since=since))
        # The subscribe message goes out on the first iteration below; the status change runs
        # alongside it, and subscribing `since` the latest seq makes their order irrelevant.
        change = asyncio.create_task(
            http_call(http_url, SET_STATUS, token, id=item["id"], status="SELECTED"))
        try:
            async with contextlib.aclosing(subscription) as events:
                async for data in events:
                    if data["listEvents"]["kind"] == "STATUS_CHANGED":
                        event: dict[str, Any] = data["listEvents"]
                        break
                else:
                    raise RuntimeError("subscription completed before any event")
            log(f"item is now {(await change)['setListItemStatus']['status']}")
        finally:
            change.cancel()
    return event


def main() -> int:
    base = (sys.argv[1] if len(sys.argv) > 1
            else os.environ.get("GIFTGRAPH_URL", "http://127.0.0.1:8000")).rstrip("/")

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            return await run(base)

    try:
        event = asyncio.run(bounded())
    except TimeoutError:
        log(f"timed out after {TIMEOUT_SECONDS:g} s without an event")
        return 1
    except Exception as exc:  # an example reports any failure and exits non-zero
        log(f"error: {type(exc).__name__}: {exc}")
        return 1
    summary = {key: event[key] for key in ("kind", "seq", "topic", "node")}
    print(f"EVENT {json.dumps(summary)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
