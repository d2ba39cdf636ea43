"""The client examples in examples/ run end to end against a live server.

Each script signs up, creates a list and an item, subscribes to listEvents over
graphql-transport-ws, changes the item's status and prints the event as `EVENT {json}`.
The Apollo (Node) example needs `npm ci --prefix examples/apollo`; without node or its
node_modules it is skipped, unless GIFTGRAPH_REQUIRE_NODE=1 (CI), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
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


@pytest.fixture
def node() -> str:
    """The node binary, checked before the server starts so a skip costs nothing."""
    node = shutil.which("node")
    if node and (APOLLO / "node_modules" / "@apollo" / "client").exists():
        return node
    if os.environ.get("GIFTGRAPH_REQUIRE_NODE") == "1":
        pytest.fail("node and examples/apollo/node_modules (npm ci --prefix examples/apollo) "
                    "are required in CI")
    pytest.skip("node or examples/apollo/node_modules missing "
                "(run `npm ci --prefix examples/apollo`)")


def test_apollo_client_example(node: str, server: str) -> None:
    _check(_event([node, str(APOLLO / "subscribe.mjs"), server]))
