"""PostGraphile served on the benchmark's database: the tool a user might pick instead, in W1.

PostGraphile generates its API from the database schema, so the equivalent of our nested
query uses its generated names (`allGiftLists`, `personByPersonId`, ...) and asks for one
family's lists by condition. It runs as one Node process (as GiftGraph runs as one uvicorn
process) with PostGraphile's defaults, and without authentication: it verifies no token and
loads no user per request, which GiftGraph does.

Version 4 (`bench/postgraphile/package.json`): version 5 needs Node >= 22 and fails every
query on Node 20, the Node that Debian and this machine have.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from typing import Any

import asyncpg
import httpx

from bench.harness import ROOT, Server, dsn

DIR = ROOT / "bench" / "postgraphile"
BIN = DIR / "node_modules" / ".bin" / "postgraphile"

NESTED = """query Nested($f: UUID!) { allGiftLists(first: 20, condition: {familyId: $f},
  orderBy: [CREATED_AT_ASC, ID_ASC]) { nodes { name personByPersonId { name }
  listItemsByListId(first: 20, orderBy: [CREATED_AT_ASC, ID_ASC]) { nodes { status
  giftByGiftId { name price store } userByAssigneeId { displayName } } } } } }"""


def install() -> str | None:
    """Install PostGraphile from the lock file if it is not there; the reason it can't be
    measured, or None."""
    if BIN.exists():
        return None
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return "PostGraphile not measured: node and npm are not installed"
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(DIR)],  # noqa: S603
                          capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0 or not BIN.exists():
        return f"PostGraphile not measured: npm ci failed: {done.stderr.strip()[-300:]}"
    return None


class PostGraphile(Server):
    """`postgraphile -c <db> -s public`, query log off (GiftGraph logs no SQL either)."""

    def __init__(self, database_url: str) -> None:
        super().__init__("postgraphile", {}, health="/graphql")
        self.database_url = dsn(database_url)

    def command(self) -> list[str]:
        return [str(BIN), "-c", self.database_url, "-s", "public", "--host", "127.0.0.1",
                "--port", str(self.port), "--disable-query-log", "--disable-graphiql"]

    def ready(self) -> bool:
        r = httpx.post(self.base + "/graphql", json={"query": "{ __typename }"}, timeout=2)
        return r.status_code == 200


def version() -> str:
    import json

    with (DIR / "node_modules" / "postgraphile" / "package.json").open() as f:
        return str(json.load(f)["version"])


def family_of(database_url: str, email: str) -> str:
    async def fetch() -> str:
        conn = await asyncpg.connect(dsn(database_url))
        try:
            return str(await conn.fetchval(
                "SELECT family_id FROM users WHERE lower(email) = lower($1)", email))
        finally:
            await conn.close()

    return asyncio.run(fetch())


def as_ours(data: dict[str, Any]) -> dict[str, Any]:
    """PostGraphile's answer in the shape of GiftGraph's nested query, to compare them."""
    return {"lists": {"edges": [
        {"node": {"name": gl["name"], "person": gl["personByPersonId"],
                  "items": {"edges": [
                      {"node": {"status": i["status"], "gift": i["giftByGiftId"],
                                "assignee": i["userByAssigneeId"]}}
                      for i in gl["listItemsByListId"]["nodes"]]}}}
        for gl in data["allGiftLists"]["nodes"]]}}
