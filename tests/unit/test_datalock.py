"""One `giftgraph serve` per embedded data directory with in-process live events
(giftgraph.cli.datalock): a second is refused, saying who holds it and what to do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from giftgraph.cli import datalock


def test_a_data_directory_is_held_by_one_process_at_a_time(tmp_path: Path) -> None:
    first = datalock.hold(tmp_path / "data")
    with pytest.raises(datalock.DataInUse) as busy:
        datalock.hold(tmp_path / "data")
    assert busy.value.pid == os.getpid()
    assert datalock.hold(tmp_path / "other") is not None
    first.close()  # as when its process exits
    datalock.hold(tmp_path / "data").close()


def test_a_second_serve_on_the_same_data_is_refused(tmp_path: Path) -> None:
    held = datalock.hold(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTGRAPH_")}
    env["GIFTGRAPH_DATA_DIR"] = str(tmp_path)
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter, fixed args
            [sys.executable, "-m", "giftgraph.cli", "serve", "--port", str(port)], env=env,
            capture_output=True, text=True, timeout=60, check=False)
    finally:
        held.close()
    assert done.returncode == 2
    assert done.stderr == (
        f"giftgraph serve: another giftgraph serve (pid {os.getpid()}) is using "
        f"{tmp_path.resolve()}; a second one would share its data but not its live events "
        "(they stay in each process). Use the running one (another port: stop it and start "
        "it with --port), or run both with GIFTGRAPH_BROADCAST_URL=postgres://\n")
