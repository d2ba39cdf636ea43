"""The benchmark harness's reading of a server's log."""

from __future__ import annotations

import pytest
from bench.harness import Server


def test_trouble_quotes_what_a_server_logged_about_problems_since_a_mark() -> None:
    server = Server("app:create", {})
    server.log.write(b'{"event": "startup", "level": "warning"}\n')
    mark, said = server.trouble()
    assert said == ['{"event": "startup", "level": "warning"}']
    server.log.write(b'{"event": "graphql.operation", "level": "info"}\n'
                     b"Traceback (most recent call last):\n"
                     b'  File "x.py", line 1\n'
                     b"ConnectionResetError: [Errno 104] Connection reset by peer\n")
    mark2, said = server.trouble(mark)
    assert said == ["Traceback (most recent call last):",
                    "ConnectionResetError: [Errno 104] Connection reset by peer"]
    assert mark2 > mark
    assert server.trouble(mark2) == (mark2, [])  # nothing new: the server said nothing


def test_giftgraph_bench_without_a_workload_runs_them_all(monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.runner

    from giftgraph import cli

    calls: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setattr(bench.runner, "run",
                        lambda workload, **kw: calls.append((workload, kw)) or 0)
    assert cli.main(["bench"]) == 0
    assert cli.main(["bench", "reads", "--quick"]) == 0
    assert calls == [("all", {"duration": None, "quick": False, "keep_db": False}),
                     ("reads", {"duration": None, "quick": True, "keep_db": False})]


def test_cpu_use_measures_a_process_that_computes_and_one_that_waits() -> None:
    import math
    import os
    import time

    from bench.harness import cpu_mark, cpu_use

    before = cpu_mark(os.getpid())
    started, cpu = time.monotonic(), time.process_time()
    # Computes until it has had 0.3 s of CPU (not for 0.3 s of wall time: on a loaded
    # machine it may get only part of a core meanwhile).
    while time.process_time() - cpu < 0.3 and time.monotonic() - started < 30:
        pass
    wall = time.monotonic() - started
    busy = cpu_use(before, cpu_mark(os.getpid()))
    assert 0.25 <= busy["server_cpu_s"] <= 0.4  # clock ticks: 10 ms resolution
    assert busy["server_cpu_share"] == pytest.approx(busy["server_cpu_s"] / wall, rel=0.2)
    assert 0 < busy["machine_busy_share"] <= 1

    before = cpu_mark(os.getpid())
    time.sleep(0.3)  # waits
    assert cpu_use(before, cpu_mark(os.getpid()))["server_cpu_share"] < 0.1
    assert math.isnan(cpu_use(None, before)["server_cpu_share"])  # off Linux: unknown


def test_giftgraph_bench_knows_fairness_and_soak(monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.runner

    from giftgraph import cli

    calls: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setattr(bench.runner, "run",
                        lambda workload, **kw: calls.append((workload, kw)) or 0)
    assert cli.main(["bench", "fairness", "--quick"]) == 0
    assert cli.main(["bench", "soak", "--duration", "60"]) == 0
    assert calls == [("fairness", {"duration": None, "quick": True, "keep_db": False}),
                     ("soak", {"duration": 60.0, "quick": False, "keep_db": False})]
    assert {"fairness", "soak"} <= set(bench.runner.WORKLOADS)
    assert not {"fairness", "soak"} & set(bench.runner.ALL)  # `all` stays W1-W4


def test_fairness_ratios_windows_and_schedule() -> None:
    import math

    from bench.fairness import baseline, ratio, refusals, schedule, within

    assert baseline([20.0, 681.0, 25.0, float("nan"), 30.0]) == 27.5  # one noisy idle phase
    assert math.isnan(baseline([float("nan")]))
    assert ratio(30.0, 10.0) == 3.0
    assert math.isnan(ratio(30.0, 0.0))
    assert math.isnan(ratio(float("nan"), 10.0))
    samples = [(1.0, 0.1), (2.0, 0.2), (5.0, 0.5), (9.0, 0.9)]
    assert within(samples, [(1.5, 5.0)]) == [0.2, 0.5]
    assert within(samples, [(0.0, 1.0), (8.0, 10.0)]) == [0.1, 0.9]
    assert schedule(("a", "b"), 10.0) == [("idle", 10.0), ("a", 10.0), ("idle", 5.0),
                                          ("b", 10.0), ("idle", 5.0)]
    assert schedule(("a",), 3.0)[-1] == ("idle", 2.0)
    page = ('# HELP giftgraph_admission_refused_total x\n'
            'giftgraph_admission_refused_total{bound="tokens"} 3.0\n'
            'giftgraph_admission_refused_total{bound="depth"} 0.0\n'
            'giftgraph_requests_total 9.0\n')
    assert refusals(page) == {"tokens": 3.0, "depth": 0.0}
    from bench.fairness import pauses
    page = ('giftgraph_gc_pause_seconds_bucket{generation="2",le="0.01"} 3.0\n'
            'giftgraph_gc_pause_seconds_bucket{generation="2",le="+Inf"} 5.0\n'
            'giftgraph_gc_pause_seconds_bucket{generation="0",le="0.01"} 30.0\n'
            'giftgraph_gc_pause_seconds_bucket{generation="0",le="+Inf"} 30.0\n'
            'giftgraph_event_loop_lag_seconds_bucket{le="0.01"} 100.0\n'
            'giftgraph_event_loop_lag_seconds_bucket{le="+Inf"} 104.0\n')
    assert pauses(page) == {"gc gen2": 2.0, "gc gen0": 0.0, "loop lag": 4.0}


def test_attack_documents_meet_the_limits_they_aim_at() -> None:
    import orjson
    from bench.attacks import (
        doubling_document,
        flat_document,
        largest_doubling,
        padded_subscribe,
        search_pattern,
        token_count,
    )
    from graphql import parse

    doc = doubling_document(3)
    parse(doc)
    assert doc.count("...F2") == 2
    assert "fragment F0 on Query { __typename }" in doc
    for limit in (2000, 500, 2001):
        k = largest_doubling(limit)
        assert token_count(doubling_document(k)) < limit <= token_count(doubling_document(k + 1))
        assert token_count(flat_document(limit)) == limit - 1
    for size in (65536 - 256, 65536 + 256, 2**20):
        message = padded_subscribe(size, "7")
        assert len(message) == size
        assert orjson.loads(message)["payload"]["query"].startswith("{ __typename }")
    assert len(search_pattern(100)) == 100


def test_soak_delivery_checks_use_the_listing_order_not_seq_arithmetic() -> None:
    from bench.soak import check_delivery, newer_than, replay_ok

    listing = ["7", "5", "4", "2", "1"]  # newest first, gaps: one global sequence
    assert newer_than(listing, "4") == ["5", "7"]
    assert newer_than(listing, None) == ["1", "2", "4", "5", "7"]
    with pytest.raises(KeyError):
        newer_than(listing, "3")
    ok = check_delivery(["5", "7"], ["5", "7"])
    assert (ok["lost"], ok["duplicates"], ok["unexpected"]) == (0, 0, 0)
    bad = check_delivery(["2", "4", "5", "7"], ["2", "5", "5", "9"])
    assert (bad["lost"], bad["duplicates"], bad["unexpected"]) == (2, 1, 1)
    assert bad["lost_sample"] == ["4", "7"]
    assert replay_ok(["4", "5", "7"], ["4", "5"])  # completed before the last one
    assert not replay_ok(["4", "5", "7"], ["4", "7"])  # one skipped
    assert not replay_ok(["4", "5", "7"], ["4", "4"])


def test_soak_trend_tells_a_leak_from_a_flat_line_after_warm_up() -> None:
    import math

    from bench.soak import slope, tail, trend

    assert slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert math.isnan(slope([(1, 1)]))
    points = [(float(t), 100.0) for t in range(0, 31)]
    assert tail(points)[0][0] == 10.0
    warm = [(t, 50.0 + t * 5 if t < 10 else 100.0) for t, _ in points]  # grows, then flat
    assert trend(warm)["flat"] is True
    leak = [(t, 100.0 + t) for t, _ in points]  # +20 over the last 20 s: 20% of the mean
    r = trend(leak)
    assert r["growth"] == pytest.approx(20.0)
    assert r["flat"] is False
    assert trend(leak, floor=25.0)["flat"] is True
    assert trend([])["flat"] is None


def test_a_bench_server_runs_this_checkouts_package() -> None:
    import sys

    from bench.harness import ROOT, Server

    server = Server("app:create", {})
    server.command = lambda: [sys.executable, "-c",  # type: ignore[method-assign]
                              "import giftgraph, bench; print(giftgraph.__file__)"]
    server.start()
    assert server.proc is not None
    server.proc.wait(30)
    server.log.seek(0)
    printed = server.log.read().decode().strip()
    server.__exit__()
    assert printed == str(ROOT / "src" / "giftgraph" / "__init__.py")
