"""A dashboard part shared by several fields survives the cancellation of one of them.

graphql-core (3.3) cancels the sibling fields still pending when one field fails
(`gather_with_cancel`). A reader of a part cancelled while it waits must not cancel the
part for the others (nor its first reader's `set_result`). DataLoader loads are not
shielded the same way: Strawberry cancels a batch's statement once all its callers are
cancelled, which keeps a load from outliving its operation's connection (bench/NOTES.md,
"the flaky overview")."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from giftgraph.db.session import OperationDb
from giftgraph.ids import decode_id
from giftgraph.resolvers.queries import Dashboard
from tests.conftest import Account


async def _family_and_list(alice: Account) -> tuple[uuid.UUID, uuid.UUID]:
    r = await alice.client('mutation { createList(input: {name: "Wishes", kind: IDEAS}) '
                           '{ id } }')
    me = await alice.client("{ me { family { id } } }")
    return (decode_id(me.data["me"]["family"]["id"], "Family"),
            decode_id(r.data["createList"]["id"], "GiftList"))


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
