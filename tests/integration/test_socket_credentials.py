"""An open socket is held to its access token: it closes when the token expires (unless the
client re-authenticates on it with a `ping`), and when `logout` or reuse detection revokes
the token's refresh chain (giftgraph.live.credentials)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.integration import test_live_features
from tests.integration.test_auth import SECRET, _claims
from tests.integration.test_live import PROTOCOL, WsClient, listening, post, signup
from tests.integration.test_live_features import Server
from tests.integration.test_scaleout import _close_all, _connect, instances

live_server = test_live_features.live_server  # the fixture: an app under uvicorn, in-process

LOGIN = ('mutation($e: String!) { login(email: $e, password: "long password")'
         " { accessToken refreshToken } }")
REFRESH = ("mutation($t: String!) { refreshToken(refreshToken: $t)"
           " { accessToken refreshToken } }")
PERSON = 'mutation { createPerson(input: {name: "P"}) { id } }'
EVENTS = "subscription { familyEvents { seq entityType } }"


async def _login(srv: Server, email: str) -> dict[str, str]:
    return (await srv.gql(LOGIN, {"e": email}))["login"]  # type: ignore[no-any-return]


def _expiring(token: str, seconds: float) -> str:
    """`token` re-signed to expire in `seconds` (as if issued long ago)."""
    claims = _claims(token)
    exp = int(time.time() + seconds)
    return jwt.encode({**claims, "iat": exp - 900, "exp": exp}, SECRET, algorithm="HS256")


async def _watching(srv: Server, token: str) -> WsClient:
    ws = await WsClient.connect(srv.base, {"authorization": f"Bearer {token}"})
    listening = srv.subscribers() + 1
    await ws.subscribe(EVENTS)
    await srv.listening(listening)
    return ws


async def _closed_with(ws: WsClient, within: float) -> tuple[int, str]:
    """The close code and reason the server sends within `within` seconds (events that
    arrive first are skipped)."""
    async def drain() -> None:
        while True:
            await asyncio.wait_for(ws.ws.recv(), within)

    with pytest.raises(ConnectionClosed) as closed:
        await drain()
    frame = closed.value.rcvd
    assert frame is not None, "closed without a close frame"
    return frame.code, frame.reason


async def _hears(srv: Server, ws: WsClient, token: str) -> None:
    """`ws` is open and still receives its family's events."""
    await srv.gql(PERSON, token=token)
    message = await ws.receive(5)
    assert message["type"] == "next", message
    assert message["payload"]["data"]["familyEvents"]["entityType"] == "Person"


async def _ping(ws: WsClient, payload: Any) -> dict[str, Any]:
    await ws.ws.send(json.dumps({"type": "ping", "payload": payload}))
    return await ws.receive(5)


async def test_a_socket_closes_4401_when_its_token_expires(live_server: Server) -> None:
    srv = live_server
    token, _ = await srv.signup("expiring@example.com")
    ws = await _watching(srv, _expiring(token, 1.5))
    await _hears(srv, ws, token)
    assert await _closed_with(ws, 5) == (4401, "Token expired")


async def test_a_ping_with_a_fresh_token_of_the_same_user_keeps_the_socket_open(
        live_server: Server) -> None:
    srv = live_server
    token, _ = await srv.signup("renewing@example.com")
    fresh = await _login(srv, "renewing@example.com")
    ws = await _watching(srv, _expiring(token, 1.5))
    assert await _ping(ws, None) == {"type": "pong"}  # a plain ping changes nothing
    pong = await _ping(ws, {"authorization": f"Bearer {fresh['accessToken']}"})
    assert pong["type"] == "pong"
    assert pong["payload"]["expiresAt"] == _claims(fresh["accessToken"])["exp"]
    await asyncio.sleep(2.5)  # past the first token's expiry
    await _hears(srv, ws, token)


