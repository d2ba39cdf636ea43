"""PostGraphile served on the benchmark's database: the tool a user might pick instead, in W1.

PostGraphile generates its API from the database schema, so the equivalent of our nested
query uses its generated names (`allGiftLists`, `personByPersonId`, ...) and asks for one
family's lists by condition. It runs as one Node process (as GiftGraph runs as one uvicorn
process) with its defaults, and without authentication: it verifies no token and loads no
user per request, which GiftGraph does.

Two editions: PostGraphile 5 (the current major, `amber` preset, where the id column is
`rowId`) is the peer to beat; PostGraphile 4 beside it, as measured before. Version 5 wants
Node 22's `Promise.withResolvers`; on Node 20 (Debian's, this machine's) a one-line shim
preloaded with `NODE_OPTIONS=--require` supplies it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.harness import ROOT, Server, dsn


def _nested(id_order: str) -> str:
    return ("query Nested($f: UUID!) { allGiftLists(first: 20, condition: {familyId: $f}, "
            f"orderBy: [CREATED_AT_ASC, {id_order}_ASC]) {{ nodes {{ name personByPersonId "
            "{ name } listItemsByListId(first: 20, orderBy: [CREATED_AT_ASC, "
            f"{id_order}_ASC]) {{ nodes {{ status giftByGiftId {{ name price store }} "
            "userByAssigneeId { displayName } } } } } }")


@dataclass(frozen=True)
class Edition:
    """One PostGraphile major: where its npm project is, how it starts, its nested query."""

    key: str  # the column in results: "postgraphile" is the current major
    label: str
    directory: Path
    query: str
    node_options: str = ""

    @property
    def bin(self) -> Path:
        return self.directory / "node_modules" / ".bin" / "postgraphile"

    def install(self) -> str | None:
        """Install from the lock file if it is not there; why it can't be measured, or None."""
        if self.bin.exists():
            return None
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            return f"{self.label} not measured: node and npm are not installed"
        done = subprocess.run(  # noqa: S603
            [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(self.directory)],
            capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0 or not self.bin.exists():
            return f"{self.label} not measured: npm ci failed: {done.stderr.strip()[-300:]}"
        return None

    def version(self) -> str:
        with (self.directory / "node_modules" / "postgraphile" / "package.json").open() as f:
            return str(json.load(f)["version"])

    def server(self, database_url: str) -> PostGraphile:
        return PostGraphile(self, database_url)


V5_DIR = ROOT / "bench" / "postgraphile5"
V5 = Edition("postgraphile", "PostGraphile 5", V5_DIR, _nested("ROW_ID"),
             node_options=f"--require {V5_DIR / 'with-resolvers.cjs'}")
V4 = Edition("postgraphile4", "PostGraphile 4", ROOT / "bench" / "postgraphile", _nested("ID"))
EDITIONS = (V5, V4)
NESTED = V5.query  # the query of the peer to beat


class PostGraphile(Server):
    """`postgraphile -c <db> -s public` (v5: `-P postgraphile/presets/amber`), production
    mode, no query log, no GraphiQL."""

    def __init__(self, edition: Edition, database_url: str) -> None:
        env = {"GRAPHILE_ENV": "production", "NODE_ENV": "production"}
        if edition.node_options:
            env["NODE_OPTIONS"] = (os.environ.get("NODE_OPTIONS", "") + " "
                                   + edition.node_options).strip()
        super().__init__("postgraphile", env, health="/graphql")
        self.edition = edition
        self.database_url = dsn(database_url)

    def command(self) -> list[str]:
        common = ["-c", self.database_url, "-s", "public", "--port", str(self.port)]
        if self.edition is V4:
            return [str(self.edition.bin), *common, "--host", "127.0.0.1",
                    "--disable-query-log", "--disable-graphiql"]
        return [str(self.edition.bin), "-P", "postgraphile/presets/amber", *common,
                "-n", "127.0.0.1"]

    def ready(self) -> bool:
        r = httpx.post(self.base + "/graphql", json={"query": "{ __typename }"}, timeout=2)
        return r.status_code == 200


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
