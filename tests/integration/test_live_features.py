"""The live dashboard, presence, socket revocation and resource hygiene, against a uvicorn
server running in this process (so its internal counters can be read)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from websockets.exceptions import ConnectionClosed

from giftgraph.app import create_app
from giftgraph.config import Settings
from giftgraph.ids import encode_id
from giftgraph.live.subscriber import OVERFLOW, RESYNC, Subscriber
from tests.conftest import make_settings
from tests.integration.test_live import PROTOCOL, WsClient
from tests.support import WS_PROTOCOL


class Server:
    def __init__(self, base: str, app: Any) -> None:
        self.base = base
        self.app = app
        self.http = httpx.AsyncClient(base_url=base, timeout=10)

    @property
    def live(self) -> Any:
        return self.app.state.giftgraph.live

    async def gql(self, query: str, variables: dict[str, Any] | None = None,
                  token: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = await self.http.post("/graphql", json={"query": query,
                                                   "variables": variables or {}},
                                 headers=headers)
        body: dict[str, Any] = r.json()
        assert "errors" not in body, body
        return body["data"]  # type: ignore[no-any-return]

    async def signup(self, email: str) -> tuple[str, str]:
        d = await self.gql("mutation($i: SignUpInput!) { signUp(input: $i)"
                           " { accessToken user { id } } }",
                           {"i": {"familyName": "F", "email": email,
                                  "password": "long password", "displayName": email[:5]}})
        return d["signUp"]["accessToken"], d["signUp"]["user"]["id"]

    def subscribers(self) -> int:
        return self.live.hub.stats()["subscribers"]  # type: ignore[no-any-return]

    async def watchers(self, token: str, query: str, variables: dict[str, Any],
                       count: int) -> list[WsClient]:
        """`count` sockets of `token`, each subscribed to `query`, all of them listening."""
        clients = [await WsClient.connect(self.base, {"authorization": f"Bearer {token}"})
                   for _ in range(count)]
        listening = self.subscribers() + count
        for c in clients:
            await c.subscribe(query, variables)
        await self.listening(listening)
        return clients

    async def caught_up(self, within: float = 10) -> None:
        """Until every hub subscriber is caught up and idle, its subscribe step's reads
        (the replay after it started listening) done: the hub delivers to it directly
        (fast paths), or its stream waits for the next event (plain paths)."""
        deadline = time.monotonic() + within
        while any(sub.direct is None and not sub.waiting
                  for feed in self.live.hub.feeds.values() for sub in feed.subscribers):
            assert time.monotonic() < deadline, "a subscription never caught up"
            await asyncio.sleep(0.02)

    async def listening(self, subscribers: int, within: float = 10) -> None:
        """Until the hub holds `subscribers` subscriptions. A subscribe message has no reply
        until an event, and a slow machine may still be authorizing it when the test's
        mutation commits."""
        deadline = time.monotonic() + within
        while self.subscribers() < subscribers:
            assert time.monotonic() < deadline, (self.subscribers(), subscribers)
            await asyncio.sleep(0.02)


@asynccontextmanager
async def running(settings: Settings, **config: Any) -> AsyncIterator[Server]:
    """The app under uvicorn in this process (its hub and metrics readable), with the
    WebSocket options of `giftgraph serve` unless `config` says otherwise."""
    app = create_app(settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = {"ws": WS_PROTOCOL, "ws_max_size": settings.max_socket_message_bytes,
               "ws_per_message_deflate": settings.ws_per_message_deflate, **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on", **options))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 20
    while not server.started:
        assert not task.done(), "server exited during startup"
        assert time.monotonic() < deadline, "server did not start"
        await asyncio.sleep(0.05)
    srv = Server(f"http://127.0.0.1:{port}", app)
    try:
        yield srv
    finally:
        await srv.http.aclose()
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def live_server(database_url: str) -> AsyncIterator[Server]:
    async with running(make_settings(database_url, presence_heartbeat_seconds=0.3,
                                     presence_ttl_seconds=1.0)) as srv:
        yield srv


async def _item(srv: Server, token: str) -> tuple[str, str]:
    gl = (await srv.gql('mutation { createList(input: {name: "L", kind: IDEAS}) { id } }',
                        token=token))["createList"]["id"]
    item = (await srv.gql('mutation($l: ID!) { addListItem(listId: $l, input: {gift: '
                          '{name: "G", price: "10.00"}}) { id } }', {"l": gl},
                          token))["addListItem"]["id"]
    return gl, item


async def _list_watchers(srv: Server, email: str, count: int = 3
                         ) -> tuple[str, str, list[WsClient]]:
    """A new account's list item, and `count` sockets watching the list's events."""
    token, _ = await srv.signup(email)
    gl, item = await _item(srv, token)
    query = ("subscription($l: ID!) { listEvents(listId: $l)"
             " { seq kind node { ... on ListItem { status } } } }")
    return token, item, await srv.watchers(token, query, {"l": gl}, count)


async def _until_closed(client: WsClient) -> None:
    """Read until the server closes the socket (ConnectionClosed); each read within 2 s."""
    while True:
        await asyncio.wait_for(client.ws.recv(), 2)


async def _status(srv: Server, token: str, item: str, status: str) -> None:
    await srv.gql("mutation($i: ID!, $s: ItemStatus!) { setListItemStatus(id: $i, status: $s)"
                  " { id } }", {"i": item, "s": status}, token)


DASH = "subscription { dashboard { pipeline { idea selected purchased } activity { seq } } }"


async def test_a_recreated_dashboard_feed_never_reuses_an_old_snapshot_scope(
        live_server: Server) -> None:
    """A dashboard's nested fields resolve in a shared scope keyed by the snapshot's version,
    kept a moment after its last use. The feed stops with its last watcher; a new one within
    that moment must not get the old scope's rows back (the version is unique per process)."""
    srv = live_server
    token, _ = await srv.signup("dash-again@example.com")
    await _item(srv, token)
    query = "subscription { dashboard { recentIdeas { gift { id name } } } }"

    async def snapshot() -> dict[str, Any]:
        client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
        await client.subscribe(query)
        data = (await client.receive())["payload"]["data"]["dashboard"]
        await client.ws.close()
        deadline = time.monotonic() + 5
        while srv.live.dashboards.feeds:  # the feed stops with its last watcher
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        return data  # type: ignore[no-any-return]

    first = await snapshot()
    gift = first["recentIdeas"][0]["gift"]
    assert gift["name"] == "G"
    await srv.gql('mutation($g: ID!) { updateGift(id: $g, input: {name: "Renamed"}) { id } }',
                  {"g": gift["id"]}, token)
    again = await snapshot()  # well within the old scope's keep-alive
    assert again["recentIdeas"][0]["gift"] == {"id": gift["id"], "name": "Renamed"}


