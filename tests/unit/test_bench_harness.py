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
