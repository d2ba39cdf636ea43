"""W4 writes: setListItemStatus round-trips while 1000 subscribers watch the list, against
the floor: the same writes and fan-out with no GraphQL layer (`bench/floor_writes.py`)."""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.table import Table

from bench.fanout import PER_WORKER, SUBSCRIPTION
from bench.harness import (
    SET_STATUS,
    Server,
    api_server,
    biggest_list,
    cpu_mark,
    cpu_use,
    dsn,
    fetchval,
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
SERVERS = {"graphql": "GiftGraph", "floor": "floor"}


def run(database_url: str, opt: Options) -> Outcome:
    levels = QUICK_CONCURRENCY if opt.quick else CONCURRENCY
    api = api_server(database_url)
    floor = Server("bench.floor_writes:create",
                   {"BENCH_FLOOR_DSN": dsn(database_url),
                    "GIFTGRAPH_JWT_SECRET": api.env["GIFTGRAPH_JWT_SECRET"]},
                   args=("--ws", "websockets-sansio"))
    api.start()
    floor.start()
    with api, floor, opt.progress() as progress:
        token = login(api.base)
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        list_id, _ = biggest_list(api.base, token)

        def items() -> list[Any]:  # statuses as they are now (the floor changes them too)
            return biggest_list(api.base, token)[1]

        # One server after the other, each with its own 1,000 subscribers: the API's
        # subscribers are gone before the floor writes events to the same topics (the API's
        # hub would otherwise see the gap and fetch them from the Event table).
        ours = measure(api, database_url, levels, opt, progress, headers, items,
                       subscriber_params(SUBSCRIBERS, PER_WORKER // 2, protocol="graphql",
                                         url=f"{api.ws}/graphql", token=token,
                                         query=SUBSCRIPTION, variables={"l": list_id},
                                         record=False, lag=True),
                       lambda: metric(api.base, "giftgraph_subscriptions_active"))
        theirs = measure(floor, database_url, levels, opt, progress, headers, items,
                         subscriber_params(SUBSCRIBERS, PER_WORKER // 2, protocol="raw",
                                           url=f"{floor.ws}/ws", record=False, lag=True),
                         lambda: float(httpx.get(f"{floor.base}/count").json()["clients"]))
    results = [{"concurrency": c, "graphql": g, "floor": f, "ratio": share(g["rps"], f["rps"])}
               for c, g, f in zip(levels, ours, theirs, strict=True)]

    table = Table(title=f"W4 writes: setListItemStatus with {SUBSCRIBERS:,} subscribers on the "
                        f"list ({opt.duration:g} s per level; floor: the same writes and "
                        "fan-out without GraphQL)")
    for col in ("server", "concurrency", "mutations/s", "vs floor", "p50 ms", "p99 ms",
                "max ms", "errors", "events delivered", "event lag p50 ms", "p99 ms",
                "server CPU", "CPU ms/mutation", "machine busy"):
        table.add_column(col, justify="right")
    for server, label in SERVERS.items():
        for r in results:
            x = r[server]
            table.add_row(label, str(r["concurrency"]), rate(x["rps"]),
                          f"{share(x['rps'], r['floor']['rps']):.2f}x", ms(x["p50_ms"]),
                          ms(x["p99_ms"]), ms(x["max_ms"]), str(x["errors"]),
                          f"{x['events_delivered']:,} ({pct(x['delivered_share'])})",
                          ms(x["lag_p50_ms"]), ms(x["lag_p99_ms"]), pct(x["server_cpu_share"]),
                          ms(x["server_cpu_ms_per_mutation"]), pct(x["machine_busy_share"]))
    targets = [Target(f"W4 p99 latency at concurrency {r['concurrency']}",
                      f"{ms(r['graphql']['p99_ms'])} ms", "≤ 50 ms", r["graphql"]["p99_ms"] <= 50)
               for r in results]
    notes = [f"{label} c={r['concurrency']}: {r[server]['errors']} errors, e.g. "
             f"{r[server]['error_sample'][0]}"
             for server, label in SERVERS.items() for r in results if r[server]["errors"]]
    notes += [n for server, label in SERVERS.items() for r in results
              if (n := few_replies(f"{label} c={r['concurrency']}", r[server]))]
    notes += [f"c={r['concurrency']}: event rows per mutation: GiftGraph "
              f"{r['graphql']['event_rows_per_mutation']:.2f}, floor "
              f"{r['floor']['event_rows_per_mutation']:.2f}"
              + ("" if r["graphql"]["event_rows_per_mutation"]
                 == r["floor"]["event_rows_per_mutation"] else
                 ": they differ (a request that failed in transit may still have committed)"
                 if r["graphql"]["errors"] or r["floor"]["errors"] else ": NOT THE SAME WORK")
              for r in results]
    notes += [f"the floor at c={r['concurrency']}: p99 {ms(r['floor']['p99_ms'])} ms, "
              f"{'within' if r['floor']['p99_ms'] <= 50 else 'over'} the 50 ms target itself"
              for r in results]
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


def share(x: float, of: float) -> float:
    return x / of if of else float("nan")


def measure(server: Server, database_url: str, levels: tuple[int, ...], opt: Options,
            progress: Any, headers: dict[str, str], items: Callable[[], list[Any]],
            params: list[dict[str, Any]], attached: Callable[[], float]) -> list[dict[str, Any]]:
    """Each level against `server` with `SUBSCRIBERS` subscribers (`params`) attached:
    mutations/s and latency, CPU, every event's delivery to every subscriber, and the event
    rows each mutation wrote (the same work: the floor's must equal the API's)."""
    results: list[dict[str, Any]] = []
    windows: list[tuple[float, float]] = []  # CLOCK_MONOTONIC span of each level and its drain
    task = progress.add_task(f"{SUBSCRIBERS} subscribers: connecting", total=SUBSCRIBERS)
    with Crew("subscribers", params) as subs:
        ready = subs.wait_ready(120, lambda: progress.update(task, completed=subs.total))
        connected = sum(r["connected"] for r in ready)
        if connected < SUBSCRIBERS:
            raise RuntimeError(f"{SUBSCRIBERS - connected} subscribers could not connect, "
                               f"e.g. {[f for r in ready for f in r['failures']][:1]}")
        wait_for(attached, connected, 60)
        progress.remove_task(task)
        for c in levels:
            now = items()
            if len(now) < c:
                raise RuntimeError(f"the demo list has {len(now)} items; {c} needed")
            cycles = [[orjson.dumps({"query": SET_STATUS, "variables": {"i": it.id, "s": s}})
                       for s in (neighbour(it.status), it.status)] for it in now[:c]]
            subs.pump(0.3)
            before = subs.total
            rows = fetchval(database_url, "SELECT count(*) FROM events")
            began = time.monotonic()
            mark = cpu_mark(server.pid)
            row = measure_http(f"{server.base}/graphql", cycles, headers, opt.duration,
                               progress, f"{server.app.split(':')[0]} c={c}")
            row.update(cpu_use(mark, cpu_mark(server.pid)))  # while the load lasted
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
                1000 * cpu_use(mark, cpu_mark(server.pid))["server_cpu_s"] / row["ok_total"]
                if row["ok_total"] else float("nan"))
            row["event_rows_per_mutation"] = (
                (fetchval(database_url, "SELECT count(*) FROM events") - rows) / row["ok_total"]
                if row["ok_total"] else float("nan"))
            row.update(subscribers=connected, events_expected=expected,
                       events_delivered=subs.total - before,
                       delivered_share=(subs.total - before) / expected if expected else 0)
            results.append(row)
        finished = subs.finish()
    for row, window in zip(results, windows, strict=True):
        row.update(delivery_lag(finished, window))
    return results


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
    colours = {"graphql": "tab:blue", "floor": "tab:gray"}
    styles = ["-", "--", ":"]
    for server, label in SERVERS.items():
        for r, style in zip(results, styles, strict=False):
            right.plot(r[server]["cdf_ms"], range(101), style, color=colours[server],
                       label=f"{label} c={r['concurrency']}")
    xs = range(len(results))
    width = 0.4
    for k, (server, label) in enumerate(SERVERS.items()):
        bars = left.bar([x + (k - 0.5) * width for x in xs], [r[server]["rps"] for r in results],
                        width, color=colours[server], label=label)
        left.bar_label(bars, fmt="%.0f")
    left.set_xticks(list(xs), [f"c={r['concurrency']}" for r in results])
    left.set(ylabel="mutations/s", title=f"setListItemStatus with {SUBSCRIBERS:,} subscribers")
    left.legend()
    right.axvline(50, color="tab:red", ls="--", lw=0.8, label="target p99 50 ms")
    right.set(xscale="log", xlabel="round-trip ms", ylabel="% of mutations",
              title="Latency CDF")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
