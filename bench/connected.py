"""W5's connected state alone: the server's RSS with W5's sockets open and subscribed.

    python -m bench.connected [--families 2000] [--trace] [--frames 1] [--top 25]

Seeds `--families` families as `bench tenants` does (a fresh database), starts one API
process as the bench starts it, warms it up with one family's sockets, then opens every
family's MEMBERS sockets with the three subscriptions each and waits until the server counts
them all. Reports RSS idle and connected, and KB per socket. With `--trace` the server runs
under tracemalloc (bench/traced.py; slower, and its RSS is not the figure to quote): a
snapshot idle and one connected, and what the connected one holds more, by allocation
site, per socket. No changes are written: a few minutes at full size.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.harness import api_server, fresh_database, raise_nofile, uvicorn_args, wait_for
from bench.tenants import MEMBERS, PER_WORKER, _chunks, _rss, _subscriptions, seed
from bench.workers import Crew, source_address, split

SETTLE = 3.0  # seconds between the last subscription and the readings


def _median_rss(pid: int) -> int:
    samples = []
    for _ in range(5):
        samples.append(_rss(pid))
        time.sleep(0.2)
    return sorted(samples)[2]


def _snapshot(pid: int, folder: Path, n: int) -> tracemalloc.Snapshot:
    os.kill(pid, signal.SIGUSR1)
    path = folder / f"{n}.snap"
    deadline = time.monotonic() + 600
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("no tracemalloc snapshot from the server")
        time.sleep(0.5)
    return tracemalloc.Snapshot.load(str(path))


def _open(specs: list[list[Any]], url: str, label: str) -> tuple[Crew, int]:
    workers = max(1, -(-len(specs) // PER_WORKER))
    params = [{"protocol": "graphql", "url": url, "source": source_address(), "specs": part}
              for part in _chunks(specs, split(len(specs), workers))]
    crew = Crew("bench.tenants:sockets", params)
    ready = crew.wait_ready(180 + len(specs) / 20)
    connected = sum(r["connected"] for r in ready)
    failed = sum(r["failed"] for r in ready)
    if failed:
        print(f"{label}: {failed} sockets failed: {[f for r in ready for f in r['failures']]}")
    return crew, connected


def _where(frame: tracemalloc.Frame) -> str:
    return f"{'/'.join(Path(frame.filename).parts[-3:])}:{frame.lineno}"


def _breakdown(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, sockets: int,
               top: int, frames: int) -> None:
    if frames > 1:  # whole tracebacks, innermost first
        print(f"\ntop {top} tracebacks (KB per socket, blocks per socket):")
        for s in after.compare_to(before, "traceback")[:top]:
            print(f"  {s.size_diff / 1024 / sockets:7.2f} KB {s.count_diff / sockets:6.2f}  "
                  + " > ".join(_where(f) for f in s.traceback))
    stats = after.compare_to(before, "lineno")
    grown = sum(s.size_diff for s in stats)
    print(f"\ntracemalloc: {grown / 2**20:.1f} MB more traced, "
          f"{grown / 1024 / sockets:.2f} KB per socket; top {top} sites (KB per socket, "
          f"blocks per socket):")
    for s in stats[:top]:
        print(f"  {s.size_diff / 1024 / sockets:7.2f} KB {s.count_diff / sockets:6.2f}  "
              f"{_where(s.traceback[0])}")
    by_package: dict[str, int] = defaultdict(int)
    for s in stats:
        parts = Path(s.traceback[0].filename).parts
        key = next((parts[i + 1] for i, p in enumerate(parts[:-1])
                    if p in ("site-packages", "src")), "/".join(parts[-2:]))
        by_package[key] += s.size_diff
    print("\nby package (KB per socket):")
    for key, size in sorted(by_package.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {size / 1024 / sockets:7.2f}  {key}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", type=int, default=2000)
    parser.add_argument("--trace", action="store_true", help="run the server under tracemalloc")
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc frames per trace")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    raise_nofile()
    started = time.monotonic()
    with fresh_database("connected") as database_url:
        api = api_server(database_url)
        folder = Path(tempfile.mkdtemp(prefix="giftgraph-trace-"))
        if args.trace:
            api.app, api.args = "bench.traced:create", uvicorn_args()
            api.env |= {"BENCH_TRACEMALLOC_DIR": str(folder),
                        "BENCH_TRACEMALLOC_FRAMES": str(args.frames)}
        tenants = seed(database_url, api.env["GIFTGRAPH_JWT_SECRET"], args.families)
        specs = [[k, token, t["list"]] for k, t in enumerate(tenants) for token in t["tokens"]]
        url = api.ws + "/graphql"
        print(f"seeded {args.families} families in {time.monotonic() - started:.0f} s")
        with api:
            crew, warm = _open(specs[:MEMBERS], url, "warm-up")  # every path has run once
            wait_for(lambda: _subscriptions([api], 1), 3 * warm, 60)
            crew.finish()
            crew.close()
            wait_for(lambda: -_subscriptions([api], 1), 0, 30)
            time.sleep(SETTLE)
            idle = _median_rss(api.pid)
            before = _snapshot(api.pid, folder, 0) if args.trace else None
            t0 = time.monotonic()
            crew, connected = _open(specs, url, "sockets")
            subscribed = wait_for(lambda: _subscriptions([api], 1), 3 * connected, 300)
            connect_s = time.monotonic() - t0
            time.sleep(SETTLE)
            loaded = _median_rss(api.pid)
            after = _snapshot(api.pid, folder, 1) if args.trace else None
            crew.finish()
            crew.close()
    grown = loaded - idle
    print(f"\n{connected:,} sockets, {subscribed:,.0f} subscriptions (connected and "
          f"subscribed in {connect_s:.0f} s){', under tracemalloc' if args.trace else ''}")
    print(f"RSS idle {idle / 2**20:.0f} MB, connected {loaded / 2**20:.0f} MB: "
          f"{grown / 1024 / connected:.1f} KB per socket, "
          f"{grown / 1024 / max(subscribed, 1):.1f} KB per subscription")
    if before is not None and after is not None:
        print(f"snapshots: {folder}/0.snap (idle), {folder}/1.snap (connected)")
        _breakdown(before, after, connected, args.top, args.frames)


if __name__ == "__main__":
    main()
