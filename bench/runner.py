"""`giftgraph bench <workload>`: each workload on a fresh seeded database and fresh servers."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from rich.console import Console

from bench import fanout, memory, reads, writes
from bench.harness import ROOT, fresh_database, machine_info, raise_nofile
from bench.report import Options, Outcome, caption, save, show

WORKLOADS: dict[str, Callable[[str, Options], Outcome]] = {
    "reads": reads.run, "fanout": fanout.run, "memory": memory.run, "writes": writes.run,
}
CHOICES = (*WORKLOADS, "all")


def run(workload: str, *, duration: float | None = None, quick: bool = False,
        keep_db: bool = False) -> int:
    raise_nofile()  # inherited by the servers and worker processes started from here
    console = Console(width=None if sys.stdout.isatty() else 150)
    opt = Options(quick=quick, duration=duration or (3.0 if quick else 10.0), console=console)
    for name in WORKLOADS if workload == "all" else (workload,):
        console.print(f"[bold]{name}[/]: fresh database, migrations, demo data, servers …")
        started = time.monotonic()
        with fresh_database(name, keep=keep_db) as url:
            machine = machine_info(url)
            outcome = WORKLOADS[name](url, opt)
        outcome.table.caption = caption(machine)
        show(outcome, console)
        json_path, png_path = save(outcome, machine)
        console.print(f"{name} took {time.monotonic() - started:.0f} s; wrote "
                      f"{json_path.relative_to(ROOT)} and {png_path.relative_to(ROOT)}\n")
    return 0  # targets are reported, not enforced: a FAIL is a finding, not an error
