"""`giftgraph bench <workload>`: each workload on a fresh seeded database and fresh servers."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable

from rich.console import Console

from bench import fairness, fanout, live, memory, plans, reads, soak, storm, tenants, writes
from bench.harness import ROOT, fresh_database, machine_info, raise_nofile
from bench.report import Options, Outcome, caption, save, show

WORKLOADS: dict[str, Callable[[str, Options], Outcome]] = {
    "reads": reads.run, "fanout": fanout.run, "memory": memory.run, "writes": writes.run,
    "fairness": fairness.run, "soak": soak.run, "tenants": tenants.run,
    "storm": storm.run, "plans": plans.run, "live": live.run,
}
# `all`: W1-W4. fairness, soak (30 minutes), tenants, storm, plans and live by name.
ALL = ("reads", "fanout", "memory", "writes")
CHOICES = (*WORKLOADS, "all")
# seconds per measured level, phase (fairness) or in all (soak): (default, --quick)
DURATIONS = {"fairness": (20.0, 3.0), "soak": (1800.0, 60.0), "tenants": (60.0, 15.0),
             "live": (60.0, 10.0),
             "storm": (0.0, 0.0)}


def run(workload: str, *, duration: float | None = None, quick: bool = False,
        keep_db: bool = False) -> int:
    raise_nofile()  # inherited by the servers and worker processes started from here
    # `timeout` and CI stop a run with SIGTERM: exit through the context managers, which
    # stop the servers and drop the database (a server left busy would load the machine)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console(width=None if sys.stdout.isatty() else 150)
    for name in ALL if workload == "all" else (workload,):
        default, short = DURATIONS.get(name, (10.0, 3.0))
        opt = Options(quick=quick, duration=duration or (short if quick else default),
                      console=console)
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
