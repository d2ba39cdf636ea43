"""What a workload hands back, and how it is shown and kept: rich tables, JSON and a PNG."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.harness import RESULTS


@dataclass
class Options:
    quick: bool
    duration: float  # seconds per measured level (W1, W4)
    console: Console

    def progress(self) -> Progress:
        return Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed:>7.0f}/{task.total:<7.0f}"),
                        TimeElapsedColumn(), console=self.console, transient=True)


@dataclass(frozen=True)
class Target:
    """A goal from the issue, checked (never asserted) against a measured figure."""

    name: str
    measured: str
    goal: str
    ok: bool | None  # None: not measured in this run (e.g. --quick)


@dataclass
class Outcome:
    workload: str
    title: str
    parameters: dict[str, Any]
    results: list[dict[str, Any]]
    table: Table
    targets: list[Target]
    plot: Callable[[list[dict[str, Any]], Path], None]
    notes: list[str] = field(default_factory=list)


def few_replies(label: str, stats: dict[str, Any]) -> str | None:
    """A note when the window saw fewer than two replies per connection: latency exceeds the
    window, so its figures are rough (run with a longer --duration)."""
    if stats["count"] >= 2 * stats["concurrency"]:
        return None
    return (f"{label}: only {stats['count']} replies in the window for {stats['concurrency']} "
            "connections; latency exceeds the window, so these figures are rough")


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def rate(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def pct(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{100 * value:.1f}%" if value < 1 else f"{100 * value:.0f}%"


def verdict(ok: bool | None) -> str:
    return {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]SKIP[/]"}[ok]


def show(outcome: Outcome, console: Console) -> None:
    console.print(outcome.table)
    if outcome.targets:
        t = Table(title=f"{outcome.title}: targets")
        for col in ("target", "measured", "goal", "result"):
            t.add_column(col)
        for target in outcome.targets:
            t.add_row(target.name, target.measured, target.goal, verdict(target.ok))
        console.print(t)
    for note in outcome.notes:
        console.print(f"[yellow]note:[/] {note}")


def save(outcome: Outcome, machine: dict[str, Any]) -> tuple[Path, Path]:
    """bench/results/<workload>.json (machine, parameters, raw figures) and .png."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"workload": outcome.workload, "machine": machine, "parameters": outcome.parameters,
            "results": outcome.results, "targets": [asdict(t) for t in outcome.targets],
            "notes": outcome.notes}
    json_path = RESULTS / f"{outcome.workload}.json"
    json_path.write_text(json.dumps(data, indent=1, default=str) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    png_path = RESULTS / f"{outcome.workload}.png"
    outcome.plot(outcome.results, png_path)
    return json_path, png_path


def caption(machine: dict[str, Any]) -> str:
    return (f"{machine['date']} · {machine['cpu_count']} CPU {machine['cpu_model']} · "
            f"Python {machine['python']} · PostgreSQL {machine['postgresql']} · "
            f"commit {machine['git_commit'][:8]}{'+' if machine['git_dirty'] else ''}")
