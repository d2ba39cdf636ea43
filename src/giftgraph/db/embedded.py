"""The embedded default database: a real PostgreSQL from the pgserver wheel."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
# pgserver 0.1.4 (pinned): the pids of the processes using the server, in its data directory.
USERS = ".handle_pids.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process
    return True


def load_pgserver() -> Any:
    """pgserver's `get_server`, imported lazily (only the embedded default needs it).
    pgserver asks platformdirs for a runtime directory when imported, which warns (on every
    command) when XDG_RUNTIME_DIR is unset; its fallback in /tmp is fine: not said."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        from pgserver.postgres_server import get_server

    return get_server


class EmbeddedPostgres:
    """Starts (or reuses) a PostgreSQL server whose data lives in `data_dir`/pgdata."""

    def __init__(self, data_dir: Path, database: str = "giftgraph") -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", database):
            raise ValueError(f"not a plain database name: {database!r}")
        self.pgdata = (data_dir / "pgdata").resolve()
        self.database = database  # a plain identifier: safe to put in the psql text below
        self._server: Any = None

    def start(self) -> str:
        """Start the server if needed and return an asyncpg URL for `database`. Interrupted
        (Ctrl-C, or SIGTERM where it is turned into KeyboardInterrupt), it stops the server
        unless another process uses it: pgserver notes a process as the server's user only
        once the server is up, and its exit handler left one started meanwhile running,
        orphaned."""
        get_server = load_pgserver()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._forget_dead_users()
        try:
            # cleanup_mode="stop": data is kept across restarts, the server stops on exit.
            self._server = get_server(self.pgdata, cleanup_mode="stop")
            exists = self._server.psql(
                f"SELECT 1 FROM pg_database WHERE datname = '{self.database}';"  # noqa: S608
            )
            if "1 row" not in exists:
                self._server.psql(f'CREATE DATABASE "{self.database}";')
        except BaseException:
            if self._server is not None:
                self.stop()  # pgserver's: stops it unless another process uses it
            else:
                self._stop_unused()
            raise
        return f"postgresql+asyncpg://postgres@/{self.database}?host={self.pgdata}"

    def postmaster(self) -> int | None:
        """The pid of the server running on `pgdata`, if one is."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def _stop_unused(self, wait: float = 10.0) -> None:
        """After an interrupted start: stop the server on `pgdata` if no other process uses
        it (PostgreSQL's fast shutdown, SIGINT). Decided under pgserver's lock, which a
        starting process holds until it has noted itself as the server's user (in
        `USERS`): no other process's start is then midway. pgserver 0.1.4's
        internals (pinned); without them nothing is stopped."""
        from pgserver.postgres_server import PostgresServer

        lock = getattr(PostgresServer, "_lock", None)
        getattr(PostgresServer, "_instances", {}).pop(self.pgdata, None)  # a retry starts afresh
        if lock is None or not lock.acquire(timeout=wait):
            return
        try:
            pid = self.postmaster()
            if pid is None or self._other_users():
                return
            log.warning("embedded PostgreSQL: start interrupted, stopping the server")
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + wait
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            lock.release()

    def _other_users(self) -> list[int]:
        """The live processes other than this one that pgserver noted as the server's users;
        unreadable, all are assumed to be."""
        try:
            pids = json.loads((self.pgdata / USERS).read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            return [-1]
        return [pid for pid in pids if isinstance(pid, int) and pid != os.getpid()
                and _alive(pid)]

    def _forget_dead_users(self) -> None:
        """pgserver's list of the server's users keeps a process that died without its exit
        handler (SIGKILL, a crash), and then no later user is the last one: every command
        left the server running when it ended. The dead are taken out, under its lock."""
        from pgserver.postgres_server import PostgresServer

        lock = getattr(PostgresServer, "_lock", None)
        path = self.pgdata / USERS
        if lock is None or not path.exists() or not lock.acquire(timeout=10):
            return
        try:
            pids = json.loads(path.read_text())
            alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
            if alive != pids:
                path.write_text(json.dumps(alive))
        except (OSError, ValueError):
            pass  # left as it is: pgserver reads it as before
        finally:
            lock.release()

    def admin_url(self) -> str:
        return f"postgresql+asyncpg://postgres@/postgres?host={self.pgdata}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