@pytest.mark.parametrize("which", ["another user's", "expired", "garbage", "not a string"])
async def test_a_ping_with_an_invalid_or_foreign_token_closes_4403(
        live_server: Server, which: str) -> None:
    srv = live_server
    token, _ = await srv.signup(f"pinger-{len(which)}@example.com")
    other, _ = await srv.signup(f"other-{len(which)}@example.com")
    payload: Any = {
        "another user's": {"authorization": f"Bearer {other}"},
        "expired": {"authorization": f"Bearer {_expiring(token, -10)}"},
        "garbage": {"token": "not-a-jwt"},
        "not a string": {"authorization": 42},
    }[which]
    ws = await _watching(srv, token)
    await ws.ws.send(json.dumps({"type": "ping", "payload": payload}))
    assert (await _closed_with(ws, 5))[0] == 4403


async def test_logout_closes_exactly_the_sockets_of_its_chain(live_server: Server) -> None:
    srv = live_server
    await srv.signup("leaving@example.com")
    first, second = await _login(srv, "leaving@example.com"), \
        await _login(srv, "leaving@example.com")
    rotated = (await srv.gql(REFRESH, {"t": first["refreshToken"]}))["refreshToken"]
    closing = [await _watching(srv, first["accessToken"]),
               await _watching(srv, rotated["accessToken"])]
    staying = await _watching(srv, second["accessToken"])
    started = time.monotonic()
    assert (await srv.gql("mutation($t: String!) { logout(refreshToken: $t) }",
                          {"t": rotated["refreshToken"]}))["logout"] is True
    for ws in closing:
        assert (await _closed_with(ws, 2))[0] == 4403
    assert time.monotonic() - started < 1.5
    await _hears(srv, staying, second["accessToken"])


async def test_reuse_detection_closes_the_sockets_of_the_stolen_chain(
        live_server: Server) -> None:
    srv = live_server
    await srv.signup("robbed@example.com")
    session = await _login(srv, "robbed@example.com")
    rotated = (await srv.gql(REFRESH, {"t": session["refreshToken"]}))["refreshToken"]
    ws = await _watching(srv, rotated["accessToken"])
    r = await srv.http.post("/graphql", json={"query": REFRESH,
                                              "variables": {"t": session["refreshToken"]}})
    assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert (await _closed_with(ws, 2))[0] == 4403


async def test_a_socket_can_not_be_opened_with_a_token_of_a_logged_out_chain(
        live_server: Server) -> None:
    srv = live_server
    await srv.signup("gone@example.com")
    session = await _login(srv, "gone@example.com")
    await srv.gql("mutation($t: String!) { logout(refreshToken: $t) }",
                  {"t": session["refreshToken"]})
    ws = await websockets.connect(srv.base.replace("http", "ws") + "/graphql",
                                  subprotocols=[PROTOCOL])  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init",
                              "payload": {"authorization": f"Bearer {session['accessToken']}"}}))
    assert await _closed_with(WsClient(ws), 5) == (4403, "Forbidden")


async def test_logout_on_one_instance_closes_the_chains_socket_on_another(
        database_url: str) -> None:
    """The revocation travels through the broker (here PostgreSQL LISTEN/NOTIFY)."""
    with instances(database_url, "postgres://") as (a, b):
        signup(a, "two-instances@example.com")
        login = {"e": "two-instances@example.com"}
        ended, kept = (post(a, LOGIN, login)["data"]["login"] for _ in range(2))
        clients: list[WsClient] = []
        try:
            closing = await _connect(b, ended["accessToken"], clients)
            staying = await _connect(b, kept["accessToken"], clients)
            for ws in (closing, staying):
                await ws.subscribe(EVENTS)
            await listening(b, 2)
            r = post(a, "mutation($t: String!) { logout(refreshToken: $t) }",
                     {"t": ended["refreshToken"]})
            assert r["data"]["logout"] is True
            assert (await _closed_with(closing, 3))[0] == 4403
            post(a, PERSON, token=kept["accessToken"])
            message = await staying.receive(5)
            assert message["payload"]["data"]["familyEvents"]["entityType"] == "Person"
        finally:
            await _close_all(clients)
