"""W1 reads: the dashboard and a nested query at concurrency 1, 16, 64, against the floor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.table import Table

from bench.harness import Server, api_server, dsn, login
from bench.report import Options, Outcome, Target, few_replies, ms, rate
from bench.workers import measure_http

DASHBOARD = """query Dashboard { dashboard {
  budget spent pipeline { idea selected purchased received }
  nextOccasions { id name kind date budget }
  people { person { id name } pipeline { idea selected purchased received } spent }
  recentIdeas { id status gift { name price } }
  activity { seq kind entityType at actor { displayName } } } }"""
NESTED = """query Nested { lists(first: 20) { edges { node { name person { name }
  items(first: 20) { edges { node { status gift { name price store }
  assignee { displayName } } } } } } } }"""
QUERIES = {"dashboard": DASHBOARD, "nested": NESTED}
CONCURRENCY = (1, 16, 64)


def run(database_url: str, opt: Options) -> Outcome:
    api = api_server(database_url)
    # The same server with the result cache off: what a query costs when it is not a repeat
    # (the first read after any change in the family). Same secret: the same token works.
    uncached = Server("giftgraph.asgi:create", {**api.env, "GIFTGRAPH_RESULT_CACHE_BYTES": "0"})
    floor = Server("bench.floor:create", {"BENCH_FLOOR_DSN": dsn(database_url),
                                          "GIFTGRAPH_JWT_SECRET": api.env["GIFTGRAPH_JWT_SECRET"]})
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    api.start()
    uncached.start()
    floor.start()
    with api, uncached, floor, opt.progress() as progress:
        token = login(api.base)
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        targets = {"graphql": f"{api.base}/graphql", "uncached": f"{uncached.base}/graphql",
                   "floor": f"{floor.base}/"}
        steps = progress.add_task("W1 reads",
                                  total=len(QUERIES) * len(CONCURRENCY) * len(targets))
        for name, query in QUERIES.items():
            body = orjson.dumps({"query": query})
            ours = httpx.post(targets["graphql"], content=body, headers=headers).json()
            theirs = httpx.post(targets["floor"] + name, content=body, headers=headers).json()
            if ours.get("data") != theirs.get("data"):
                notes.append(f"{name}: the floor's JSON differs from the API's")
            for c in CONCURRENCY:
                row: dict[str, Any] = {"query": name, "concurrency": c,
                                       "response_bytes": len(orjson.dumps(ours))}
                for server, url in targets.items():
                    url = url + name if server == "floor" else url
                    row[server] = measure_http(url, [[body]] * c, headers, opt.duration,
                                               progress, f"{name} c={c} {server}")
                    if note := few_replies(f"{name} c={c} {server}", row[server]):
                        notes.append(note)
                    if row[server]["errors"]:
                        notes.append(f"{name} c={c} {server}: {row[server]['errors']} errors, "
                                     f"e.g. {row[server]['error_sample'][0]}")
                    progress.advance(steps)
                row["ratio"] = row["graphql"]["rps"] / row["floor"]["rps"]
                row["ratio_uncached"] = row["uncached"]["rps"] / row["floor"]["rps"]
                results.append(row)

    table = Table(title=f"W1 reads ({opt.duration:g} s per cell)")
    for col in ("query", "conc.", "GraphQL req/s", "p50 ms", "p99 ms", "ratio",
                "no cache req/s", "p50 ms", "ratio", "floor req/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="left" if col == "query" else "right")
    for r in results:
        g, u, f = r["graphql"], r["uncached"], r["floor"]
        table.add_row(r["query"], str(r["concurrency"]), rate(g["rps"]), ms(g["p50_ms"]),
                      ms(g["p99_ms"]), f"{r['ratio']:.2f}x", rate(u["rps"]), ms(u["p50_ms"]),
                      f"{r['ratio_uncached']:.2f}x", rate(f["rps"]), ms(f["p50_ms"]),
                      ms(f["p99_ms"]))
    nested16 = next(r for r in results if r["query"] == "nested" and r["concurrency"] == 16)
    targets_met = [
        Target("W1 nested at c=16, throughput vs floor", f"{nested16['ratio']:.2f}x",
               "≥ 0.50x", nested16["ratio"] >= 0.5),
        Target("W1 nested at c=16, result cache off", f"{nested16['ratio_uncached']:.2f}x",
               "≥ 0.50x", nested16["ratio_uncached"] >= 0.5),
    ]
    return Outcome("reads", "W1 reads",
                   {"duration_s": opt.duration, "concurrency": CONCURRENCY, "queries": QUERIES,
                    "client_processes": "1 at c=1, else 2", "quick": opt.quick},
                   results, table, targets_met, plot, notes)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for col, name in enumerate(QUERIES):
        rows = [r for r in results if r["query"] == name]
        xs = range(len(rows))
        top, bottom = axes[0][col], axes[1][col]
        series = (("graphql", "tab:blue", "GiftGraph"),
                  ("uncached", "tab:orange", "GiftGraph, cache off"),
                  ("floor", "tab:gray", "floor"))
        for k, (server, colour, label) in enumerate(series):
            bars = top.bar([x + (k - 1) * 0.27 for x in xs], [r[server]["rps"] for r in rows],
                           0.27, label=label, color=colour)
            if server == "graphql":
                for bar, r in zip(bars, rows, strict=True):
                    top.annotate(f"{r['ratio']:.2f}x", (bar.get_x() + bar.get_width() / 2,
                                                        bar.get_height()),
                                 ha="center", va="bottom", fontsize=9)
            for q, style in (("p50_ms", "-o"), ("p99_ms", "--s")):
                bottom.plot(list(xs), [r[server][q] for r in rows], style, color=colour,
                            label=f"{label} {q[:3]}")
        for ax in (top, bottom):
            ax.set_xticks(list(xs), [f"c={r['concurrency']}" for r in rows])
            ax.grid(axis="y", alpha=0.3)
        top.set_title(f"{name}: throughput (ratio to floor)")
        top.set_ylabel("requests/s")
        top.legend()
        bottom.set_title(f"{name}: latency")
        bottom.set_ylabel("ms")
        bottom.set_yscale("log")
        bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
