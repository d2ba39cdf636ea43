"""What a live run is charged (giftgraph.live.queries.LiveQueries._refresh): its share of
the time live runs were executing, not the wall time it waited behind the others; a
subscriber's first run (which takes no turn) to its family's budget only."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from giftgraph.admission.pace import TimeBudget
from giftgraph.live.frames import Outcome
from giftgraph.live.queries import LiveQueries, LiveQuery, Watcher


class Recorded(TimeBudget):
    def __init__(self) -> None:
        super().__init__("live_seconds", 0.1, 0.35, 0.5)
        self.charged: dict[str, float] = {}

    def charge(self, key: str, seconds: float, estimate: float = 0.0, *,
               process: bool = True) -> None:
        self.charged[key] = self.charged.get(key, 0.0) + seconds - estimate
        super().charge(key, seconds, estimate, process=process)


async def herd(n: int, each: float, joining: bool = True) -> Recorded:
    """`n` families' live queries joining at once, each run taking `each` seconds of wall
    time while all of them run together (as a herd's runs wait for the loop)."""
    budget = Recorded()
    live = LiveQueries(hub=None, database=None, budget=budget)  # type: ignore[arg-type]

    async def execute(_: LiveQuery) -> Outcome:
        await asyncio.sleep(each)
        return Outcome.of({"persons": {"totalCount": 0}}, [])

    live._execute = execute  # type: ignore[method-assign]
    queries = []
    for _ in range(n):
        key: Any = (uuid.uuid4(), "ADMIN", "", b"")
        query = LiveQuery(key, plan=None, schema=None)  # type: ignore[arg-type]
        query.watchers.add(Watcher(ctx=None, interval=0))  # type: ignore[arg-type]
        queries.append(query)
    await asyncio.gather(*(live._refresh(q, joining=joining) for q in queries))
    return budget


async def test_a_herd_of_runs_is_charged_the_time_it_ran_not_each_runs_wait() -> None:
    budget = await herd(50, 0.2)
    families = budget.charged
    assert len(families) == 50
    # 50 runs overlapping for ~0.2 s: ~4 ms each (by wall time, 0.2 s each: 10 s in all,
    # the process's budget 2 s in debt and every family's later results held back)
    assert all(0.002 < v < 0.02 for v in families.values()), families
    assert 0.15 < sum(families.values()) < 0.5
    # First runs take no turn, and leave the process's budget alone: charged to it, one
    # family starting live queries over and over put every other family's results behind.
    assert budget.process.tokens("") == budget.process.burst


async def test_runs_after_changes_are_charged_to_the_process_too() -> None:
    budget = await herd(20, 0.1, joining=False)  # 20 runs overlapping for ~0.1 s
    spent = budget.process.burst - budget.process.tokens("")
    assert 0.04 < spent < 0.3  # ~0.1 s charged, less what refilled meanwhile


async def test_a_run_alone_is_charged_its_wall_time() -> None:
    budget = await herd(1, 0.1)
    (charged,) = budget.charged.values()
    assert 0.09 < charged < 0.3
