"""Live queries: one execution per distinct live query per relevant change, per process.

A live query is keyed by its family, what it depends on of the caller (the user when its
selection reads `me`, else the role), its document and its variables (`LivePlan`). Its
subscribers share one `LiveQuery`: a task that listens to the family's `family` topic
(every change writes an event there, after commit) and, on an event whose entity type the
selection reads (`LivePlan.reads`), waits out the interval, runs the selection as a query
(`schema.execute`, the compiled read when the fast paths are on) with the context of one
of its subscribers, and hands the result to every subscriber if it differs from the last.
No event, or only events of types it does not read: no work at all.

Each subscriber (`Watcher`) keeps only the newest result (a slow reader skips to it), gets
at most one per interval, and never the same result twice in a row. A subscriber that
joins runs the query again (coalesced with others joining meanwhile): its first result is
current, whatever the shared task has seen so far.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from giftgraph.admission.answers import Kept
from giftgraph.admission.pace import TimeBudget
from giftgraph.context import CALLER_COLUMNS, Caller, Context, operation_scope
from giftgraph.db import models as m
from giftgraph.db.engine import Database
from giftgraph.errors import AppError
from giftgraph.events import FAMILY_TOPIC
from giftgraph.live.backends import Backoff
from giftgraph.live.frames import Outcome
from giftgraph.live.hub import Hub
from giftgraph.live.publishing import channel
from giftgraph.live.selection import LivePlan
from giftgraph.live.subscriber import RESYNC
from giftgraph.live.workers import Ready, start_worker, stop_worker

log = logging.getLogger("giftgraph.live")

Key = tuple[uuid.UUID, object, str, bytes]


class Watcher:
    """One live subscription's mailbox: the newest outcome, at most one per interval,
    never the one it sent last."""

    __slots__ = ("_ready", "ctx", "interval", "item", "sent", "sent_at")

    def __init__(self, ctx: Context, interval: float) -> None:
        self.ctx = ctx
        self.interval = interval
        self.item: Outcome | None = None
        self.sent: bytes | None = None
        self.sent_at = 0.0
        self._ready = asyncio.Event()

    def put(self, outcome: Outcome) -> None:
        self.item = outcome
        self._ready.set()

    async def next(self) -> Outcome:
        while True:
            await self._ready.wait()
            self._ready.clear()
            wait = self.sent_at + self.interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # newer outcomes meanwhile replace this one
            item = self.item
            if item is not None and item.digest != self.sent:
                return self.mark(item)

    def mark(self, item: Outcome) -> Outcome:
        self.sent, self.sent_at = item.digest, time.monotonic()
        return item


@dataclass(eq=False)
class LiveQuery:
    key: Key
    plan: LivePlan
    schema: Any
    watchers: set[Watcher] = field(default_factory=set)
    latest: Outcome | None = None
    started: float = -1.0  # when the execution that made `latest` began (monotonic)
    last_run: float = 0.0
    took: float = 0.005  # seconds its last run took: what its next turn reserves
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None
    kept: int = 0  # the bytes of `latest` counted in LiveQueries.kept
    stopped: bool = False


class LiveQueries:
    """The process's live queries (see the module's docstring)."""

    def __init__(self, hub: Hub, database: Database, interval: float = 0.25,
                 per_family: int = 50, cost_per_family: int = 100_000,
                 budget: TimeBudget | None = None, kept: Kept | None = None) -> None:
        self.hub = hub
        self.database = database
        self.interval = interval
        self.per_family = per_family
        self.cost_per_family = cost_per_family
        # The seconds of execution a family, and all together, may use a second: charged
        # after each run with what it took (a cost known in advance can be priced wrong),
        # as its share of the time live runs were executing (`_shared_clock`).
        self.budget = budget or TimeBudget("live_seconds", 0.1, 0.35, 0.5)
        # The bytes of the results kept between runs, per family and in all.
        self.kept = kept or Kept(32 * 2**20, 256 * 2**20)
        self._running = 0  # live runs executing now
        self._clock = 0.0  # `_shared_clock`'s reading
        self._clock_at = time.monotonic()
        self.queries: dict[Key, LiveQuery] = {}
        # Per family: its distinct live queries here, and their costs together.
        self.families: dict[uuid.UUID, list[int]] = {}
        self.executions = 0  # every execution (joins included): tests and the bench read it
        self.skipped = 0  # events of types no live query of theirs reads

    def key_of(self, caller: Caller, plan: LivePlan) -> Key:
        who: object = caller.id if plan.per_user else caller.role.value
        return (caller.family_id, who, *plan.identity())

    @asynccontextmanager
    async def watch(self, ctx: Context, plan: LivePlan,
                    schema: Any) -> AsyncIterator[tuple[Outcome, Watcher]]:
        """The live query's current outcome now, and the mailbox of the next ones."""
        caller = ctx.require_user()
        key = self.key_of(caller, plan)
        query = self.queries.get(key)
        if query is None:
            self._admit(ctx, caller.family_id, plan)
            query = self.queries[key] = LiveQuery(key, plan, schema)
            try:
                await start_worker(self.queries, key, query,
                                   lambda ready: self._run(query, ready),
                                   lambda: not query.watchers)
            except BaseException:
                if self.queries.get(key) is not query:  # let go unstarted (cancelled)
                    self._release(caller.family_id, plan.cost)
                raise
        watcher = Watcher(ctx, self.interval)
        query.watchers.add(watcher)
        try:
            outcome = await self._join(query)
            yield watcher.mark(outcome), watcher
        finally:
            query.watchers.discard(watcher)
            if not query.watchers:
                await self._stop(query)

    def _admit(self, ctx: Context, family: uuid.UUID, plan: LivePlan) -> None:
        """Count a new distinct live query of `family`, or refuse it (RATE_LIMITED): each is
        one execution per relevant change, so a family's live work per change is bounded by
        their number (`live_queries_per_family`) and their costs together
        (`live_cost_per_family`)."""
        held = self.families.get(family) or [0, 0]
        if held[0] >= self.per_family:
            ctx.count_refusal("live_queries_per_family")
            raise AppError(f"Your family has {self.per_family} different live queries open "
                           "on this server; close one first", code="RATE_LIMITED",
                           limit=self.per_family)
        if held[1] + plan.cost > self.cost_per_family:
            ctx.count_refusal("live_cost_per_family")
            raise AppError("Your family's live queries would together cost more than "
                           f"{self.cost_per_family} on this server; close one or select less",
                           code="RATE_LIMITED", limit=self.cost_per_family, cost=plan.cost)
        self.families[family] = [held[0] + 1, held[1] + plan.cost]

    def _release(self, family: uuid.UUID, cost: int) -> None:
        held = self.families.get(family) or [1, 0]
        if held[0] > 1:
            self.families[family] = [held[0] - 1, held[1] - cost]
        else:
            self.families.pop(family, None)

    async def _stop(self, query: LiveQuery) -> None:
        if self.queries.get(query.key) is query:
            self._release(query.key[0], query.plan.cost)
        query.stopped = True
        self.kept.release(query.key[0], query.kept)
        query.kept = 0
        await stop_worker(self.queries, query.key, query)

    async def _join(self, query: LiveQuery) -> Outcome:
        """Current for whoever joins now: an execution begun after this call, its own or
        one of another subscriber that joined meanwhile."""
        joined = time.monotonic()
        async with query.lock:
            if query.latest is None or query.started < joined:
                await self._refresh(query, joining=True)
        assert query.latest is not None
        return query.latest

    async def _run(self, query: LiveQuery, ready: Ready) -> None:
        async with self.hub.listen(channel(query.key[0], FAMILY_TOPIC)) as sub:
            ready.set()
            backoff = Backoff(first=max(self.interval, 0.1))
            while True:
                item = await sub.get()  # an event, or a resync after a broker reconnect
                if not query.plan.reads(_entity_type(item)):
                    self.skipped += 1
                    continue
                wait = query.last_run + self.interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)  # changes meanwhile fold into this run
                sub.drain()
                sub.overflowed = False
                try:
                    async with query.lock:
                        await self._refresh(query)
                except Exception:
                    # Never the end of the query's feed: run again after a backoff.
                    log.warning("live query failed; running it again", exc_info=True)
                    await backoff.wait()
                    sub.offer(RESYNC)
                    continue
                if query.latest is not None and _failed_inside(query.latest):
                    # A server-side failure inside the selection (a broken connection, a
                    # timeout): sent as the result says, then run again after a backoff
                    # rather than left until the family's next change.
                    await backoff.wait()
                    sub.offer(RESYNC)
                    continue
                backoff.reset()

    async def _refresh(self, query: LiveQuery, joining: bool = False) -> None:
        """Run the query (the caller holds its lock) in its family's turn (`budget`: one
        of the family's runs at a time, between its turn and its charge); a
        changed outcome goes to every watcher. A subscriber joining does not wait for the
        turn (its first result is due now; starts are paced per family already), but what
        the run took is charged all the same, to its family's budget only: charged to the
        process's too, one family starting live queries over and over kept every other
        family's results waiting (over 10 s; bench/NOTES.md)."""
        family = str(query.key[0])
        estimate = query.took
        async with nullcontext() if joining else self.budget.held(family, estimate):
            started = time.monotonic()
            if not query.watchers:
                self.budget.charge(family, 0.0, 0.0 if joining else estimate,
                                   process=not joining)
                return  # nobody left: the task is being stopped
            begun = self._shared_clock(1)
            try:
                outcome = await self._execute(query)
            finally:
                query.took = self._shared_clock(-1) - begun
                self.budget.charge(family, query.took, 0.0 if joining else estimate,
                                   process=not joining)
        query.started, query.last_run = started, started
        if query.latest is None or outcome.digest != query.latest.digest:
            outcome = self._keep(query, outcome)
            if query.latest is not None and outcome.digest == query.latest.digest:
                return  # refused again, as last time
            query.latest = outcome
            for watcher in list(query.watchers):
                watcher.put(outcome)

    def _keep(self, query: LiveQuery, outcome: Outcome) -> Outcome:
        """`outcome` if its family may keep it in place of the query's latest (`kept`:
        `live_bytes`), else an outcome that says it may not: no data, one RATE_LIMITED
        error (refused results alike compare equal, so it is sent once)."""
        if query.stopped:
            return outcome  # nobody left to send it to, and nothing counted for it
        family = query.key[0]
        if not self.kept.swap(family, query.kept, outcome.kept):
            ctx = next(iter(query.watchers)).ctx if query.watchers else None
            if ctx is not None:
                ctx.count_refusal("live_bytes")
            log.info("live result of %d bytes not kept: over live_bytes, family=%s",
                     len(outcome.data), family)
            outcome = Outcome.of(None, [{
                "message": "Your family's live queries keep too large results on this "
                           f"server (at most {self.kept.per_family:,} bytes together, less "
                           "while it keeps many families'): close one or select less; this "
                           "one is sent again when it fits",
                "extensions": {"code": "RATE_LIMITED", "limit": self.kept.per_family,
                               "traceId": uuid.uuid4().hex}}])
            self.kept.swap(family, query.kept, outcome.kept, force=True)  # a few bytes
        query.kept = outcome.kept
        return outcome

    def _shared_clock(self, change: int) -> float:
        """A clock that runs at 1/n while n live runs execute (stopped while none does),
        read as one starts (`change` 1) or ends (-1): what a run took is its share of
        the time they executed together. By wall time, each of a herd of runs (a
        server's 10,000 live queries joining at once) was charged the time it waited
        behind the others: 0.4 s a run where each cost ~3 ms, every family's budget and
        the process's in debt, and results 30-70 s late (bench/NOTES.md)."""
        now = time.monotonic()
        if self._running:
            self._clock += (now - self._clock_at) / self._running
        self._clock_at = now
        self._running += change
        return self._clock

    async def _execute(self, query: LiveQuery) -> Outcome:
        """The selection as a query, with the context of one of its subscribers (all of
        the same family and, where it matters, the same user) as it is now."""
        ctx = next(iter(query.watchers)).ctx
        user = ctx.require_user()
        if query.plan.per_user:
            user = await self._fresh(user)
        # Its own trace id, and no authentication of its own: the subscription's caller.
        # One of the caller's requests in flight while it runs (`operation_turn`), as a
        # socket's query: a family's first runs, which do not wait for the budget, run two
        # at a time, not as many as it can start (an adversary without the turn: 20 heavy
        # first runs a second held the whole pool; bench/NOTES.md).
        run = dataclasses.replace(ctx, user=user, connection_params=ctx.connection_params or {},
                                  trace_id=uuid.uuid4().hex, auth_error=None)
        self.executions += 1
        result = await query.schema.execute(query.plan.document,
                                            variable_values=query.plan.variables,
                                            context_value=run)
        errors = [e.formatted for e in result.errors or ()]
        return Outcome.of(result.data, errors, ctx.settings.max_response_bytes,
                          ctx.metrics.refusals if ctx.metrics is not None else None)

    async def _fresh(self, user: Caller) -> Caller:
        """The caller's row as it is now (`me` shows its changes), else as it was."""
        async with operation_scope(self.database) as op:
            rows = await op.db.rows(select(*CALLER_COLUMNS).where(m.User.id == user.id))
        return Caller(*rows[0]) if rows else user

    def stats(self) -> dict[str, int]:
        return {"live_queries": len(self.queries),
                "live_watchers": sum(len(q.watchers) for q in self.queries.values()),
                "live_executions": self.executions}


def _entity_type(item: Any) -> str | None:
    """The entity type a family event names; None (anything may have changed) for a
    resync, an overflow or a message in another form."""
    if isinstance(item, m.Event):
        return item.entity_type
    if isinstance(item, dict):
        value = item.get("entity_type")
        return value if isinstance(value, str) else None
    return None


def _failed_inside(outcome: Outcome) -> bool:
    """Whether a result carries an error of the server's own (not the caller's input or
    rights): INTERNAL_SERVER_ERROR, or one marked retryable."""
    for error in outcome.errors:
        extensions = error.get("extensions") or {}
        if extensions.get("code") == "INTERNAL_SERVER_ERROR" or extensions.get("retryable"):
            return True
    return False
