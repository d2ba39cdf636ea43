"""What tracing costs: one server per setting of OTEL_TRACES_EXPORTER (unset, `none`,
`console`), the W1 nested query at c=16 with the result cache off (every request executes:
parse, validate, execute, SQL) and on (a repeat: authentication only), in interleaved halves
(A B C D then D C B A, `rounds` times, the order rotated each round).
Indicative on a shared machine: compare the ratios.

    python -m bench.tracing_cost [seconds per half] [rounds]
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import orjson
from rich.progress import Progress

from bench.harness import Server, api_server, fresh_database, login
from bench.reads import NESTED
from bench.workers import run_http, summarize_runs

# Two processes with tracing unset: how far two identical servers differ on this machine
# (the noise any other difference is to be read against).
SETTINGS = {"unset": {}, "unset (2nd process)": {}, "none": {"OTEL_TRACES_EXPORTER": "none"},
            "console": {"OTEL_TRACES_EXPORTER": "console"}}
# BENCH_TRACING_FIRST=none: that server is started (and logged in to) first; to see whether
# being first is what makes a server fastest.
if first := os.environ.get("BENCH_TRACING_FIRST"):
    SETTINGS = {first: SETTINGS[first], **SETTINGS}


def main(half: float = 3.0, rounds: int = 2) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with fresh_database("tracing") as url:
        base = api_server(url)
        token = ""
        # The four servers of one cache setting at a time: eight pools of 20 are more
        # connections than PostgreSQL's default 100, and the last servers' reads failed
        # ("Service temporarily unavailable", counted as errors of their setting).
        for cache in ("0", "16777216"):
            servers = {name: Server(base.app, {**base.env, **extra,
                                               "GIFTGRAPH_RESULT_CACHE_BYTES": cache},
                                    args=base.args)
                       for name, extra in SETTINGS.items()}
            for server in servers.values():
                server.start()
            with contextlib.ExitStack() as stack, Progress(transient=True) as progress:
                for server in servers.values():
                    stack.enter_context(server)
                token = token or login(next(iter(servers.values())).base)
                headers = {"authorization": f"Bearer {token}",
                           "content-type": "application/json"}
                body = orjson.dumps({"query": NESTED})
                names = list(SETTINGS)
                runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
                for turn in range(rounds):
                    rotated = names[turn % len(names):] + names[:turn % len(names)]
                    for order in (rotated, rotated[::-1]):
                        for name in order:
                            runs[name].append(run_http(
                                f"{servers[name].base}/graphql", [[body]] * 16, headers,
                                half, progress, f"{name} cache={cache}"))
                summary = {n: summarize_runs(runs[n]) for n in names}
                key = "cache off" if cache == "0" else "cache on"
                results[key] = {n: {"rps": round(s["rps"], 1), "p50_ms": round(s["p50_ms"], 2),
                                    "errors": s["errors"],
                                    "error_sample": s["error_sample"],
                                    "ratio_to_unset": round(s["rps"] / summary["unset"]["rps"],
                                                            3)}
                                for n, s in summary.items()}
    return results


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:]]
    out = main(args[0] if args else 3.0, int(args[1]) if len(args) > 1 else 2)
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