async def test_dashboard_snapshot_now_then_coalesced_and_shared(live_server: Server) -> None:
    srv = live_server
    token, _ = await srv.signup("dash@example.com")
    _, item = await _item(srv, token)
    watchers = [await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
                for _ in range(5)]
    for w in watchers:
        await w.subscribe(DASH)
    first = [(await w.receive())["payload"]["data"]["dashboard"] for w in watchers]
    first_at = time.monotonic()  # the last watcher's: the first one's came before
    assert all(f["pipeline"] == {"idea": 1, "selected": 0, "purchased": 0} for f in first)
    before = srv.live.dashboards.computations

    await _status(srv, token, item, "SELECTED")  # at once: still in the first 250 ms
    update = [(await w.receive(3))["payload"]["data"]["dashboard"] for w in watchers]
    assert time.monotonic() - first_at >= 0.2  # not sooner than the family's window allows
    assert all(u["pipeline"] == {"idea": 0, "selected": 1, "purchased": 0} for u in update)
    # Computed once for the family, not once per subscriber.
    assert srv.live.dashboards.computations - before == 1

    # A burst of changes: coalesced to at most one snapshot per 250 ms, ending current.
    started = time.monotonic()
    for status in ("PURCHASED", "SELECTED", "PURCHASED", "SELECTED", "PURCHASED"):
        await _status(srv, token, item, status)
    w = watchers[0]
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["pipeline"]["purchased"] != 1:
        seen.append((await w.receive(3))["payload"]["data"]["dashboard"])
    elapsed = time.monotonic() - started
    assert len(seen) <= int(elapsed / 0.25) + 2, (len(seen), elapsed)
    assert len(seen) < 5  # fewer snapshots than changes
    for w in watchers:
        await w.ws.close()


@pytest.mark.accel  # a fast path itself (giftgraph.accel)
async def test_idle_dashboards_hold_no_execution_state_and_share_each_render(
        live_server: Server) -> None:
    """A dashboard subscription parks once it has its first snapshot, as an event
    subscription does: its operation's extension hooks are freed (W5 memory); each next
    snapshot is rendered once for the family's watchers with one selection, and every one
    of them gets it; `complete` ends one of them."""
    from giftgraph.observability import OperationLog
    from giftgraph.schema.extensions import FormatErrors, RequestScope

    srv = live_server
    token, _ = await srv.signup("dash-park@example.com")
    _, item = await _item(srv, token)
    before = {k: _alive(k) for k in (RequestScope, FormatErrors, OperationLog)}
    watchers = [await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
                for _ in range(3)]
    ids = [await w.subscribe(DASH) for w in watchers]
    first = [(await w.receive())["payload"]["data"]["dashboard"] for w in watchers]
    assert all(f["pipeline"] == {"idea": 1, "selected": 0, "purchased": 0} for f in first)
    assert {k: _alive(k) for k in before} == before
    renders = srv.live.renderer.renders
    await _status(srv, token, item, "SELECTED")
    update = [await w.receive(3) for w in watchers]
    assert [u["id"] for u in update] == ids
    assert all(u["payload"]["data"]["dashboard"]["pipeline"]
               == {"idea": 0, "selected": 1, "purchased": 0} for u in update)
    assert srv.live.renderer.renders - renders == 1
    await watchers[0].ws.send(json.dumps({"id": ids[0], "type": "complete"}))
    await _status(srv, token, item, "PURCHASED")
    for w in watchers[1:]:
        assert (await w.receive(3))["payload"]["data"]["dashboard"]["pipeline"]["purchased"] == 1
    with pytest.raises(TimeoutError):
        await watchers[0].receive(0.5)
    # The plan keeps its latest snapshot only (a snapshot can be large: every person's
    # notes), not the window of renders an event plan keeps for late subscribers.
    (plan,) = [p for key, p in srv.live.renderer.plans.items() if key[1] == DASH]
    assert len(plan.results) == 1
    for w in watchers:
        await w.ws.close()


async def test_a_shared_dashboard_says_its_page_was_capped_as_the_operation_would(
        live_server: Server) -> None:
    """A dashboard rendered through the family's shared plan carries the operation's
    `extensions.pageSizeCapped` (a page asked for more than the maximum) in each result, as
    a subscription executed on its own does, the first snapshot and the next alike."""
    srv = live_server
    token, _ = await srv.signup("dash-capped@example.com")
    _, item = await _item(srv, token)
    await srv.gql('mutation { createPerson(input: {name: "P"}) { id } }', None, token)
    client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    await client.subscribe("subscription { dashboard { people { person { "
                           "giftHistory(first: 1000) { totalCount } } } } }")
    capped = {"pageSizeCapped": {"maximum": srv.app.state.giftgraph.settings.max_page_size,
                                 "fields": ["giftHistory"]}}
    assert (await client.receive(3))["payload"]["extensions"] == capped
    await _status(srv, token, item, "SELECTED")
    assert (await client.receive(3))["payload"]["extensions"] == capped
    await client.ws.close()


@pytest.mark.parametrize("failure", [RuntimeError, asyncio.CancelledError])
async def test_a_dashboard_that_fails_sends_its_error_then_completes(
        live_server: Server, monkeypatch: pytest.MonkeyPatch, failure: type[BaseException]
) -> None:
    """A dashboard whose snapshot can't be computed ends as a failed source stream does:
    one `next` with the formatted error, then `complete`; the socket stays open. So does
    one whose snapshot raised a CancelledError its own task was not asked for (a load
    shared with a cancelled reader, before loads were shielded): it ended the subscription
    without a word, and the page's overview stopped following changes."""
    from giftgraph.live.dashboard import DashboardFeeds

    srv = live_server
    token, _ = await srv.signup("dash-fails@example.com")
    gl, item = await _item(srv, token)

    async def fail(self: DashboardFeeds, feed: Any) -> Any:
        raise failure("no snapshot")

    monkeypatch.setattr(DashboardFeeds, "_compute", fail)
    client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    bad = await client.subscribe(DASH)
    first, second = await client.receive(), await client.receive()
    assert first["id"] == bad
    assert first["type"] == "next"
    assert first["payload"]["data"] is None
    [error] = first["payload"]["errors"]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert error["extensions"]["traceId"]
    assert second == {"id": bad, "type": "complete"}
    await _subscribe_and_change(srv, client, token, gl, item)
    await client.ws.close()


