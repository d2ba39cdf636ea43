"""The client examples in examples/, one for each way in, run end to end against a live
server: graphql-transport-ws (Apollo Client, Python gql), multipart subscriptions (Apollo
Client's HttpLink alone), graphql-sse (the graphql-sse client) and APQ (Apollo's
persisted-queries link).

Each subscription script signs up, creates a list and an item, subscribes to listEvents,
changes the item's status and prints the event as `EVENT {json}`.
The Apollo (Node) example needs `npm ci --prefix examples/apollo`; without node or its
node_modules it is skipped, unless GIFTGRAPH_REQUIRE_NODE=1 (CI), where that is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
APOLLO = EXAMPLES / "apollo"
TIMEOUT = 60  # the scripts give up by themselves after 10 s of waiting; this bounds the rest


def _event(cmd: list[str]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("EMAIL", "PASSWORD")}
    proc = subprocess.run(  # noqa: S603 - our own interpreter or node, fixed scripts
        cmd, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=env, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("EVENT ")]
    assert len(lines) == 1, f"expected one EVENT line\n{proc.stdout}\n{proc.stderr}"
    event: dict[str, Any] = json.loads(lines[0].removeprefix("EVENT "))
    return event


def _check(event: dict[str, Any]) -> None:
    assert event["kind"] == "STATUS_CHANGED"
    assert event["seq"].isdigit()
    assert event["topic"].startswith("list:")
    assert event["node"]["status"] == "SELECTED"


def test_python_gql_example(server: str) -> None:
    _check(_event([sys.executable, str(EXAMPLES / "python" / "subscribe.py"), server]))


def test_apollo_client_example(node: str, server: str) -> None:
    _check(_event([node, str(APOLLO / "subscribe.mjs"), server]))


@pytest.mark.parametrize("mode", ["multipart", "sse"])
def test_http_subscription_examples(node: str, server: str, mode: str) -> None:
    """No WebSocket: Apollo Client's HttpLink (multipart), the graphql-sse client (SSE)."""
    _check(_event([node, str(APOLLO / "http-subscriptions.mjs"), mode, server]))


def test_apq_example(node: str, server: str) -> None:
    proc = subprocess.run(  # noqa: S603 - node, our fixed script
        [node, str(APOLLO / "persisted.mjs"), server], capture_output=True, text=True,
        timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [json.loads(line.removeprefix("APQ ")) for line in proc.stdout.splitlines()
             if line.startswith("APQ ")]
    # First time: the hash alone, PersistedQueryNotFound, then the query with it; a second
    # client (the hash only): answered from the stored document.
    assert [(line["sent"], line["codes"]) for line in lines if line["op"] == "Me"] == [
        (["hash"], ["PERSISTED_QUERY_NOT_FOUND"]), (["hash", "query"], []), (["hash"], [])]
