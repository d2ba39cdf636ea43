"""`KeyedPace`: what a family may start at once, then per second
(giftgraph.admission.pace)."""

from __future__ import annotations

import asyncio

import pytest

from giftgraph.admission.pace import KeyedPace
from giftgraph.errors import RateLimited


async def test_a_burst_goes_at_once_then_each_waits_its_turn() -> None:
    pace = KeyedPace("family_mutation_pace", rate=40.0, burst=3, wait=5.0)
    assert [await pace.take("f") for _ in range(3)] == [False] * 3  # the burst: no wait
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await pace.take("f") is True  # the fourth waits for a token
    assert loop.time() - started >= 1 / 40 - 0.005
    assert await pace.take("other") is False  # another family's bucket is its own


async def test_more_than_the_burst_at_once_waits_for_a_full_bucket_then_owes() -> None:
    pace = KeyedPace("family_mutation_pace", rate=10.0, burst=5, wait=5.0)
    assert await pace.take("f", 15) is False  # a full bucket lets one request through
    assert pace.tokens("f") < -9  # ... and what it took beyond it is owed
    pace.wait = 0.1
    with pytest.raises(RateLimited):
        await pace.take("f", 1)  # ~1 s of debt: refused after the wait


async def test_a_waiting_start_is_counted_under_its_bound() -> None:
    counted: list[str] = []

    class Refusals:
        def count(self, bound: str) -> None:
            counted.append(bound)

    pace = KeyedPace("subscription_starts_per_family", rate=100.0, burst=1, wait=None,
                     refusals=Refusals())  # type: ignore[arg-type]
    await pace.take("f")
    await pace.take("f")
    assert counted == ["subscription_starts_per_family"]


async def test_a_time_budget_charges_what_work_took_per_key_and_for_the_process() -> None:
    from prometheus_client import CollectorRegistry

    from giftgraph.admission import Refusals
    from giftgraph.admission.pace import TimeBudget

    refusals = Refusals(CollectorRegistry())
    budget = TimeBudget("live_seconds", share=0.1, total=1000.0, burst=0.05,
                        refusals=refusals, max_debt=2.0)

    async def goes_now(key: str, estimate: float = 0.0) -> bool:
        try:
            await asyncio.wait_for(budget.turn(key, estimate), 0.05)
        except TimeoutError:
            return False
        return True

    assert await goes_now("a", 0.01)  # 0.01 s reserved of its 0.05
    # It took far more than reserved: a owes ~0.45 s, ~4.5 s of turns (the process, all
    # families' 1,000 s a second, for well under a millisecond).
    budget.charge("a", 0.5, 0.01)
    assert not await goes_now("a")
    assert await goes_now("b")  # another family's budget is its own
    assert refusals.counter.labels("live_seconds")._value.get() == 1
    budget.charge("a", -0.5)  # (credit) a's next turn comes when it is looked at again
    assert await asyncio.wait_for(budget.turn("a"), 1.5) is None
    # Debt is capped: 100 s of work owes what 2 s does (~20 s of a's turns, not 1,000).
    budget.charge("a", 100.0)
    assert budget.keys.tokens("a") == pytest.approx(-2.0, abs=0.01)
    # All families together: the process's budget, once spent, holds every family back.
    tight = TimeBudget("live_seconds", share=10.0, total=0.1, burst=0.05, max_debt=2.0)
    tight.charge("c", 1.0)
    try:
        await asyncio.wait_for(tight.turn("b"), 0.05)
        raise AssertionError("b went while the process owed ~1 s")
    except TimeoutError:
        pass


async def test_the_process_budget_takes_families_in_turn() -> None:
    """Ten runs of one family wait for the process's budget; another family's run, asked
    for after them, goes second, not eleventh: a family has one run at a time waiting
    for the process's budget."""
    from giftgraph.admission.pace import TimeBudget

    budget = TimeBudget("live_seconds", share=1000.0, total=1.0, burst=0.05, max_debt=2.0)
    budget.charge("x", 0.3)  # the process owes ~0.25 s: every turn now waits
    order: list[str] = []

    async def run(key: str) -> None:
        await budget.turn(key, 0.05)
        order.append(key)

    many = [asyncio.ensure_future(run("a")) for _ in range(10)]
    await asyncio.sleep(0.01)  # all ten asked first
    await asyncio.wait_for(run("b"), 5)
    for task in many:
        task.cancel()
    await asyncio.gather(*many, return_exceptions=True)
    assert order.index("b") <= 1, order


async def test_the_process_budget_goes_first_to_the_family_that_used_least() -> None:
    """Both wait for the process's budget: the family that has used less of its own goes
    first though it asked later; and the process's debt is at most its burst, so a run
    that took long holds every family back for at most that."""
    from giftgraph.admission.pace import TimeBudget

    budget = TimeBudget("live_seconds", share=0.1, total=1.0, burst=0.05, max_debt=2.0)
    budget.charge("heavy", 0.04, process=False)  # heavy has 0.01 s of its own left
    budget.charge("x", 100.0)  # a run of 100 s: the process owes its burst, not 100 s
    assert budget.process.tokens("") == pytest.approx(-0.05, abs=0.01)
    order: list[str] = []

    async def run(key: str) -> None:
        await budget.turn(key, 0.005)
        order.append(key)

    heavy = asyncio.ensure_future(run("heavy"))
    await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(heavy, run("light")), 2)
    assert order == ["light", "heavy"]


async def test_a_familys_next_piece_waits_until_its_last_is_charged() -> None:
    """Let in on its estimate, a piece that took far longer is charged before the
    family's next piece is let in: which then waits for the family's budget."""
    from giftgraph.admission.pace import TimeBudget

    budget = TimeBudget("live_seconds", share=0.1, total=1000.0, burst=0.05, max_debt=2.0)
    order: list[str] = []

    async def piece(name: str, took: float) -> None:
        async with budget.held("a", 0.001):
            order.append(name)
            await asyncio.sleep(0.02)
            budget.charge("a", took, 0.001)

    first = asyncio.ensure_future(piece("first", 0.5))
    second = asyncio.ensure_future(piece("second", 0.0))
    await asyncio.sleep(0.2)
    assert order == ["first"]  # a owes ~0.45 s: ~4.5 s of its share
    assert first.done()
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    assert not budget._running  # nothing kept for a family with nothing running
