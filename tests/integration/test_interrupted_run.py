"""A test run that is sent SIGTERM (`kill`, a CI's timeout) tears its fixtures down as on
Ctrl-C: its embedded PostgreSQL stops with it instead of running on, orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INNER = '''
import time


def test_holds_the_server(server_url):
    print("SERVER", server_url, flush=True)
    time.sleep(120)
'''


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_the_embedded_postgresql(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {k: v for k, v in os.environ.items() if k != "GIFTGRAPH_TEST_DATABASE_URL"}
    run = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed args
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-p",
         "tests.conftest", "-s", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_inner.py")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert run.stdout is not None
        pgdata = None
        for line in run.stdout:
            if line.startswith("SERVER "):
                pgdata = Path(line.split("host=", 1)[1].strip())
                break
        assert pgdata is not None, "the inner run never reached its test"
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
        assert _alive(postmaster)
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) != 0
        deadline = time.monotonic() + 30
        while _alive(postmaster) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(postmaster)
        assert not pgdata.exists()  # its data directory is removed with it
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


@pytest.mark.parametrize("when", ["just after the server started", "creating the database"])
def test_an_interrupted_start_leaves_no_server_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """Ctrl-C (or SIGTERM turned into it) while the embedded PostgreSQL starts: pgserver
    notes the process as the server's user only once it is up, so its exit handler left a
    server started meanwhile running, orphaned."""
    from giftgraph.db.embedded import EmbeddedPostgres, load_pgserver

    load_pgserver()  # imported as the app imports it (its warning filtered)
    from pgserver.postgres_server import PostgresServer

    started: list[int] = []
    if when == "just after the server started":
        original = PostgresServer.ensure_postgres_running

        def interrupted(self: Any) -> None:
            original(self)
            started.append(self.get_pid())
            raise KeyboardInterrupt  # as a signal arriving at that moment

        monkeypatch.setattr(PostgresServer, "ensure_postgres_running", interrupted)
    else:
        def psql(self: Any, command: str) -> str:
            started.append(self.get_pid())
            raise KeyboardInterrupt

        monkeypatch.setattr(PostgresServer, "psql", psql)
    embedded = EmbeddedPostgres(tmp_path)
    try:
        with pytest.raises(KeyboardInterrupt):
            embedded.start()
        assert started
        assert started[0] is not None
        deadline = time.monotonic() + 10  # its pid file goes a moment before it does
        while _alive(started[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(started[0])
        assert embedded.postmaster() is None
    finally:
        for pid in started:
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_an_interrupted_start_leaves_another_processs_server_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process noted as the server's user (as `serve` is once its start is done):
    an interrupted start in this one leaves the server running for it. A start after the
    interrupted one, in the same process, works."""
    from giftgraph.db.embedded import EmbeddedPostgres, load_pgserver

    load_pgserver()
    from pgserver.postgres_server import PostgresServer

    other = subprocess.Popen(["sleep", "60"])  # noqa: S607 - a stand-in process
    original = PostgresServer.ensure_postgres_running
    started: list[int] = []

    def interrupted(self: Any) -> None:
        original(self)
        started.append(self.get_pid())
        (self.pgdata / ".handle_pids.json").write_text(f"[{other.pid}]")
        raise KeyboardInterrupt

    embedded = EmbeddedPostgres(tmp_path)
    try:
        with monkeypatch.context() as patched:
            patched.setattr(PostgresServer, "ensure_postgres_running", interrupted)
            with pytest.raises(KeyboardInterrupt):
                embedded.start()
        time.sleep(0.5)
        assert _alive(started[0])  # the other process's server
        assert embedded.postmaster() == started[0]
        # A start after the interrupted one, in the same process, reuses the server.
        assert embedded.start().startswith("postgresql+asyncpg://")
        assert embedded.postmaster() == started[0]
    finally:
        other.kill()
        for pid in started:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_user_that_died_does_not_keep_the_server_running(tmp_path: Path) -> None:
    """pgserver lists the processes using the server and stops it when the last one ends.
    One killed (SIGKILL, a crash) stayed on the list, and no later command was ever the
    last: each left the server running when it ended."""
    from giftgraph.db.embedded import USERS, EmbeddedPostgres

    first = EmbeddedPostgres(tmp_path)
    first.start()
    first.stop()
    assert first.postmaster() is None
    dead = subprocess.Popen(["true"])  # noqa: S607 - a process that has ended
    dead.wait()
    (first.pgdata / USERS).write_text(f"[{dead.pid}]")  # as a killed `serve` leaves it
    again = EmbeddedPostgres(tmp_path)
    again.start()
    pid = again.postmaster()
    assert pid is not None
    try:
        again.stop()
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
