"""The in-process sliding-window counters behind every rate limit in one process."""

from __future__ import annotations

from limits import parse

from giftgraph.ratelimit import LocalWindows

PER_MINUTE = parse("10/minute")
T0 = 1_800_000_000.0  # the start of a minute (divisible by 60)


def test_a_budget_is_spent_then_refused_until_the_next_window() -> None:
    windows = LocalWindows()
    for k in range(10):
        assert windows.hit(PER_MINUTE, ("alice",), 1, now=T0 + k) is None
    wait = windows.hit(PER_MINUTE, ("alice",), 1, now=T0 + 15)
    assert wait == 45  # this window's count alone is spent: its end
    assert windows.hit(PER_MINUTE, ("bob",), 1, now=T0 + 15) is None  # keys are apart


def test_the_previous_window_counts_by_its_remaining_overlap() -> None:
    windows = LocalWindows()
    assert windows.hit(PER_MINUTE, ("alice",), 10, now=T0 + 59) is None
    # 15 s into the next minute, 3/4 of the previous window still overlaps: 7.5 spent
    assert windows.hit(PER_MINUTE, ("alice",), 2, now=T0 + 75) is None  # 9.5
    wait = windows.hit(PER_MINUTE, ("alice",), 1, now=T0 + 75)
    assert wait is not None
    assert 0 < wait <= 45
    # once the previous window's weight has fallen far enough, the hit goes through
    assert windows.hit(PER_MINUTE, ("alice",), 1, now=T0 + 75 + wait + 0.01) is None
    # two windows later nothing of it is left: a whole budget again
    assert windows.hit(PER_MINUTE, ("alice",), 10, now=T0 + 181) is None


def test_a_cost_larger_than_what_is_left_is_refused_whole() -> None:
    windows = LocalWindows()
    assert windows.hit(PER_MINUTE, ("alice",), 8, now=T0) is None
    assert windows.hit(PER_MINUTE, ("alice",), 3, now=T0 + 1) is not None
    assert windows.hit(PER_MINUTE, ("alice",), 2, now=T0 + 1) is None  # nothing was taken


def test_passed_windows_are_swept_so_memory_follows_the_active_keys() -> None:
    windows = LocalWindows(sweep_every=0)
    for k in range(1000):
        windows.hit(PER_MINUTE, (f"ip-{k}",), 1, now=T0)
    assert len(windows.windows) == 1000
    windows.hit(PER_MINUTE, ("late",), 1, now=T0 + 60)  # the others' window is the previous
    assert len(windows.windows) == 1001
    windows.hit(PER_MINUTE, ("later",), 1, now=T0 + 125)  # theirs has passed entirely
    assert set(windows.windows) == {(PER_MINUTE.key_for(), "later"),
                                    (PER_MINUTE.key_for(), "late")}
