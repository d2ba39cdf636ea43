"""W6's floor (bench/storm_floor.py) keeps the API's contract for the herd: a token checked
at connection_init, `since` replayed from the events table, then live events, in seq order."""

from __future__ import annotations

import asyncio
import inspect
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import orjson
import pytest
from bench import wsclient
from bench.harness import PROTOCOL, Server, dsn
from bench.tenants import _seed


async def _open(url: str, token: str, since: int | None,
                seqs: list[int]) -> wsclient.LeanSocket:
    ack: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def on_text(raw: bytes) -> None:
        if not ack.done():
            ack.set_result(raw)
            return
        seqs.append(int(orjson.loads(raw)["payload"]["data"]["familyEvents"]["seq"]))

    ws = await wsclient.connect(url, on_text, subprotocol=PROTOCOL, wait=10)
    ws.send_text(orjson.dumps({"type": "connection_init", "payload": {"token": token}}))
    assert orjson.loads(await asyncio.wait_for(ack, 10)) == {"type": "connection_ack"}
    ws.send_text(orjson.dumps({"id": "1", "type": "subscribe", "payload": {
        "query": "subscription($s: String) { familyEvents(since: $s) { seq at } }",
        "variables": {"s": None if since is None else str(since)}}}))
    return ws


async def _until(check: Callable[[], bool | Awaitable[bool]]) -> None:
    """Until `check()` is true (at most 10 s)."""
    async with asyncio.timeout(10):
        while True:
            done = check()
            if inspect.isawaitable(done):
                done = await done
            if done:
                return
            await asyncio.sleep(0.02)


@pytest.mark.timeout(120)
async def test_the_storm_floor_replays_since_then_sends_live_events(database_url: str,
                                                                    tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(40)
    [tenant] = await _seed(database_url, secret, 1)
    ids = tmp_path / "families.json"
    ids.write_bytes(orjson.dumps([tenant["family"]]))
    floor = Server("bench.storm_floor:create",
                   {"BENCH_FLOOR_DSN": dsn(database_url), "GIFTGRAPH_JWT_SECRET": secret,
                    "BENCH_STORM_FAMILIES": str(ids)}, args=("--ws", "websockets-sansio"))
    url = f"{floor.ws}/graphql"
    token = tenant["tokens"][0]
    with floor:
        async with httpx.AsyncClient(base_url=floor.base) as client:

            async def publish(n: int) -> list[int]:
                replies = [await client.post("/publish?family=0") for _ in range(n)]
                return [r.json()["seq"] for r in replies]

            async def subscribed() -> int:
                return int((await client.get("/count")).json()["subscribed"])

            async def listening() -> bool:
                return await subscribed() == 1

            async def none_listening() -> bool:
                return await subscribed() == 0

            first: list[int] = []
            ws = await _open(url, token, None, first)
            await _until(listening)
            written = await publish(3)
            await _until(lambda: len(first) == 3)
            assert first == written
            await ws.close()
            await _until(none_listening)

            missed = await publish(2)  # while nobody listens
            again: list[int] = []
            ws = await _open(url, token, first[-1], again)
            await _until(lambda: len(again) == 2)
            assert again == missed  # replayed from the table
            live = await publish(2)
            await _until(lambda: len(again) == 4)
            assert again == missed + live  # then live, nothing twice
            await ws.close()

        refused = await wsclient.connect(url, lambda _: None, subprotocol=PROTOCOL, wait=10)
        refused.send_text(orjson.dumps({"type": "connection_init",
                                        "payload": {"token": "not-a-token"}}))
        await asyncio.wait_for(asyncio.shield(refused.closed), 10)
        assert refused.close_code == 4403
