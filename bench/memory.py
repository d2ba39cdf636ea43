"""W3 memory: the API process's RSS idle and with N idle subscriptions → KB per subscription.

Each configuration gets a fresh server: RSS after a warm-up, then with the subscriptions open.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import psutil
from rich.table import Table

from bench.fanout import PER_WORKER, SUBSCRIPTION
from bench.harness import api_server, biggest_list, login, metric, wait_for
from bench.report import Options, Outcome, Target
from bench.workers import Crew, subscriber_params

# (subscriptions, subscriptions per socket)
CONFIGS = ((1000, 1), (5000, 1), (5000, 10))
QUICK_CONFIGS = ((1000, 1),)
SETTLE = 2.0  # seconds between the last subscription and the RSS reading


def rss(pid: int) -> int:
    """Median of a few RSS readings (bytes)."""
    proc = psutil.Process(pid)
    samples = []
    for _ in range(5):
        samples.append(proc.memory_info().rss)
        time.sleep(0.1)
    return int(statistics.median(samples))


def measure(database_url: str, subs: int, per_socket: int, progress: Any) -> dict[str, Any]:
    label = f"{subs} subscriptions, {per_socket}/socket"
    task = progress.add_task(label, total=subs // per_socket)
    with api_server(database_url) as api:
        token = login(api.base)
        list_id, _ = biggest_list(api.base, token)
        common = {"protocol": "graphql", "url": f"{api.ws}/graphql", "token": token,
                  "query": SUBSCRIPTION, "variables": {"l": list_id},
                  "subs_per_socket": per_socket}
        with Crew("subscribers", subscriber_params(20, PER_WORKER, **common)) as warm:
            warm.wait_ready(60)  # warm-up: every code path of a subscription has run once
            warm.finish()
        time.sleep(1.0)
        idle = rss(api.pid)
        sockets = subs // per_socket
        with Crew("subscribers", subscriber_params(sockets, PER_WORKER, **common)) as crew:
            crew.wait_ready(120 + sockets / 20,
                            lambda: progress.update(task, completed=crew.total))
            active = wait_for(lambda: metric(api.base, "giftgraph_subscriptions_active"),
                              subs, 60)
            time.sleep(SETTLE)
            loaded = rss(api.pid)
            crew.finish()
    progress.remove_task(task)
    return {"subscriptions": subs, "per_socket": per_socket, "sockets": sockets,
            "active_subscriptions": active, "rss_idle_bytes": idle,
            "rss_loaded_bytes": loaded, "kb_per_subscription": (loaded - idle) / 1024 / subs}


def run(database_url: str, opt: Options) -> Outcome:
    configs = QUICK_CONFIGS if opt.quick else CONFIGS
    with opt.progress() as progress:
        results = [measure(database_url, subs, per, progress) for subs, per in configs]

    table = Table(title="W3 memory: API process RSS with idle subscriptions")
    for col in ("subscriptions", "per socket", "sockets", "RSS idle MB", "RSS loaded MB",
                "KB per subscription"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(f"{r['subscriptions']:,}", str(r["per_socket"]), f"{r['sockets']:,}",
                      f"{r['rss_idle_bytes'] / 2**20:.1f}", f"{r['rss_loaded_bytes'] / 2**20:.1f}",
                      f"{r['kb_per_subscription']:.1f}")
    # The target counts a whole idle client: its socket and its one subscription.
    single = max((r for r in results if r["per_socket"] == 1),
                 key=lambda r: r["subscriptions"])
    target = Target(f"W3 KB per idle subscription (N={single['subscriptions']:,}, own socket)",
                    f"{single['kb_per_subscription']:.1f} KB", "≤ 20 KB",
                    single["kb_per_subscription"] <= 20)
    notes = [f"{r['subscriptions']} subscriptions: server saw only {r['active_subscriptions']:.0f}"
             for r in results if r["active_subscriptions"] < r["subscriptions"]]
    return Outcome("memory", "W3 memory",
                   {"configs": configs, "settle_s": SETTLE, "subscription": SUBSCRIPTION,
                    "quick": opt.quick}, results, table, [target], plot, notes)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    labels = [f"{r['subscriptions']:,}\n{r['per_socket']}/socket" for r in results]
    xs = range(len(results))
    left.bar([x - 0.2 for x in xs], [r["rss_idle_bytes"] / 2**20 for r in results], 0.4,
             label="idle", color="tab:gray")
    left.bar([x + 0.2 for x in xs], [r["rss_loaded_bytes"] / 2**20 for r in results], 0.4,
             label="with subscriptions", color="tab:blue")
    left.set(ylabel="RSS (MB)", title="API process RSS")
    left.set_xticks(list(xs), labels)
    left.legend()
    bars = right.bar(xs, [r["kb_per_subscription"] for r in results], color="tab:blue")
    right.bar_label(bars, fmt="%.1f")
    right.axhline(20, color="tab:red", ls="--", lw=0.8, label="target 20 KB")
    right.set(ylabel="KB", title="Memory per idle subscription")
    right.set_xticks(list(xs), labels)
    right.legend()
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
