"""W4 writes: setListItemStatus round-trips while 1000 subscribers watch the list."""

from __future__ import annotations

import time
from array import array
from pathlib import Path
from typing import Any

import orjson
from rich.table import Table

from bench.fanout import PER_WORKER, SUBSCRIPTION
from bench.harness import (
    SET_STATUS,
    api_server,
    biggest_list,
    cpu_mark,
    cpu_use,
    login,
    metric,
    neighbour,
    summarize,
    wait_for,
)
from bench.report import Options, Outcome, Target, few_replies, ms, pct, rate
from bench.workers import Crew, measure_http, subscriber_params

SUBSCRIBERS = 1000
CONCURRENCY = (1, 16)
QUICK_CONCURRENCY = (1, 4)
DRAIN = 30.0  # seconds to wait for the last events to reach every subscriber


def run(database_url: str, opt: Options) -> Outcome:
    levels = QUICK_CONCURRENCY if opt.quick else CONCURRENCY
    results: list[dict[str, Any]] = []
    windows: list[tuple[float, float]] = []  # CLOCK_MONOTONIC span of each level and its drain
    with api_server(database_url) as api, opt.progress() as progress:
        token = login(api.base)
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        list_id, _ = biggest_list(api.base, token)
        task = progress.add_task(f"{SUBSCRIBERS} subscribers: connecting", total=SUBSCRIBERS)
        params = subscriber_params(SUBSCRIBERS, PER_WORKER // 2, protocol="graphql",
                                   url=f"{api.ws}/graphql", token=token, query=SUBSCRIPTION,
                                   variables={"l": list_id}, record=False, lag=True)
        with Crew("subscribers", params) as subs:
            ready = subs.wait_ready(120, lambda: progress.update(task, completed=subs.total))
            connected = sum(r["connected"] for r in ready)
            if connected < SUBSCRIBERS:
                raise RuntimeError(f"{SUBSCRIBERS - connected} subscribers could not connect, "
                                   f"e.g. {[f for r in ready for f in r['failures']][:1]}")
            wait_for(lambda: metric(api.base, "giftgraph_subscriptions_active"), connected, 60)
            progress.remove_task(task)
            for c in levels:
                _, items = biggest_list(api.base, token)  # statuses as they are now
                if len(items) < c:
                    raise RuntimeError(f"the demo list has {len(items)} items; {c} needed")
                cycles = [[orjson.dumps({"query": SET_STATUS, "variables": {"i": it.id, "s": s}})
                           for s in (neighbour(it.status), it.status)] for it in items[:c]]
                subs.pump(0.3)
                before = subs.total
                began = time.monotonic()
                mark = cpu_mark(api.pid)
                row = measure_http(f"{api.base}/graphql", cycles, headers, opt.duration,
                                   progress, f"setListItemStatus c={c}")
                row.update(cpu_use(mark, cpu_mark(api.pid)))  # while the load lasted
                expected = row["ok_total"] * connected
                drain = progress.add_task(f"c={c}: events reaching subscribers", total=expected)
                deadline = time.monotonic() + DRAIN
                while subs.total - before < expected and time.monotonic() < deadline:
                    subs.pump(0.1)
                    progress.update(drain, completed=subs.total - before)
                progress.remove_task(drain)
                windows.append((began, time.monotonic()))
                # the server's CPU for each mutation, its fan-out to every subscriber included
                row["server_cpu_ms_per_mutation"] = (
                    1000 * cpu_use(mark, cpu_mark(api.pid))["server_cpu_s"] / row["ok_total"]
                    if row["ok_total"] else float("nan"))
                row.update(subscribers=connected, events_expected=expected,
                           events_delivered=subs.total - before,
                           delivered_share=(subs.total - before) / expected if expected else 0)
                results.append(row)
            finished = subs.finish()
        for row, window in zip(results, windows, strict=True):
            row.update(delivery_lag(finished, window))

    table = Table(title=f"W4 writes: setListItemStatus with {SUBSCRIBERS:,} subscribers on the "
                        f"list ({opt.duration:g} s per level)")
    for col in ("concurrency", "mutations/s", "p50 ms", "p99 ms", "max ms", "errors",
                "events delivered", "event lag p50 ms", "p99 ms", "server CPU",
                "CPU ms/mutation", "machine busy"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(str(r["concurrency"]), rate(r["rps"]), ms(r["p50_ms"]), ms(r["p99_ms"]),
                      ms(r["max_ms"]), str(r["errors"]),
                      f"{r['events_delivered']:,} ({pct(r['delivered_share'])})",
                      ms(r["lag_p50_ms"]), ms(r["lag_p99_ms"]), pct(r["server_cpu_share"]),
                      ms(r["server_cpu_ms_per_mutation"]), pct(r["machine_busy_share"]))
    targets = [Target(f"W4 p99 latency at concurrency {r['concurrency']}",
                      f"{ms(r['p99_ms'])} ms", "≤ 50 ms", r["p99_ms"] <= 50) for r in results]
    notes = [f"c={r['concurrency']}: {r['errors']} errors, e.g. {r['error_sample'][0]}"
             for r in results if r["errors"]]
    notes += [n for r in results if (n := few_replies(f"c={r['concurrency']}", r))]
    notes.append("server CPU: the server process's CPU time over the level's duration (one "
                 "core = 100%); CPU ms/mutation: its CPU per mutation, the fan-out to every "
                 "subscriber included; machine busy: all cores' busy share meanwhile (server, "
                 "PostgreSQL, load generator and subscriber processes): near 100%, the "
                 "machine is the limit, not the server")
    return Outcome("writes", "W4 writes",
                   {"duration_s": opt.duration, "subscribers": SUBSCRIBERS,
                    "concurrency": levels, "mutation": SET_STATUS,
                    "subscription": SUBSCRIPTION, "quick": opt.quick},
                   results, table, targets, plot, notes)


def delivery_lag(workers: list[dict[str, Any]], window: tuple[float, float]) -> dict[str, Any]:
    """Commit-to-receipt lag of the events that arrived within `window` (all subscribers):
    how far the live view trails the writes. Not a target of the issue; reported because
    mutation latency alone would hide a fan-out that falls behind."""
    lags: list[float] = []
    for w in workers:
        arrivals, values = array("d"), array("d")
        arrivals.frombytes(w["lag_arrivals"])
        values.frombytes(w["lags"])
        lags += [v for t, v in zip(arrivals, values, strict=True) if window[0] <= t <= window[1]]
    stats = summarize(lags)
    return {"lag_p50_ms": stats["p50_ms"], "lag_p99_ms": stats["p99_ms"],
            "lag_max_ms": stats["max_ms"], "lag_samples": len(lags)}


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for r in results:
        right.plot(r["cdf_ms"], range(101), label=f"concurrency {r['concurrency']}")
    xs = range(len(results))
    bars = left.bar(xs, [r["rps"] for r in results], color="tab:blue")
    left.bar_label(bars, fmt="%.0f")
    left.set_xticks(list(xs), [f"c={r['concurrency']}" for r in results])
    left.set(ylabel="mutations/s", title=f"setListItemStatus with {SUBSCRIBERS:,} subscribers")
    right.axvline(50, color="tab:red", ls="--", lw=0.8, label="target p99 50 ms")
    right.set(xscale="log", xlabel="round-trip ms", ylabel="% of mutations",
              title="Latency CDF")
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
