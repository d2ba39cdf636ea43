"""The family app's activity lines (web/static/app/ui.js), run in node: one line per change
the app makes, where a change is two events (a gift added with its item, an item removed
with its gift) and the page knows they belong together.

What the API records is left as it is: SPEC.md's "one Event row per affected topic" for
every committed mutation, and the app's Remove is two mutations (removeListItem, then
deleteGift), each a change of its own, with a DELETED event for every comment deleted
with them. A DELETED event has no node, so the page pairs an item's removal with its
gift's delete only when it knows the item's gift (it drew the item, or saw an event with
it): never a line hidden on a guess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import giftgraph.web

UI = Path(giftgraph.web.__file__).parent / "static" / "app" / "ui.js"


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found:
        return found
    if os.environ.get("GIFTGRAPH_REQUIRE_NODE") == "1":
        pytest.fail("node is required (GIFTGRAPH_REQUIRE_NODE=1)")
    pytest.skip("no node")


def lines(node: str, tmp_path: Path, events: list[dict[str, Any]],
          known: dict[str, str] | None = None, live: bool = False) -> list[str]:
    """The activity lines of `events` (newest first): the snapshot's (oneLinePerChange),
    or, `live`, as they arrive one by one, oldest first (the page's onEvent); `known`:
    items the page drew (item ID -> gift ID)."""
    module = tmp_path / "ui.mjs"  # an ES module whatever node's default for .js
    module.write_text(UI.read_text(encoding="utf-8"), encoding="utf-8")
    script = f"""
const ui = await import({json.dumps(module.as_uri())});
const events = {json.dumps(events)};
for (const [item, gift] of Object.entries({json.dumps(known or {})})) ui.noteItem(item, gift);
let shown;
if ({json.dumps(live)}) {{
  shown = [];
  for (const e of [...events].reverse()) {{
    ui.noteEvents([e]);
    if (ui.removalOf(e, shown)) continue;
    if (shown.length && ui.sameAddition(shown[0], e)) shown.shift();
    shown.unshift(e);
  }}
}} else shown = ui.oneLinePerChange(events);
console.log(JSON.stringify(shown.map(ui.describe)));
"""
    done = subprocess.run([node, "--input-type=module", "-e", script],  # noqa: S603
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    result: list[str] = json.loads(done.stdout)
    return result


ANN = {"id": "VXNlcjphbm4", "displayName": "Ann"}
BOB = {"id": "VXNlcjpib2I", "displayName": "Bob"}


def event(seq: int, kind: str, entity_type: str, entity_id: str, actor: dict[str, str] | None,
          node: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"seq": str(seq), "kind": kind, "entityType": entity_type, "entityId": entity_id,
            "at": "2030-01-01T00:00:00+00:00", "actor": actor, "node": node}


def item_node(gift: str) -> dict[str, Any]:
    return {"id": "item", "status": "IDEA", "gift": {"id": gift, "name": "Socks"},
            "list": {"name": "Presents"}, "assignee": None}


# The app's Remove of an item with a comment, whose gift had a comment too (as the API
# records it: the item's comment, the item, the gift's comment, the gift), after the add
# of a new gift with its item. Newest first.
REMOVE = [
    event(19, "DELETED", "Gift", "gift", ANN),
    event(18, "DELETED", "Comment", "c2", ANN),
    event(16, "DELETED", "ListItem", "item", ANN),
    event(13, "DELETED", "Comment", "c1", ANN),
]
ADD = [
    event(7, "ADDED", "ListItem", "item", ANN, item_node("gift")),
    event(4, "ADDED", "Gift", "gift", ANN, {"id": "gift", "name": "Socks"}),
]


@pytest.mark.parametrize("live", [False, True], ids=["snapshot", "live"])
def test_an_item_removed_with_its_gift_is_one_line(node: str, tmp_path: Path,
                                                     live: bool) -> None:
    assert lines(node, tmp_path, REMOVE + ADD, live=live) == [
        "Ann removed a comment", "Ann removed a gift from a list", "Ann removed a comment",
        "Ann put Socks on Presents"]
    # Known from the list the page drew, without the item's events in the feed.
    assert lines(node, tmp_path, REMOVE, known={"item": "gift"}, live=live) == [
        "Ann removed a comment", "Ann removed a gift from a list", "Ann removed a comment"]


@pytest.mark.parametrize("live", [False, True], ids=["snapshot", "live"])
def test_a_gift_deleted_on_its_own_keeps_its_line(node: str, tmp_path: Path, live: bool) -> None:
    both = ["Ann removed a gift", "Ann removed a gift from a list"]
    removed = [event(19, "DELETED", "Gift", "gift", ANN),
               event(16, "DELETED", "ListItem", "item", ANN)]
    # The page never saw which gift the item was.
    assert lines(node, tmp_path, removed, live=live) == both
    # Another gift than the item's.
    assert lines(node, tmp_path, removed, known={"item": "other"}, live=live) == both
    # Deleted by someone else.
    assert lines(node, tmp_path, [event(19, "DELETED", "Gift", "gift", BOB), removed[1]],
                 known={"item": "gift"}, live=live) == ["Bob removed a gift", both[1]]
    # Another change between them.
    added = event(17, "ADDED", "Person", "p", ANN, {"name": "Al"})
    assert lines(node, tmp_path, [removed[0], added, removed[1]], known={"item": "gift"},
                 live=live) == [both[0], "Ann added Al", both[1]]
