"""One `giftgraph serve` per embedded data directory while live events stay in the process.

With the embedded database and the default `memory://` broadcast, a second `serve` on the
same data (another port, another terminal) shares every row with the first but none of
its live events: a change made through one never reaches the other's subscribers, and
nothing said so (newcomer trial, 2026-11-27). The first `serve` holds an exclusive lock
on `serve.lock` in the data directory (released by the system when it exits, however it
exits); a second one is refused with what to do instead.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class DataInUse(Exception):
    """Another process holds the data directory's lock (its pid, if it wrote one)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(str(path))
        self.path, self.pid = path, pid


def hold(data_dir: Path) -> IO[str]:
    """The lock on `data_dir`, held while the returned file stays open; DataInUse when
    another process holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "serve.lock"
    lock = path.open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        text = lock.read().strip()
        lock.close()
        raise DataInUse(path, int(text) if text.isdigit() else None) from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock
