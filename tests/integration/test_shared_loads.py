"""A load shared by several fields survives the cancellation of one of them.

graphql-core (3.3) cancels the sibling fields still pending when one field fails
(`gather_with_cancel`): in the family app, an item's `gift` was NOT_FOUND (deleted a moment
after the item was removed) while its `list` waited for the list's load, which every other
item of that list waited for too. Cancelling that field cancelled the shared future: the
other items raised CancelledError, which ended the dashboard snapshot's shared render and
its subscription without a word (the page kept "1 item at Idea")."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from giftgraph.db.session import OperationDb
from giftgraph.ids import decode_id
from giftgraph.resolvers.queries import Dashboard
from giftgraph.schema.loaders import Loaders, load_required
from tests.conftest import Account


async def _family_and_list(alice: Account) -> tuple[uuid.UUID, uuid.UUID]:
    r = await alice.client('mutation { createList(input: {name: "Wishes", kind: IDEAS}) '
                           '{ id } }')
    me = await alice.client("{ me { family { id } } }")
    return (decode_id(me.data["me"]["family"]["id"], "Family"),
            decode_id(r.data["createList"]["id"], "GiftList"))


async def test_a_cancelled_field_leaves_the_shared_load_to_the_others(
        app: Any, alice: Account) -> None:
    family_id, list_id = await _family_and_list(alice)
    db = OperationDb(app.state.giftgraph.database)
    try:
        loaders = Loaders(db, family_id)
        # Two fields (two items' `list`) wait for one row, in one batch not yet read.
        fields = [asyncio.ensure_future(load_required(loaders.gift_list, list_id,
                                                      lambda row: row.name, "GiftList"))
                  for _ in range(2)]
        await asyncio.sleep(0)  # both are waiting for the load
        assert not any(f.done() for f in fields)
        fields[0].cancel()  # as graphql-core cancels the sibling of a field that failed
        assert await fields[1] == "Wishes"  # not CancelledError
        assert fields[0].cancelled()
        # The row stays loaded for the operation's later fields: no second statement.
        future = loaders.gift_list.cache_map.get(list_id)
        assert future is not None
        assert future.done()
        assert not future.cancelled()
    finally:
        await db.close()


async def test_a_cancelled_reader_leaves_the_dashboard_part_to_the_others(
        app: Any, alice: Account) -> None:
    family_id, _ = await _family_and_list(alice)
    db = OperationDb(app.state.giftgraph.database)
    try:
        dashboard = Dashboard.for_family(family_id)
        # `spent` and `spentByCurrency` read one part: the first computes it.
        first = asyncio.ensure_future(dashboard.part("pipeline", db))
        await asyncio.sleep(0)
        waiting = asyncio.ensure_future(dashboard.part("pipeline", db))
        await asyncio.sleep(0)
        waiting.cancel()  # a sibling field failed
        pipeline = await first  # its set_result meets no cancelled future
        assert pipeline.idea == 0
        # And the other way round: its first reader cancelled, a waiting one computes it.
        again = Dashboard.for_family(family_id)
        first = asyncio.ensure_future(again.part("people", db))
        await asyncio.sleep(0)
        waiting = asyncio.ensure_future(again.part("people", db))
        await asyncio.sleep(0)
        first.cancel()
        assert await waiting == []
    finally:
        await db.close()
