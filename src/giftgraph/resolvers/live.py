"""`Subscription.live`: any read selection, kept current (giftgraph.live.queries)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from giftgraph.accel import internals
from giftgraph.accel.live import Send, park_live
from giftgraph.admission.answers import AnswerPace, RenderCharges
from giftgraph.admission.checks import caller_key
from giftgraph.context import Context, Info
from giftgraph.errors import AppError, RateLimited
from giftgraph.live.directive import UNWRAPPED
from giftgraph.live.frames import LiveFrame
from giftgraph.live.layer import Live
from giftgraph.live.selection import LivePlan, plan_of
from giftgraph.live.streams import counting_active

DESCRIPTION = ("Any selection of Query, kept current: its result at once, then a new one "
               "whenever a change committed in your family changes it (at most one per "
               "GIFTGRAPH_LIVE_INTERVAL_MS, 250 ms by default; never the same result twice in "
               "a row). Errors inside the selection arrive as a result with `errors`, and the "
               "subscription goes on. Subscribers with the same selection, variables and "
               "family share one execution per change. Errors: UNAUTHENTICATED, RATE_LIMITED "
               "(too many different live queries, or too costly ones together, in the family).")


async def live(info: Info) -> AsyncGenerator[LiveFrame, None]:
    ctx = info.context
    ctx.require_user()
    raw = internals.raw_info(info)
    if raw is None:  # Strawberry keeps graphql-core's resolve info elsewhere now
        raise AppError("Live queries are not available")
    plan = plan_of(raw, ctx.settings.default_page_size, ctx.settings.max_page_size,
                   unwrapped=UNWRAPPED.get())
    del raw
    live = Live.of(ctx)
    schema = info.schema
    ctx.operation.release()  # the subscribe step's loaders: results come from the query
    await ctx.db.close()  # hold no connection while waiting for changes

    async def serve(send: Send) -> None:
        """Every frame, sent by the socket handler directly (giftgraph.accel.live)."""
        async with aclosing(frames(ctx, live, plan, schema)) as stream:
            async for frame in stream:
                await send(frame)

    if park_live(ctx, serve):
        return
    # Closed when this ends, however it ends: its live query is let go at once.
    async with aclosing(frames(ctx, live, plan, schema)) as stream:
        async for frame in stream:
            yield frame


async def frames(ctx: Context, live: Live, plan: LivePlan,
                 schema: Any) -> AsyncGenerator[LiveFrame, None]:
    """The live query's result now, then each new one, each once its caller has paid
    for the answers it was sent (`answer_bytes`; each result sent is charged as it is
    written): meanwhile newer results replace the one waiting. Sent to many subscribers
    and charged once per run, one family's live queries were sent 66-75 MB a second
    against its 8 MiB (adversary, 2026-11-28)."""
    charges = live.renderer.charge
    pace = charges.bytes if isinstance(charges, RenderCharges) else None
    caller = caller_key(ctx)
    with counting_active(ctx.metrics):
        async with live.queries.watch(ctx, plan, schema) as (outcome, watcher):
            while True:
                yield LiveFrame(plan.key, outcome)
                del outcome  # not kept while it waits: a newer one may replace it
                if pace is not None:
                    await paid(pace, caller)
                outcome = await watcher.next()


async def paid(pace: AnswerPace, caller: str) -> None:
    """Until `caller` owes no answers: a subscription simply waits."""
    while True:
        try:
            await pace.paid(caller)
            return
        except RateLimited:
            continue
