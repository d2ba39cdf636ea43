"""W2 fan-out: N graphql-transport-ws subscribers of one list, one mutation, time to each
subscriber; baseline: N raw WebSocket clients of a bare Starlette broadcast, same payload size."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from rich.table import Table

from bench.harness import (
    HTTP,
    SET_STATUS,
    Item,
    Server,
    api_server,
    biggest_list,
    gql,
    login,
    metric,
    neighbour,
    summarize,
    wait_for,
)
from bench.report import Options, Outcome, Target, ms, pct
from bench.workers import Crew, subscriber_params

SUBSCRIPTION = """subscription($l: ID!) { listEvents(listId: $l) {
  seq kind topic entityType at node { id ... on ListItem { status quantity } } } }"""
SIZES = (100, 1000, 5000, 10_000)
QUICK_SIZES = (100, 1000)
PER_WORKER = 2500  # sockets per client process
TIMEOUT = 30.0  # seconds a subscriber waits for an event
WARMUP = 1  # events sent (and not counted) before the measured ones


def fan_out(label: str, params: list[dict[str, Any]], listening: Callable[[], float],
            fire: Callable[[int], None], events: int, progress: Any) -> dict[str, Any]:
    """Connect the subscribers, fire `events` events one by one (each awaited until all arrive
    or TIMEOUT), and return per-event latencies from the fire time to each arrival."""
    n = sum(p["count"] for p in params)
    task = progress.add_task(f"{label}: connecting", total=n)
    with Crew("subscribers", params) as crew:
        ready = crew.wait_ready(120 + n / 20, lambda: progress.update(task, completed=crew.total))
        connected = sum(r["connected"] for r in ready)
        wait_for(listening, connected, 60)  # the server has every subscription
        time.sleep(0.5)
        fired: list[float] = []
        for k in range(events):
            progress.update(task, description=f"{label}: event {k + 1}/{events}", completed=0,
                            total=connected)
            crew.pump(0.3)
            before = crew.total
            fired.append(time.monotonic())
            fire(k)
            while crew.total - before < connected and time.monotonic() < fired[-1] + TIMEOUT:
                crew.pump(0.05)
                progress.update(task, completed=crew.total - before)
        results = crew.finish()
    progress.remove_task(task)
    # Events are told apart by seq; the k-th distinct seq is the k-th event fired.
    arrivals = [log for r in results for log in r["arrivals"]]
    seqs = sorted({seq for log in arrivals for seq, _ in log})
    latencies: list[float] = []
    for log in arrivals:
        for seq, t in log:
            k = seqs.index(seq)
            if k >= WARMUP and t - fired[k] <= TIMEOUT:
                latencies.append(t - fired[k])
    measured = events - WARMUP
    stats = summarize(latencies)
    stats.update(subscribers=n, connected=connected, events=measured,
                 received_share=len(latencies) / (n * measured),
                 failed_connections=sum(r["failed"] for r in results),
                 failure_sample=[f for r in ready for f in r["failures"]][:3],
                 bad_messages=sum(r["bad"] for r in results),
                 payload_bytes=max(r["sample_bytes"] for r in results))
    return stats


def run(database_url: str, opt: Options) -> Outcome:
    sizes = QUICK_SIZES if opt.quick else SIZES
    events = WARMUP + (1 if opt.quick else 2)
    api = api_server(database_url)
    raw = Server("bench.raw_ws:create", {})
    results: list[dict[str, Any]] = []
    api.start()
    raw.start()
    with api, raw, opt.progress() as progress:
        token = login(api.base)
        list_id, items = biggest_list(api.base, token)
        item: Item = items[0]
        home = item.status

        def mutate(_: int) -> None:
            item.status = neighbour(item.status) if item.status == home else home
            gql(api.base, SET_STATUS, {"i": item.id, "s": item.status}, token)

        payload_bytes = 0

        def broadcast(k: int) -> None:
            head = orjson.dumps({"seq": k + 1, "pad": ""})
            body = head[:-2] + b"x" * max(0, payload_bytes - len(head)) + b'"}'
            HTTP.post(f"{raw.base}/broadcast", content=body)

        def clients() -> float:
            return float(HTTP.get(f"{raw.base}/count").json()["clients"])

        steps = progress.add_task("W2 fan-out", total=2 * len(sizes))
        for n in sizes:
            graphql = fan_out(
                f"GraphQL N={n}",
                subscriber_params(n, PER_WORKER, protocol="graphql", url=f"{api.ws}/graphql",
                                  token=token, query=SUBSCRIPTION, variables={"l": list_id}),
                lambda: metric(api.base, "giftgraph_subscriptions_active"), mutate, events,
                progress)
            progress.advance(steps)
            payload_bytes = graphql["payload_bytes"]
            baseline = fan_out(f"raw N={n}",
                               subscriber_params(n, PER_WORKER, protocol="raw",
                                                 url=f"{raw.ws}/ws"),
                               clients, broadcast, events, progress)
            progress.advance(steps)
            results.append({"subscribers": n, "graphql": graphql, "raw": baseline})

    table = Table(title=f"W2 fan-out: one event to N subscribers ({events - WARMUP} measured "
                        f"events per N, payload {payload_bytes} B)")
    for col in ("N", "GraphQL p50 ms", "p99 ms", "max ms", "received",
                "raw p50 ms", "p99 ms", "max ms", "received", "p99 vs raw"):
        table.add_column(col, justify="right")
    for r in results:
        g, b = r["graphql"], r["raw"]
        table.add_row(f"{r['subscribers']:,}", ms(g["p50_ms"]), ms(g["p99_ms"]), ms(g["max_ms"]),
                      pct(g["received_share"]), ms(b["p50_ms"]), ms(b["p99_ms"]),
                      ms(b["max_ms"]), pct(b["received_share"]),
                      f"{g['p99_ms'] / b['p99_ms']:.1f}x")
    notes = [f"N={r['subscribers']} {kind}: {r[kind]['failed_connections']} failed connections, "
             f"{r[kind]['bad_messages']} unexpected messages {r[kind]['failure_sample']}"
             for r in results for kind in ("graphql", "raw")
             if r[kind]["failed_connections"] or r[kind]["bad_messages"]]
    return Outcome("fanout", "W2 fan-out",
                   {"sizes": sizes, "measured_events": events - WARMUP, "warmup_events": WARMUP,
                    "timeout_s": TIMEOUT, "sockets_per_client_process": PER_WORKER,
                    "subscription": SUBSCRIPTION, "quick": opt.quick},
                   results, table, targets(results), plot, notes)


def targets(results: list[dict[str, Any]]) -> list[Target]:
    by_n = {r["subscribers"]: r for r in results}
    big = by_n.get(10_000)
    out = [
        Target("W2 N=10,000: every subscriber receives the event",
               pct(big["graphql"]["received_share"]) if big else "not run", "100%",
               big["graphql"]["received_share"] == 1 if big else None),
        Target("W2 N=10,000: p99 latency", f"{ms(big['graphql']['p99_ms'])} ms" if big
               else "not run", "≤ 250 ms", big["graphql"]["p99_ms"] <= 250 if big else None),
    ]
    if 1000 in by_n:
        g, b = by_n[1000]["graphql"], by_n[1000]["raw"]
        ratio = g["p99_ms"] / b["p99_ms"]
        out.append(Target("W2 N=1,000: p99 vs raw WebSocket baseline", f"{ratio:.1f}x",
                          "≤ 2.0x", ratio <= 2))
    return out


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    ns = [r["subscribers"] for r in results]
    for kind, colour, label in (("graphql", "tab:blue", "GiftGraph"),
                                ("raw", "tab:gray", "raw WebSocket")):
        for q, style in (("p50_ms", "-o"), ("p99_ms", "--s"), ("max_ms", ":^")):
            left.plot(ns, [r[kind][q] for r in results], style, color=colour,
                      label=f"{label} {q[:-3]}")
        cdf = results[-1][kind]["cdf_ms"]
        right.plot(cdf, range(101), color=colour, label=label)
    left.axhline(250, color="tab:red", lw=0.8, ls="--", label="target p99 250 ms")
    left.set(xscale="log", yscale="log", xlabel="subscribers", ylabel="ms from send to receipt",
             title="Fan-out latency by subscriber count")
    left.set_xticks(ns, [f"{n:,}" for n in ns])
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    right.set(xlabel="ms from send to receipt", ylabel="% of subscribers",
              title=f"Latency CDF at N={ns[-1]:,}")
    right.legend()
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
