"""The API under tracemalloc, for bench/connected.py: `uvicorn --factory bench.traced:create`.

Tracing starts before the app is built. Each SIGUSR1 writes a snapshot (garbage collected
first) to `BENCH_TRACEMALLOC_DIR/<n>.snap`, renamed into place once complete.
"""

from __future__ import annotations

import gc
import itertools
import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType

from starlette.applications import Starlette

_count = itertools.count()


def _dump(_signum: int, _frame: FrameType | None) -> None:
    target = Path(os.environ["BENCH_TRACEMALLOC_DIR"])
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    n = next(_count)
    part = target / f"{n}.part"
    snapshot.dump(str(part))
    part.rename(target / f"{n}.snap")


def create() -> Starlette:
    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "1")))
    from giftgraph.asgi import create as create_api

    app = create_api()
    signal.signal(signal.SIGUSR1, _dump)
    return app
