"""Live queries (`giftgraph bench live`): N families x 5 live queries on one process.

Each family has one socket (its admin's token) holding five live queries
(`subscription { live { … } }`): two read the family's lists (a rename changes them), three
read other things (persons and occasions, the family and its users, `me` and gifts: a rename
must not run them). Phases, on one server process:

1. idle: every live query open, no change anywhere: the server's CPU (the goal: none, no
   polling);
2. changes: 20 list renames a second (`updateList`), each in a random family: each live
   result's lag from the change's commit (the list's `updatedAt`, stamped in the committing
   transaction, on this machine's clock), p50/p99, and the server's CPU;
3. beside it, the same families on the `dashboard` subscription (one socket each, a fresh
   server): its lag from the change (the newest `activity` event's `at`).

RSS per live query: the server's RSS with every live query open, less before any socket,
divided by the live queries (sockets included). `--quick`: 100 families, short phases.
Families, members, lists and tokens are written straight into the database
(bench.tenants.seed).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from array import array
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from rich.table import Table

from bench import wsclient
from bench.harness import (
    PROTOCOL,
    Server,
    api_server,
    cpu_mark,
    cpu_use,
    metric,
    percentile,
    wait_for,
)
from bench.report import Options, Outcome, Target, ms
from bench.tenants import RENAME, _chunks, _rss, drain, seed, write_changes
from bench.workers import WAVE, Channel, Crew, source_address, split

FAMILIES, QUICK_FAMILIES = 2000, 100
RATE = 20.0  # changes per second, over all families
PER_WORKER = 1000  # sockets per client process
INTERVAL_MS = 250
# Each family's five live queries; True: a rename changes it (its lag is measured).
LIVE = {
    "a": ("subscription { live { lists { edges { node { name updatedAt } } } } }", True),
    "b": ("subscription { live { lists(kind: WISHLIST) { totalCount edges { node { updatedAt "
          "items { totalCount } } } } } }", True),
    "c": ("subscription { live { persons { totalCount } occasions { totalCount } } }", False),
    "d": ("subscription { live { family { name currency } users { totalCount } } }", False),
    "e": ("subscription { live { me { displayName } gifts { totalCount } } }", False),
}
DASHBOARD = {"a": ("subscription { dashboard { activity { at } } }", True)}


def _stamp(payload: dict[str, Any], sub: str) -> float | None:
    """The newest change time a result shows (None: it shows none)."""
    data = payload.get("data") or {}
    if "dashboard" in data:
        stamps = [e["at"] for e in data["dashboard"]["activity"]]
    else:
        stamps = [e["node"]["updatedAt"] for e in data["live"]["lists"]["edges"]]
    return max(datetime.fromisoformat(s).timestamp() for s in stamps) if stamps else None


async def sockets(p: dict[str, Any], ch: Channel) -> dict[str, Any]:
    """One socket per spec [family index, token]: the subscriptions `p["subs"]`."""
    subs: dict[str, tuple[str, bool]] = p["subs"]
    received = 0
    bad: list[str] = []
    lags = array("d")
    opened: list[wsclient.LeanSocket] = []
    failures: list[str] = []

    def reader(first: set[str], ack: asyncio.Future[bytes]) -> Any:
        def on_text(raw: bytes) -> None:
            nonlocal received
            if not ack.done():
                ack.set_result(raw)
                return
            now = time.time()
            received += 1
            try:
                msg = orjson.loads(raw)
                if msg.get("type") != "next" or msg["payload"].get("errors"):
                    bad.append(raw[:300].decode(errors="replace"))
                    return
                sub = msg["id"]
                if sub not in first:  # the result at subscription: no change behind it
                    first.add(sub)
                    return
                if subs[sub][1]:
                    stamp = _stamp(msg["payload"], sub)
                    if stamp is not None:
                        lags.append(now - stamp)
                else:  # a change of lists must not reach a live query that reads none
                    bad.append(f"unexpected result for {sub}: {raw[:200]!r}")
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                bad.append(raw[:300].decode(errors="replace"))
        return on_text

    async def open_one(spec: list[Any]) -> None:
        _, token = spec
        ack = asyncio.get_running_loop().create_future()
        try:
            ws = await wsclient.connect(p["url"], reader(set(), ack), subprotocol=PROTOCOL,
                                        local_addr=(p["source"], 0))
            ws.send_text(orjson.dumps({"type": "connection_init", "payload": {"token": token}}))
            reply = orjson.loads(await asyncio.wait_for(ack, 60))
            if reply.get("type") != "connection_ack":
                raise RuntimeError(f"no connection_ack: {reply}")
            for sub, (query, _) in subs.items():
                ws.send_text(orjson.dumps({"id": sub, "type": "subscribe",
                                           "payload": {"query": query}}))
            opened.append(ws)
        except (OSError, TimeoutError, RuntimeError) as exc:
            failures.append(repr(exc))

    specs = p["specs"]
    for start in range(0, len(specs), WAVE):
        await asyncio.gather(*(open_one(s) for s in specs[start:start + WAVE]))
        ch.send("progress", len(opened))
    ch.send("ready", {"connected": len(opened), "failed": len(failures),
                      "failures": failures[:3]})
    await ch.until_stopped(lambda: received)
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    return {"connected": len(opened), "failed": len(failures), "received": received,
            "bad": len(bad), "bad_sample": bad[:3], "lags": lags.tobytes()}


def measure(label: str, server: Server, tenants: list[dict[str, Any]],
            subs: dict[str, tuple[str, bool]], idle_s: float, seconds: float,
            progress: Any) -> dict[str, Any]:
    specs = [[k, t["tokens"][0]] for k, t in enumerate(tenants)]
    n = len(specs)
    workers = max(1, -(-n // PER_WORKER))
    params = [{"url": f"{server.ws}/graphql", "source": source_address(), "specs": part,
               "subs": subs} for part in _chunks(specs, split(n, workers))]
    task = progress.add_task(f"{label}: connecting", total=n)
    rss_before = _rss(server.pid)
    with Crew("bench.live:sockets", params) as crew:
        crew.wait_ready(180 + n / 20, lambda: progress.update(task, completed=crew.total))
        wait_for(lambda: metric(server.base, "giftgraph_subscriptions_active"),
                 len(subs) * n, 180)
        # every first result sent (a live query's is an execution each)
        quiet_since, last = time.monotonic(), -1
        while time.monotonic() - quiet_since < 2:
            crew.pump(0.1)
            if crew.total != last:
                quiet_since, last = time.monotonic(), crew.total
        rss_open = _rss(server.pid)
        progress.update(task, description=f"{label}: idle {idle_s:g} s", completed=0,
                        total=idle_s)
        idle_before = cpu_mark(server.pid)
        idle_received = crew.total
        time.sleep(idle_s)
        idle = cpu_use(idle_before, cpu_mark(server.pid))
        idle_results = crew.total - idle_received
        before = cpu_mark(server.pid)
        received_before = crew.total
        written = write_changes(crew, tenants, "graphql", f"{server.base}/graphql", RATE,
                                seconds, progress, task, label)
        drain(crew)
        busy = cpu_use(before, cpu_mark(server.pid))
        delivered = crew.total - received_before
        results = crew.finish()
    progress.remove_task(task)
    lags = array("d")
    for r in results:
        lags.frombytes(r["lags"])
    ordered = sorted(lags)
    count = len(subs) * n
    return {
        "families": n, "subscriptions": count,
        "connected": sum(r["connected"] for r in results),
        "failed_connections": sum(r["failed"] for r in results),
        "idle_s": idle_s, "idle_cpu_pct": 100 * idle["server_cpu_share"],
        "idle_results": idle_results,
        "changes": written["sent"], "change_errors": written["errors"],
        "delivered": delivered, "results_with_lag": len(ordered),
        "lag_p50_ms": 1000 * percentile(ordered, 50) if ordered else math.nan,
        "lag_p99_ms": 1000 * percentile(ordered, 99) if ordered else math.nan,
        "lag_max_ms": 1000 * ordered[-1] if ordered else math.nan,
        "busy_cpu_pct": 100 * busy["server_cpu_share"],
        "bad_messages": sum(r["bad"] for r in results),
        "bad_sample": [b for r in results for b in r["bad_sample"]][:3],
        "rss_mb_before": rss_before / 2**20, "rss_mb_open": rss_open / 2**20,
        "rss_kb_per_subscription": (rss_open - rss_before) / 1024 / count if count else 0,
    }


def run(database_url: str, opt: Options) -> Outcome:
    families = QUICK_FAMILIES if opt.quick else FAMILIES
    idle_s = 5.0 if opt.quick else 20.0
    api = api_server(database_url)
    api.env["GIFTGRAPH_LIVE_INTERVAL_MS"] = str(INTERVAL_MS)
    tenants = seed(database_url, api.env["GIFTGRAPH_JWT_SECRET"], families)
    random.Random(7).shuffle(tenants)  # noqa: S311 - load, not secrets
    results: dict[str, dict[str, Any]] = {}
    with opt.progress() as progress:
        with api:
            results["live"] = measure("live queries", api, tenants, LIVE, idle_s,
                                      opt.duration, progress)
        with Server(api.app, api.env, args=api.args) as dash:  # the same tokens' secret
            results["dashboard"] = measure("dashboard", dash, tenants, DASHBOARD, idle_s,
                                           opt.duration, progress)
    live, dash_r = results["live"], results["dashboard"]
    table = Table(title=f"live: {families:,} families x {len(LIVE)} live queries "
                        f"({families * len(LIVE):,}), {RATE:g} changes/s for {opt.duration:g} s"
                        f"{' (quick)' if opt.quick else ''}")
    for col in ("subscription", "open", "idle CPU %", "results", "lag p50 ms", "p99 ms",
                "max ms", "CPU % (changes)", "RSS KB / sub", "bad"):
        table.add_column(col, justify="left" if col == "subscription" else "right")
    for name, r in (("live (5 per family)", live), ("dashboard (1 per family)", dash_r)):
        table.add_row(name, f"{r['connected'] * (len(LIVE) if r is live else 1):,}",
                      f"{r['idle_cpu_pct']:.1f}", f"{r['delivered']:,}", ms(r["lag_p50_ms"]),
                      ms(r["lag_p99_ms"]), ms(r["lag_max_ms"]), f"{r['busy_cpu_pct']:.0f}",
                      f"{r['rss_kb_per_subscription']:.1f}", str(r["bad_messages"]))
    goal = INTERVAL_MS + 100
    full = None if opt.quick else True
    targets = [
        Target("live lag p99 from commit", f"{ms(live['lag_p99_ms'])} ms", f"≤ {goal} ms",
               live["lag_p99_ms"] <= goal if full else None),
        Target("live idle: no work", f"{live['idle_cpu_pct']:.1f} % CPU, "
               f"{live['idle_results']} results", "≈ 0", live["idle_results"] == 0),
        Target("live results only where the change reads", f"{live['bad_messages']} bad",
               "0", live["bad_messages"] == 0),
    ]
    notes = [f"{kind}: {r['failed_connections']} failed connections, "
             f"{r['change_errors']} failed changes, {r['bad_messages']} unexpected messages "
             f"{r['bad_sample']}" for kind, r in results.items()
             if r["failed_connections"] or r["change_errors"] or r["bad_messages"]]
    if opt.quick:
        notes.append(f"quick: {families} families; the target scale is {FAMILIES:,} x "
                     f"{len(LIVE)} = {FAMILIES * len(LIVE):,} live queries")
    return Outcome("live", "live queries",
                   {"families": families, "live_queries_per_family": len(LIVE),
                    "rate": RATE, "seconds": opt.duration, "idle_seconds": idle_s,
                    "interval_ms": INTERVAL_MS, "live": LIVE, "dashboard": DASHBOARD,
                    "change": RENAME, "quick": opt.quick},
                   [{"case": k, **v} for k, v in results.items()], table, targets, plot, notes)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    results = {r["case"]: r for r in rows}
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(results)
    for k, q in enumerate(("lag_p50_ms", "lag_p99_ms")):
        ax.bar([i + k * 0.4 for i in range(len(names))],
               [results[n][q] for n in names], 0.4, label=q[4:7])
    ax.axhline(INTERVAL_MS + 100, color="grey", linestyle=":", label="goal (p99)")
    ax.set_xticks([i + 0.2 for i in range(len(names))], names)
    ax.set(ylabel="ms from commit to result", title="live queries vs dashboard: lag")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