async def test_presence_join_leave_and_disconnect(live_server: Server) -> None:
    srv = live_server
    ann, ann_id = await srv.signup("ann@example.com")
    d = await srv.gql('mutation($i: RegisterUserInput!) { registerUser(input: $i) { id } }',
                      {"i": {"email": "bob@example.com", "password": "long password",
                             "displayName": "Bob"}}, ann)
    bob_id = d["registerUser"]["id"]
    bob = (await srv.gql('mutation { login(email: "bob@example.com", password: "long password")'
                         " { accessToken } }"))["login"]["accessToken"]
    gl, _ = await _item(srv, ann)
    topic = f"list:{gl}"
    query = "subscription($t: String!) { presence(topic: $t) { topic viewers { id } } }"

    a = await WsClient.connect(srv.base, {"authorization": f"Bearer {ann}"})
    await a.subscribe(query, {"t": topic})

    async def viewers_of(client: WsClient, want: set[str]) -> None:
        while True:
            p = (await client.receive(3))["payload"]["data"]["presence"]
            assert p["topic"] == topic
            if {v["id"] for v in p["viewers"]} == want:
                return

    await viewers_of(a, {ann_id})
    b = await WsClient.connect(srv.base, {"authorization": f"Bearer {bob}"})
    await b.subscribe(query, {"t": topic})
    await viewers_of(b, {ann_id, bob_id})
    await viewers_of(a, {ann_id, bob_id})
    await b.ws.close()  # a disconnect counts as leaving
    await viewers_of(a, {ann_id})

    # Another family can't watch (or learn about) this topic.
    eve, _ = await srv.signup("eve@example.com")
    e = await WsClient.connect(srv.base, {"authorization": f"Bearer {eve}"})
    await e.subscribe(query, {"t": topic})
    msg = await e.receive()
    assert msg["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    await a.ws.close()
    await e.ws.close()


async def test_remote_viewers_expire_without_heartbeats(live_server: Server) -> None:
    srv = live_server
    token, me = await srv.signup("solo@example.com")
    a = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    await a.subscribe("subscription { presence(topic: \"family\") { viewers { id } } }")
    assert [v["id"] for v in (await a.receive())["payload"]["data"]["presence"]["viewers"]] \
        == [me]
    # A crashed instance: it announced a viewer once and then went silent.
    ghost = "00000000-0000-0000-0000-00000000abcd"
    family = srv.live.presence.rooms and next(iter(srv.live.presence.rooms))[0]
    await srv.live.hub.broadcast.publish(
        f"gg:{family}:presence:family",
        json.dumps({"presence": "crashed-instance", "users": [ghost], "ttl": 1.0}))
    # The ghost user is not in this family's users, so it resolves to no User; the
    # viewer set still changes (and changes back when the heartbeat expires).
    room = srv.live.presence.rooms[(family, "family")]
    deadline = time.monotonic() + 3
    while "crashed-instance" not in room.remote:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    while "crashed-instance" in room.remote:
        assert time.monotonic() < deadline + 3, "a silent instance's viewers never expired"
        await asyncio.sleep(0.1)
    await a.ws.close()


async def test_deactivated_member_socket_closes_4403_within_a_second(
    live_server: Server,
) -> None:
    """Deactivated, deleted, or its password changed: the member's open sockets close."""
    srv = live_server
    admin, _ = await srv.signup("boss@example.com")
    d = await srv.gql('mutation($i: RegisterUserInput!) { registerUser(input: $i) { id } }',
                      {"i": {"email": "kid@example.com", "password": "long password",
                             "displayName": "Kid"}}, admin)
    kid_id = d["registerUser"]["id"]
    kid = (await srv.gql('mutation { login(email: "kid@example.com", password: "long password")'
                         " { accessToken } }"))["login"]["accessToken"]
    for action in ("password", "deactivate", "delete"):
        ws = await WsClient.connect(srv.base, {"authorization": f"Bearer {kid}"})
        await ws.subscribe("subscription { familyEvents { seq } }")
        await asyncio.sleep(0.2)
        if action == "password":
            await srv.gql('mutation($id: ID!) { updateUser(id: $id, input: {password: '
                          '"long password 2"}) { id } }', {"id": kid_id}, admin)
        elif action == "deactivate":
            await srv.gql("mutation($id: ID!) { updateUser(id: $id, input: {isActive: false})"
                          " { id } }", {"id": kid_id}, admin)
        else:
            await srv.gql("mutation($id: ID!) { deleteUser(id: $id) }", {"id": kid_id}, admin)
        started = time.monotonic()  # the change is committed: its answer is in
        with pytest.raises(ConnectionClosed) as closed:
            await _until_closed(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4403
        assert time.monotonic() - started < 1.0
        if action == "deactivate":  # reactivate for the delete round
            await srv.gql("mutation($id: ID!) { updateUser(id: $id, input: {isActive: true})"
                          " { id } }", {"id": kid_id}, admin)
        if action != "delete":  # a new token for the next round (the old one has ended)
            kid = (await srv.gql('mutation { login(email: "kid@example.com", password: '
                                 '"long password 2") { accessToken } }'))["login"]["accessToken"]


async def test_a_query_over_the_socket_is_answered_from_the_result_cache(
        live_server: Server) -> None:
    """A repeated query over graphql-transport-ws is a cache hit, written by the socket's
    JSON encoder exactly as HTTP answers it; after a change, never a stale one (a socket
    authenticates once, so each of its operations reads the family's version itself)."""
    srv = live_server
    token, _ = await srv.signup("cached-socket@example.com")
    _, item = await _item(srv, token)
    query = "query Read { lists(first: 5) { edges { node { name items(first: 5)" \
            " { edges { node { status gift { name price } } } } } } } }"
    expected = await srv.gql(query, token=token)
    registry = srv.app.state.giftgraph.metrics.registry

    def hits() -> float:
        return registry.get_sample_value("giftgraph_result_cache_lookups_total",  # type: ignore[no-any-return]
                                         {"outcome": "hit"}) or 0.0

    before = hits()
    client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    for _ in range(2):
        op = await client.subscribe(query)
        message = await client.receive()
        assert message == {"id": op, "type": "next", "payload": {"data": expected}}
        assert (await client.receive()) == {"id": op, "type": "complete"}
    assert hits() - before == 2  # HTTP stored it; both socket reads hit
    await _status(srv, token, item, "SELECTED")
    op = await client.subscribe(query)
    data = (await client.receive())["payload"]["data"]
    assert data["lists"]["edges"][0]["node"]["items"]["edges"][0]["node"]["status"] \
        == "SELECTED"
    assert hits() - before == 2  # a miss
    await client.ws.close()


@pytest.mark.accel  # a fast path itself (giftgraph.accel)
async def test_socket_queries_are_compiled_and_me_is_the_connections_user(
        live_server: Server) -> None:
    """A query over the socket runs as one compiled statement, as over HTTP. `me` on a
    socket is the user its connection_init authenticated (the executor answers it so),
    not the row as it is now: a query with `me` is the executor's there."""
    srv = live_server
    token, user_id = await srv.signup("compiled-socket@example.com")
    registry = srv.app.state.giftgraph.metrics.registry

    def runs(outcome: str) -> float:
        return registry.get_sample_value("giftgraph_compiled_reads_total",  # type: ignore[no-any-return]
                                         {"outcome": outcome}) or 0.0

    client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    await srv.gql("mutation($id: ID!) { updateUser(id: $id, input: {displayName: \"Renamed\"})"
                  " { id } }", {"id": user_id}, token)
    compiled, executor = runs("compiled"), runs("executor")
    op = await client.subscribe("{ users { edges { node { displayName } } } }")
    assert (await client.receive()) == {"id": op, "type": "next", "payload": {"data": {
        "users": {"edges": [{"node": {"displayName": "Renamed"}}]}}}}
    assert (await client.receive()) == {"id": op, "type": "complete"}
    assert runs("compiled") == compiled + 1
    op = await client.subscribe("{ me { displayName } users { totalCount } }")
    assert (await client.receive()) == {"id": op, "type": "next", "payload": {"data": {
        "me": {"displayName": "compi"}, "users": {"totalCount": 1}}}}
    assert (await client.receive()) == {"id": op, "type": "complete"}
    assert runs("executor") == executor + 1
    assert runs("compiled") == compiled + 1
    await client.ws.close()


async def test_closing_a_socket_releases_everything(live_server: Server) -> None:
    srv = live_server
    token, _ = await srv.signup("leak@example.com")
    gl, item = await _item(srv, token)
    await asyncio.sleep(0.3)
    baseline = srv.live.hub.stats()
    tasks_before = len(asyncio.all_tasks())
    clients = []
    for _ in range(3):
        c = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
        await c.subscribe("subscription($l: ID!) { listEvents(listId: $l) { seq } }", {"l": gl})
        await c.subscribe("subscription { familyEvents { seq } }")
        await c.subscribe(DASH)
        clients.append(c)
    # Six event subscriptions, and the family's dashboard feed listening for the three
    # dashboards.
    await srv.listening(baseline["subscribers"] + 7)
    await _status(srv, token, item, "SELECTED")
    for c in clients:
        kinds: set[str] = set()
        while len(kinds) < 3:
            message = await c.receive(5)
            assert message["type"] == "next", (message, kinds)
            kinds.add(message["id"])
    during = srv.live.hub.stats()
    assert during["subscribers"] >= baseline["subscribers"] + 6
    for c in clients:
        await c.ws.close()
    deadline = time.monotonic() + 5
    while True:
        now = srv.live.hub.stats()
        done = (now["channels"] == baseline["channels"]
                and now["subscribers"] == baseline["subscribers"]
                and now["broadcaster_queues"] == baseline["broadcaster_queues"]
                and not srv.live.dashboards.feeds
                and len(asyncio.all_tasks()) <= tasks_before)
        if done:
            break
        assert time.monotonic() < deadline, (baseline, now, len(asyncio.all_tasks()),
                                             tasks_before)
        await asyncio.sleep(0.1)


async def test_subscriptions_per_connection_are_capped(live_server: Server) -> None:
    srv = live_server
    token, _ = await srv.signup("cap@example.com")
    c = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    cap = srv.app.state.giftgraph.settings.max_subscriptions_per_connection
    for _ in range(cap):
        await c.subscribe("subscription { familyEvents { seq } }")
    await c.subscribe("subscription { familyEvents { seq } }")
    msg = await c.receive()
    assert msg["type"] == "error", msg
    assert msg["id"] == str(cap + 1), msg
    await c.ws.close()


async def test_connection_init_timeout_closes_4408(database_url: str) -> None:
    settings = make_settings(database_url, ws_connection_init_timeout_seconds=0.5)
    app = create_app(settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn's Server has a flag, no event
        await asyncio.sleep(0.05)
    try:
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/graphql",
                                      subprotocols=[PROTOCOL])  # type: ignore[list-item]
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 3)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4408
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


def test_slow_subscriber_overflows_instead_of_growing() -> None:
    sub = Subscriber(size=3)
    for i in range(10):
        sub.offer({"seq": i})
    items = list(sub.items)
    assert items[:3] == [{"seq": 0}, {"seq": 1}, {"seq": 2}]
    assert items[3] is OVERFLOW
    assert len(items) == 4  # bounded, and told to resume
    sub2 = Subscriber(size=1)
    sub2.offer({"seq": 1})
    sub2.offer(RESYNC)  # a resync marker is never the thing that overflows
    assert not sub2.overflowed


async def test_nested_event_fields_load_once_per_event_not_per_subscriber(
    live_server: Server,
) -> None:
    from sqlalchemy import event as sa_event

    srv = live_server
    token, _ = await srv.signup("shared@example.com")
    gl, item = await _item(srv, token)
    engine = srv.app.state.giftgraph.db().engine.sync_engine
    query = ("subscription($l: ID!) { listEvents(listId: $l) { seq actor { displayName }"
             " node { ... on ListItem { status gift { name } list { name owner { email } } } }"
             " } }")
    counts = {}
    for n, status in ((1, "SELECTED"), (6, "PURCHASED")):
        clients = await srv.watchers(token, query, {"l": gl}, n)
        await srv.caught_up()  # no subscribe step's statement is counted below
        statements: list[str] = []

        def before(_c: Any, _cur: Any, stmt: str, *_a: Any,
                   statements: list[str] = statements) -> None:
            statements.append(stmt)

        # Counted: the mutation (the same each round) plus the delivery to n subscribers.
        sa_event.listen(engine, "before_cursor_execute", before)
        try:
            await _status(srv, token, item, status)
            events = [(await c.receive(3))["payload"]["data"]["listEvents"] for c in clients]
            await asyncio.sleep(0.2)
        finally:
            sa_event.remove(engine, "before_cursor_execute", before)
        assert any("FROM gifts" in s for s in statements)  # nested fields were loaded
        assert all(e["node"]["gift"] == {"name": "G"} for e in events)
        assert all(e["node"]["list"]["owner"]["email"] == "shared@example.com" for e in events)
        counts[n] = len(statements)
        for c in clients:
            await c.ws.close()
        await asyncio.sleep(2.5)  # let the shared scope of that event expire
    assert counts[6] == counts[1], counts


@dataclass
class InProcess:
    """A lifespan-started app (no server) and a stream context for one signed-up member."""

    state: Any
    account: Any
    ctx: Any


@asynccontextmanager
async def in_process(database_url: str, family: str, **settings: Any) -> AsyncIterator[InProcess]:
    from sqlalchemy import select

    from giftgraph.context import Context
    from giftgraph.db import models as m
    from tests.conftest import GQL, sign_up

    app = create_app(make_settings(database_url, **settings))
    async with app.router.lifespan_context(app):
        state = app.state.giftgraph
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            account = await sign_up(GQL(http), family)
            async with state.db().sessions() as session:
                user = await session.scalar(select(m.User).where(m.User.email == account.email))
            assert user is not None
            ctx = Context(settings=state.settings, database=state.db(), request=None,  # type: ignore[arg-type]
                          live=state.live, user=user)
            yield InProcess(state, account, ctx)


async def test_overflowing_stream_ends_with_resume_error(database_url: str) -> None:
    from giftgraph.live.streams import ResumeRequired, event_stream

    async with in_process(database_url, "Slow family", subscriber_queue_size=2) as env:
        state, account, ctx = env.state, env.account, env.ctx
        got_first, go_on = asyncio.Event(), asyncio.Event()
        delivered: list[int] = []

        async def slow_subscriber() -> None:
            async for event in event_stream(ctx, state.live.hub, state.live.scopes,
                                            "family", None):
                delivered.append(event.seq)
                if len(delivered) == 1:
                    got_first.set()
                    await go_on.wait()  # reads nothing while changes pour in

        consumer = asyncio.create_task(slow_subscriber())
        await asyncio.sleep(0.2)  # listening
        for i in range(6):
            await account.client(
                f'mutation {{ createPerson(input: {{name: "P{i}"}}) {{ id }} }}')
            if i == 0:
                await asyncio.wait_for(got_first.wait(), 3)
        go_on.set()
        with pytest.raises(ResumeRequired) as err:
            await asyncio.wait_for(consumer, 5)
        # Bounded: the first event, then what fit in the queue, then "resume with since".
        assert len(delivered) == 3
        assert err.value.extensions["resumeSince"] == str(delivered[-1])
        assert err.value.code == "RATE_LIMITED"


async def test_a_burst_of_subscription_starts_reads_the_latest_seq_once(
        database_url: str) -> None:
    """Subscriptions that start together without `since` share one read of where to start
    (not a pooled connection each, which every other family's requests would queue
    behind) and read nothing of the log (they listen before that read), and each still
    starts after what committed before it: only later events."""
    from sqlalchemy import event

    from giftgraph.live.streams import event_stream

    async with in_process(database_url, "Burst family") as env:
        state, account, ctx = env.state, env.account, env.ctx
        await account.client('mutation { createPerson(input: {name: "Before"}) { id } }')
        reads: list[str] = []
        pages: list[str] = []

        def count(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
            if "max(events.seq)" in statement:
                reads.append(statement)
            elif "FROM events" in statement:
                pages.append(statement)

        engine = state.db().engine.sync_engine
        event.listen(engine, "before_cursor_execute", count)
        n = 40
        received: list[list[str]] = [[] for _ in range(n)]

        async def subscriber(k: int) -> None:
            async for row in event_stream(ctx, state.live.hub, state.live.scopes,
                                          "family", None):
                received[k].append(row.payload["name"])

        tasks = [asyncio.create_task(subscriber(k)) for k in range(n)]
        try:
            deadline = time.monotonic() + 10
            # listening first, then where to start: started once no read is under way
            while state.live.hub.stats()["subscribers"] < n or state.live.scopes.starting():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert 1 <= len(reads) <= 2, len(reads)
            # ... and nothing of the log: every later event is heard, none is read back
            assert pages == []
            await account.client('mutation { createPerson(input: {name: "After"}) { id } }')
            while any(not r for r in received):
                assert time.monotonic() < deadline, received
                await asyncio.sleep(0.02)
            assert received == [["After"]] * n
        finally:
            event.remove(engine, "before_cursor_execute", count)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_starts_sharing_a_read_end_when_cancelled_together(database_url: str) -> None:
    """Cancelled while they share a read (a socket closed during its subscribe burst), the
    reader and the starts that joined it all end: none takes the read's cancellation for
    a failed read and reads again."""
    async with in_process(database_url, "Cancelled burst family") as env:
        scopes, family_id = env.state.live.scopes, env.ctx.user.family_id
        for _ in range(5):
            tasks = [asyncio.create_task(scopes.latest(family_id)) for _ in range(20)]
            await asyncio.sleep(0)  # the first is reading, the others joined it
            for t in tasks:
                t.cancel()
            done, pending = await asyncio.wait(tasks, timeout=3)
            assert not pending
            assert all(t.cancelled() for t in done)
        assert await scopes.latest(family_id) >= 0  # and the next start reads anew


@pytest.mark.accel  # a fast path itself (giftgraph.accel)
async def test_a_held_selection_is_shared_past_the_recently_used_plans(
        live_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A family's subscribers share their selection's plan however many other plans were
    made between their subscribes (W5: thousands of families subscribing at once), for as
    long as one of them holds it."""
    from giftgraph.accel import render

    monkeypatch.setattr(render, "PLANS_KEPT", 1)
    srv = live_server
    token, _ = await srv.signup("render-held@example.com")
    gl, item = await _item(srv, token)
    same = "subscription($l: ID!) { listEvents(listId: $l) { seq kind } }"
    other = "subscription($l: ID!) { listEvents(listId: $l) { seq } }"
    clients = [await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
               for _ in range(3)]
    listening = srv.subscribers()
    for client, query in zip(clients, (same, other, same), strict=True):
        await client.subscribe(query, {"l": gl})
        listening += 1
        await srv.listening(listening)  # one after another: `other` evicts `same`'s plan
    renderer = srv.live.renderer
    assert len(renderer.plans) == 1
    before = renderer.renders
    await _status(srv, token, item, "SELECTED")
    got = [(await c.receive())["payload"]["data"]["listEvents"] for c in clients]
    assert got[0] == got[2]
    assert got[0]["kind"] == "STATUS_CHANGED"
    assert renderer.renders - before == 2  # `same` once for its two subscribers
    for c in clients:
        await c.ws.close()


@pytest.mark.accel  # a fast path itself (giftgraph.accel)
async def test_each_event_is_rendered_once_per_selection(live_server: Server) -> None:
    """Subscribers sharing a selection get the same bytes from one execution per event;
    a different selection (or a variable it uses) is rendered separately, and a
    second family never shares the first one's renders."""
    srv = live_server
    token, _ = await srv.signup("render@example.com")
    other, _ = await srv.signup("render-other@example.com")
    gl, item = await _item(srv, token)
    other_gl, other_item = await _item(srv, other)
    same = ("subscription S($l: ID!, $since: String) { listEvents(listId: $l, since: $since)"
            " { seq kind node { ... on ListItem { status gift { name } } } } }")
    aliased = ("subscription($l: ID!, $n: Int) { listEvents(listId: $l) { seq"
               " n: node { ... on ListItem { list { items(first: $n) { totalCount } } } } } }")
    clients = [await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
               for _ in range(5)]
    listening = srv.subscribers() + 6
    ids = [await clients[0].subscribe(same, {"l": gl, "since": None}),
           # the same selection; root-field variables (here: none for since) don't matter
           await clients[1].subscribe(same, {"l": gl}),
           await clients[2].subscribe(same, {"l": gl}),
           await clients[3].subscribe(aliased, {"l": gl, "n": 1}),
           # a variable the selection itself uses makes a selection of its own
           await clients[4].subscribe(aliased, {"l": gl, "n": 2})]
    stranger = await WsClient.connect(srv.base, {"authorization": f"Bearer {other}"})
    await stranger.subscribe(same, {"l": other_gl})
    await srv.listening(listening)
    renderer = srv.live.renderer
    before = renderer.renders

    await _status(srv, token, item, "SELECTED")
    raw = []
    for c in clients:
        message = json.loads(await asyncio.wait_for(c.ws.recv(), 5))
        assert message["type"] == "next", message
        raw.append(message)
    assert renderer.renders - before == 3  # `same` once, `aliased` once per value of $n
    shared = [m["payload"] for m in raw[:3]]
    assert shared[0] == shared[1] == shared[2]
    assert shared[0]["data"]["listEvents"]["node"] == {"status": "SELECTED",
                                                       "gift": {"name": "G"}}
    assert raw[3]["payload"]["data"]["listEvents"]["n"] == {"list": {"items": {"totalCount": 1}}}
    assert [m["id"] for m in raw] == ids

    await _status(srv, other, other_item, "SELECTED")  # the other family renders its own
    message = json.loads(await asyncio.wait_for(stranger.ws.recv(), 5))
    assert message["payload"]["data"]["listEvents"]["node"]["status"] == "SELECTED"
    assert renderer.renders - before == 4
    for c in [*clients, stranger]:
        await c.ws.close()


async def test_each_event_names_the_previous_one_on_its_topic(database_url: str) -> None:
    """`record` writes one row per topic, in the topics' order, each naming the previous
    event on its own topic, also when one transaction records twice; what it returns is
    exactly what the table holds."""
    from sqlalchemy import select

    from giftgraph.db import models as m
    from giftgraph.events import record

    async with in_process(database_url, "Prev family") as env:
        state, user = env.state, env.ctx.user
        async with state.db().sessions() as session:
            recorded = []
            for name in ("a", "b"):
                person = m.Person(family_id=user.family_id, name=name)
                session.add(person)
                recorded.append(await record(
                    session, family_id=user.family_id, actor_id=user.id,
                    kind=m.EventKind.ADDED, entity=person, topics=[f"t:{name}", "t:shared"]))
            await session.commit()
            first, second = recorded
            assert [e.topic for e in first] == ["t:a", "t:shared", "family"]
            assert [e.topic for e in second] == ["t:b", "t:shared", "family"]
            seqs = [e.seq for e in first + second]
            assert seqs == sorted(seqs)
            assert len(set(seqs)) == 6
            assert [e.prev_seq for e in first[:2]] == [0, 0]  # new topics
            assert first[2].prev_seq < first[0].seq  # the family's earlier events
            assert [e.prev_seq for e in second] == [0, first[1].seq, first[2].seq]
            stored = {e.seq: e for e in (await session.scalars(
                select(m.Event).where(m.Event.seq.in_(seqs)))).all()}
            for e in first + second:
                row = stored[e.seq]
                assert (row.topic, row.kind, row.entity_type, row.entity_id, row.actor_id,
                        row.at, row.payload) == (e.topic, e.kind, e.entity_type, e.entity_id,
                                                 e.actor_id, e.at, e.payload)
            assert second[0].payload["name"] == "b"


async def test_events_crossing_in_the_broker_are_fetched_in_order(database_url: str) -> None:
    """Two instances may publish through one broker in another order than they committed:
    a subscriber that gets the later event first fetches the earlier one from the log, and
    the late one is then a duplicate, dropped."""
    from giftgraph.db import models as m
    from giftgraph.db.session import take_pending
    from giftgraph.events import record
    from giftgraph.live.streams import event_stream

    async with in_process(database_url, "Crossing family") as env:
        state, ctx, user = env.state, env.ctx, env.ctx.user
        received: list[int] = []

        async def subscriber() -> None:
            async for event in event_stream(ctx, state.live.hub, state.live.scopes,
                                            "family", None):
                received.append(event.seq)

        async def commit_unpublished(name: str) -> list[m.Event]:
            async with state.db().sessions() as session:
                person = m.Person(family_id=user.family_id, name=name)
                session.add(person)
                await record(session, family_id=user.family_id, actor_id=user.id,
                             kind=m.EventKind.ADDED, entity=person, topics=[])
                await session.commit()
                return take_pending(session)

        consumer = asyncio.create_task(subscriber())
        try:
            await asyncio.sleep(0.2)  # listening
            first = await commit_unpublished("first")
            second = await commit_unpublished("second")
            assert second[0].prev_seq == first[0].seq
            await state.live.hub.publish(second)  # the later one arrives first
            deadline = time.monotonic() + 5
            while len(received) < 2:
                assert time.monotonic() < deadline, received
                await asyncio.sleep(0.05)
            await state.live.hub.publish(first)  # the earlier one, late: a duplicate now
            await asyncio.sleep(0.3)
            assert received == [first[0].seq, second[0].seq]
        finally:
            consumer.cancel()


@pytest.mark.accel  # a fast path itself (giftgraph.accel)
async def test_a_backlog_of_events_reaches_each_socket_in_one_write(
        live_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events that find others of their channel already waiting (they came faster than one
    fan-out takes) are fanned out together: every subscriber gets all of them, in order,
    with one write per socket."""
    from giftgraph.accel import wire

    srv = live_server
    token, item, clients = await _list_watchers(srv, "backlog@example.com")
    hub = srv.app.state.giftgraph.live.hub
    held: list[Any] = []

    async def hold(events: list[Any]) -> None:
        held.extend(events)

    with monkeypatch.context() as patched:
        patched.setattr(hub, "publish", hold)  # commit three changes, publish none yet
        for status in ("SELECTED", "PURCHASED", "RECEIVED"):
            await _status(srv, token, item, status)
    writes: list[int] = []
    write_texts, put_many = wire.Wire.write_texts, wire.Wire.put_many

    def spy(self: Any, head: bytes, bodies: list[bytes], tail: bytes = b"") -> bool:
        writes.append(len(bodies))
        return write_texts(self, head, bodies, tail)

    def spy_loop(self: Any, head: bytes, bodies: list[bytes]) -> bool:  # the hub's loop
        writes.append(len(bodies))
        return put_many(self, head, bodies)

    monkeypatch.setattr(wire.Wire, "write_texts", spy)
    monkeypatch.setattr(wire.Wire, "put_many", spy_loop)
    backlog, written = hub.backlog_events, wire.written
    await hub.publish(held)  # all at once: the channel's fan-out finds them waiting
    for c in clients:
        got = [(await c.receive())["payload"]["data"]["listEvents"] for _ in range(3)]
        assert [g["node"]["status"] for g in got] == ["SELECTED", "PURCHASED", "RECEIVED"]
        seqs = [int(g["seq"]) for g in got]
        assert seqs == sorted(set(seqs))
    assert hub.backlog_events - backlog == 3
    assert writes == [3, 3, 3]  # one write per socket for the three events
    assert wire.written - written == 9
    await _status(srv, token, item, "PURCHASED")  # and single events as before
    for c in clients:
        assert (await c.receive())["payload"]["data"]["listEvents"]["node"]["status"] \
            == "PURCHASED"
        await c.ws.close()


@pytest.mark.accel  # a fast path itself (giftgraph.accel)
async def test_the_connection_ack_is_written_pre_framed_or_through_the_asgi_send(
        live_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every socket of a reconnect herd gets a `connection_ack`: written pre-framed onto its
    transport, the same message as Strawberry's; when the socket can't take it now, through
    the ASGI send."""
    from giftgraph.accel import wire

    srv = live_server
    token, _ = await srv.signup("ack@example.com")
    before = wire.written
    client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    assert wire.written - before == 1  # WsClient.connect checked the message itself
    await client.ws.close()
    monkeypatch.setattr(wire, "HIGH_WATER", -1)  # no socket can take a frame "now"
    client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    assert wire.written - before == 1
    await client.ws.close()


@pytest.mark.accel  # a fast path itself (giftgraph.accel)
async def test_events_are_written_pre_framed_and_busy_sockets_fall_back(
        live_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fan-out writes each subscriber's `next` frame onto its socket itself; a socket
    that can't take it now (here: every socket, by a zero buffer allowance) gets its events
    through the subscription's own task instead, all of them, in order."""
    from giftgraph.accel import wire

    srv = live_server
    token, item, clients = await _list_watchers(srv, "wire@example.com")

    async def statuses(count: int) -> list[list[str]]:
        got = []
        for c in clients:
            seen = []
            for _ in range(count):
                message = json.loads(await asyncio.wait_for(c.ws.recv(), 5))
                assert message["type"] == "next", message
                seen.append(message["payload"]["data"]["listEvents"]["node"]["status"])
            got.append(seen)
        return got

    registry = srv.app.state.giftgraph.metrics.registry

    def delivered() -> float:
        return registry.get_sample_value("giftgraph_events_delivered_total") or 0.0

    before, counted = wire.written, delivered()
    await _status(srv, token, item, "SELECTED")
    assert await statuses(1) == [["SELECTED"]] * 3
    assert wire.written - before == 3  # pre-framed, one write per subscriber
    assert delivered() - counted == 3

    monkeypatch.setattr(wire, "HIGH_WATER", -1)  # no socket can take a frame "now"
    before = wire.written
    for status in ("PURCHASED", "RECEIVED", "PURCHASED"):
        await _status(srv, token, item, status)
    assert await statuses(3) == [["PURCHASED", "RECEIVED", "PURCHASED"]] * 3
    assert wire.written == before  # every one of them went through the ASGI send
    assert delivered() - counted == 3 + 9

    monkeypatch.setattr(wire, "HIGH_WATER", 256 * 1024)  # and back to the direct path
    await _status(srv, token, item, "RECEIVED")
    assert await statuses(1) == [["RECEIVED"]] * 3
    assert wire.written - before == 3
    for c in clients:
        await c.ws.close()


def _alive(kind: type) -> int:
    import gc

    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is kind)


@pytest.mark.accel  # a fast path itself (giftgraph.accel)
async def test_idle_event_subscriptions_hold_no_execution_state(live_server: Server) -> None:
    """An event subscription parks once it has started: its operation's extension hooks
    and graphql-core context are freed (W3 memory), and it still delivers, counts in the
    gauge, and completes on request."""
    from giftgraph.observability import OperationLog
    from giftgraph.schema.extensions import FormatErrors, RequestScope

    srv = live_server
    token, _ = await srv.signup("park@example.com")
    gl, item = await _item(srv, token)
    query = "subscription($l: ID!) { listEvents(listId: $l) { seq kind } }"
    before = {k: _alive(k) for k in (RequestScope, FormatErrors, OperationLog)}
    client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    listening = srv.subscribers() + 5
    ids = [await client.subscribe(query, {"l": gl}) for _ in range(5)]
    await srv.listening(listening)
    await srv.caught_up()
    # Each subscription's operation ran through every extension; none is held now.
    assert {k: _alive(k) for k in before} == before
    await srv.gql('mutation($i: ID!) { setListItemStatus(id: $i, status: SELECTED) { id } }',
                  {"i": item}, token)
    got = [await client.receive() for _ in ids]
    assert sorted(m["id"] for m in got) == sorted(ids)
    assert all(m["type"] == "next"
               and m["payload"]["data"]["listEvents"]["kind"] == "STATUS_CHANGED" for m in got)
    assert srv.app.state.giftgraph.metrics.subscriptions_active._value.get() >= 5
    await client.ws.send(json.dumps({"id": ids[0], "type": "complete"}))
    await srv.listening(listening - 1)
    await client.ws.close()
    await srv.listening(listening - 5)


async def test_event_subscription_error_is_sent_then_completed(live_server: Server) -> None:
    """A parked subscription that fails (here: a `since` that is no seq) ends as Strawberry
    ends a failed source stream: one `next` with the formatted error, then `complete`;
    the socket stays open for the next operation."""
    srv = live_server
    token, _ = await srv.signup("park-error@example.com")
    gl, item = await _item(srv, token)
    client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    bad = await client.subscribe("subscription($l: ID!) { listEvents(listId: $l, since: \"x\")"
                                 " { seq } }", {"l": gl})
    first, second = await client.receive(), await client.receive()
    assert first["id"] == bad
    assert first["type"] == "next"
    assert first["payload"]["data"] is None
    [error] = first["payload"]["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["fields"] == {"since": "must be the seq of an event"}
    assert error["extensions"]["traceId"]
    assert "locations" not in error
    assert "path" not in error
    assert second == {"id": bad, "type": "complete"}
    await _subscribe_and_change(srv, client, token, gl, item)
    await client.ws.close()


async def test_since_must_be_an_ascii_seq_within_bigint(live_server: Server) -> None:
    """`since` values that look numeric to Python but are no seq the Event table can hold
    (superscripts, other scripts' digits, past bigint) are BAD_USER_INPUT, not a server
    error; the largest bigint is a seq, but of no event yet: refused too."""
    srv = live_server
    token, _ = await srv.signup("since-range@example.com")
    gl, _ = await _item(srv, token)
    client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    query = "subscription($l: ID!, $s: String) { listEvents(listId: $l, since: $s) { seq } }"
    for since in ["\u00b2", "\u0661\u0662\u0663", str(2**63), "9" * 19, "", "-1", " 1"]:
        op = await client.subscribe(query, {"l": gl, "s": since})
        first, second = await client.receive(), await client.receive()
        assert first["id"] == op, since
        [error] = first["payload"]["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", (since, error)
        assert error["extensions"]["fields"] == {"since": "must be the seq of an event"}
        assert second == {"id": op, "type": "complete"}
    # 2**63 - 1 is a seq, past the family's newest event: no event of this log.
    op = await client.subscribe(query, {"l": gl, "s": str(2**63 - 1)})
    first, second = await client.receive(), await client.receive()
    [error] = first["payload"]["errors"]
    assert error["extensions"]["fields"] == {
        "since": "no such event: refetch, then subscribe without since"}
    assert second == {"id": op, "type": "complete"}
    await client.ws.close()


async def _subscribe_and_change(srv: Server, client: WsClient, token: str, gl: str,
                                item: str) -> None:
    """Subscribe to the list's event kinds, change the item's status, and get that event."""
    listening = srv.subscribers() + 1
    op = await client.subscribe("subscription($l: ID!) { listEvents(listId: $l) { kind } }",
                                {"l": gl})
    await srv.listening(listening)
    await srv.gql('mutation($i: ID!) { setListItemStatus(id: $i, status: SELECTED) { id } }',
                  {"i": item}, token)
    changed = {"data": {"listEvents": {"kind": "STATUS_CHANGED"}}}
    assert await client.receive() == {"id": op, "type": "next", "payload": changed}


@pytest.mark.accel  # a fast path itself (giftgraph.accel)
async def test_graphql_socket_keeps_no_handshake_and_other_paths_still_route(
        live_server: Server) -> None:
    """A GraphQL socket goes straight to the GraphQL app and, once authenticated, no longer
    holds uvicorn's handshake request and response (nor the request's headers, which the
    websockets parser still references, nor the scope's), its token, its user's ORM row,
    or its last message; its protocol is the lean one, and it counts as an open socket
    until it closes. A socket to any other path still goes through the router, which
    refuses it."""
    import gc

    from giftgraph.accel.wire import SCOPE_KEY, Flag, Inbox, LeanWebSocketProtocol
    from giftgraph.context import Caller, Context
    from giftgraph.web.sockets import TransportWSHandler

    srv = live_server
    open_sockets = srv.app.state.giftgraph.metrics.sockets_active
    token, _ = await srv.signup("handshake@example.com")
    before = open_sockets._value.get()
    client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    assert open_sockets._value.get() == before + 1
    [ws] = [w for sockets in srv.live.hub.sockets.values() for w in sockets]
    assert ws.scope["headers"] == []
    assert not ws.headers
    protocol = ws.scope[SCOPE_KEY]
    assert isinstance(protocol, LeanWebSocketProtocol)
    assert vars(protocol) == {}  # every attribute uvicorn sets is a slot
    assert isinstance(protocol.queue, Inbox)
    assert isinstance(protocol.writable, Flag)
    assert protocol.handshake_complete
    assert protocol.request is None
    assert protocol.response is None
    parsed = protocol.conn.parser.gi_frame.f_locals["request"]  # websockets' own reference
    assert parsed.path == "/graphql"
    assert not parsed.headers
    gl, item = await _item(srv, token)
    await _subscribe_and_change(srv, client, token, gl, item)
    [context] = [o for o in gc.get_objects() if type(o) is Context and o.request is ws]
    assert type(context.user) is Caller  # the values, not the row (no password hash)
    assert context.authorization is None
    assert context.connection_params == {}
    [handler] = [o for o in gc.get_objects()
                 if TransportWSHandler in type(o).__mro__ and o.context is context]
    assert handler.connection_init_timeout_task is None
    [operation] = handler.operations.values()  # parked: query and variables let go
    assert operation.query is None
    assert operation.variables is None
    me = await client.subscribe("{ me { email role displayName } }")  # the Caller answers
    assert await client.receive() == {"id": me, "type": "next", "payload": {"data": {"me": {
        "email": "handshake@example.com", "role": "ADMIN", "displayName": "hands"}}}}
    assert await client.receive() == {"id": me, "type": "complete"}
    await client.ws.close()
    deadline = time.monotonic() + 5
    while open_sockets._value.get() != before:
        assert time.monotonic() < deadline, "the socket still counts as open"
        await asyncio.sleep(0.02)
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        await websockets.connect(srv.base.replace("http", "ws") + "/graphql/other",
                                 subprotocols=[PROTOCOL])  # type: ignore[list-item]
    assert refused.value.response.status_code == 403


async def test_a_failed_event_load_does_not_strand_the_others_waiting_for_it() -> None:
    """`SharedScopes.event` loads an event once for every subscriber that needs it; when
    the load fails (the database is unreachable here), each waiter gets an error of its
    own instead of waiting forever."""
    import uuid

    from giftgraph.db.engine import create_database
    from giftgraph.live.streams import SharedScopes
    from tests.conftest import make_settings

    url = "postgresql://postgres@127.0.0.1:1/nothing"  # nothing listens on port 1
    database = create_database(url, make_settings(url))
    scopes = SharedScopes(database)
    try:
        results = await asyncio.wait_for(asyncio.gather(
            *(scopes.event(7, uuid.uuid4()) for _ in range(3)), return_exceptions=True), 20)
    finally:
        await database.dispose()
    assert len(results) == 3
    assert all(isinstance(r, OSError) for r in results), results


def _spellings(type_name: str, gid: str) -> dict[str, str]:
    """Other texts Python's lenient parsers read as the entity `gid` names (base64 padding,
    the standard alphabet, the UUID in upper case, without hyphens, in braces, as a URN)."""
    key = uuid.UUID(base64.urlsafe_b64decode(gid + "=" * (-len(gid) % 4)).decode()
                    .partition(":")[2])
    braces = f"{type_name}:{{{key}}}".encode()
    return {
        "upper": encode_id(type_name, str(key).upper()),
        "hex": encode_id(type_name, key.hex),
        "urn": encode_id(type_name, f"urn:uuid:{key}"),
        "braces-padded": base64.urlsafe_b64encode(braces).decode(),
        "braces-standard": base64.b64encode(braces).decode(),
    }


async def test_other_spellings_of_an_id_hear_the_events_or_are_refused(
    live_server: Server,
) -> None:
    """A topic is built from the decoded ID, never from the client's text: another spelling
    of the same ID either subscribes to the topic the events go to or is refused; it never
    listens, accepted, to a topic that hears nothing (nor splits a presence room)."""
    srv = live_server
    token, _ = await srv.signup("spellings@example.com")
    gl, _ = await _item(srv, token)
    canonical = f"comments:LIST:{gl}"
    client = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    events = ("subscription($t: ID!) { commentEvents(target: LIST, targetId: $t)"
              " { kind topic } }")
    presence = "subscription($t: String!) { presence(topic: $t) { topic } }"
    listening: dict[str, str] = {}
    for name, spelling in {"canonical": gl, **_spellings("GiftList", gl)}.items():
        op = await client.subscribe(events, {"t": spelling})
        try:
            refusal = await client.receive(timeout=0.5)
        except TimeoutError:
            listening[op] = name
            continue
        assert refusal["id"] == op, refusal
        [error] = refusal["payload"]["errors"]
        assert error["extensions"]["code"] in ("NOT_FOUND", "BAD_USER_INPUT"), (name, refusal)
        assert await client.receive() == {"id": op, "type": "complete"}
        assert name != "canonical"
        op = await client.subscribe(presence, {"t": f"comments:LIST:{spelling}"})
        answer = await client.receive()
        if "errors" in answer["payload"]:
            assert answer["payload"]["errors"][0]["extensions"]["code"] in (
                "NOT_FOUND", "BAD_USER_INPUT"), (name, answer)
            assert await client.receive() == {"id": op, "type": "complete"}
        else:  # accepted: the room of the published topic, not one of its own
            assert answer["payload"]["data"]["presence"]["topic"] == canonical, name
            await client.ws.send(json.dumps({"id": op, "type": "complete"}))
    assert "canonical" in listening.values()
    await srv.gql('mutation($t: ID!) { addComment(input: {target: LIST, targetId: $t,'
                  ' body: "hi"}) { id } }', {"t": gl}, token)
    heard: dict[str, dict[str, Any]] = {}
    while len(heard) < len(listening):
        msg = await client.receive(timeout=5)  # a silent one fails here
        if msg["id"] in listening and msg["type"] == "next":
            heard[listening[msg["id"]]] = msg["payload"]["data"]["commentEvents"]
    assert all(e == {"kind": "COMMENT_ADDED", "topic": canonical} for e in heard.values()), heard
    await client.ws.close()


async def test_malformed_presence_announcements_are_ignored(live_server: Server) -> None:
    """A message on a presence channel that is no announcement (a user that is no UUID, a
    ttl that never expires) neither ends the room's listener nor leaves a viewer forever."""
    srv = live_server
    token, me = await srv.signup("presence-garbage@example.com")
    a = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    await a.subscribe("subscription { presence(topic: \"family\") { viewers { id } } }")
    assert [v["id"] for v in (await a.receive())["payload"]["data"]["presence"]["viewers"]] \
        == [me]
    family = next(iter(srv.live.presence.rooms))[0]
    room = srv.live.presence.rooms[(family, "family")]
    ghost = "00000000-0000-0000-0000-00000000abcd"
    for n, bad in enumerate([{"users": ["not-a-uuid"]}, {"users": [5]}, {"users": "x"},
                             {"users": [ghost], "ttl": "nan"}, {"users": [ghost], "ttl": 1e999},
                             {"users": [ghost], "ttl": -1}, {"users": [ghost], "ttl": True}]):
        message = json.dumps({"presence": f"bad-{n}", **bad}).replace("1e999", "Infinity")
        await srv.live.hub.broadcast.publish(f"gg:{family}:presence:family", message)
    await srv.live.hub.broadcast.publish(f"gg:{family}:presence:family", json.dumps(
        {"presence": "good", "users": [ghost], "ttl": 1.0}))
    deadline = time.monotonic() + 3
    while "good" not in room.remote:  # the listener outlived the garbage before it
        assert time.monotonic() < deadline, room.remote
        await asyncio.sleep(0.05)
    assert [i for i in room.remote if i.startswith("bad-")] == []
    await a.ws.close()


async def test_a_dashboard_snapshot_computes_only_the_parts_its_watchers_select(
        live_server: Server) -> None:
    """`dashboard { spent }` is one statement a change, not the seven of every part; a
    watcher selecting more (through a fragment too) gets them computed, and when it leaves
    they are left out again."""
    srv = live_server
    token, _ = await srv.signup("dash-parts@example.com")
    await _item(srv, token)
    auth = {"authorization": f"Bearer {token}"}

    def parts() -> set[str]:
        (feed,) = srv.live.dashboards.feeds.values()
        return {name for name, part in feed.latest.dashboard.parts.items() if part.done()}

    async def change(name: str) -> None:
        await srv.gql('mutation($n: String!) { createPerson(input: {name: $n}) { id } }',
                      {"n": name}, token)

    spent = await WsClient.connect(srv.base, auth)
    await spent.subscribe("subscription { dashboard { spent } }")
    assert (await spent.receive())["payload"]["data"]["dashboard"] == {"spent": "0.00"}
    assert parts() == {"spent"}
    more = await WsClient.connect(srv.base, auth)
    await more.subscribe("subscription { dashboard { ...D } } "
                         "fragment D on Dashboard { pipeline { idea } budget }")
    first = (await more.receive())["payload"]["data"]["dashboard"]
    assert first == {"pipeline": {"idea": 1}, "budget": None}
    await change("A")
    await spent.receive()
    await more.receive()
    assert parts() == {"spent", "pipeline", "budget"}
    await more.ws.close()
    deadline = time.monotonic() + 5
    while len(next(iter(srv.live.dashboards.feeds.values())).watchers) > 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await change("B")
    await spent.receive()
    assert parts() == {"spent"}
    await spent.ws.close()
