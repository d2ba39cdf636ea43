"""Plumbing shared by the workloads: a fresh seeded database, server subprocesses, GraphQL
calls, statistics and machine facts."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import platform
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent  # the repository: uvicorn imports bench.* here
RESULTS = Path(__file__).resolve().parent / "results"
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
PROTOCOL = "graphql-transport-ws"


def raise_nofile() -> int:
    """Raise this process's open-file soft limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


# ---------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values; NaN when empty."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """count, mean, p50, p90, p99, max, in milliseconds, and a 101-point CDF (ms)."""
    values = sorted(s * 1000 for s in seconds)
    return {
        "count": len(values),
        "mean_ms": sum(values) / len(values) if values else float("nan"),
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "max_ms": values[-1] if values else float("nan"),
        "cdf_ms": [round(percentile(values, q), 3) for q in range(101)],
    }


# ---------------------------------------------------------------- database


def dsn(url: str) -> str:
    """A libpq/asyncpg DSN for a SQLAlchemy-style URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _reachable(url: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn(url), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def fetchval(url: str, sql: str) -> Any:
    """The first column of the first row of `sql` on the database at `url`."""
    async def go() -> Any:
        conn = await asyncpg.connect(dsn(url))
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(go())


@contextlib.contextmanager
def fresh_database(label: str, *, keep: bool = False) -> Iterator[str]:
    """A new, migrated, demo-seeded database; dropped afterwards unless `keep`.

    The server: GIFTGRAPH_BENCH_DATABASE_URL's, else the local one on 127.0.0.1:5432, else an
    embedded pgserver in a temporary directory.
    """
    from giftgraph.config import Settings
    from giftgraph.db.migrate import upgrade
    from giftgraph.demo import seed

    admin = os.environ.get("GIFTGRAPH_BENCH_DATABASE_URL") or LOCAL_SERVER
    embedded = None
    if not asyncio.run(_reachable(admin)):
        from giftgraph.db.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="giftgraph-bench-")))
        embedded.start()
        admin = embedded.admin_url()
    name = f"giftgraph_bench_{label}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        asyncio.run(upgrade(url))
        settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
        asyncio.run(seed(url, settings, show_progress=False))
        asyncio.run(_admin(url, "ANALYZE"))  # planner statistics, as autovacuum would gather
        yield url
    finally:
        if keep:
            print(f"kept database {url}")
        else:
            asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if embedded is not None and not keep:
            embedded.stop()


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TROUBLE = ("Traceback", "Error", "Exception", '"level": "error"', '"level": "warning"',
           "WARNING", "ERROR")


# The API, started as its users start it (`Server(SERVE, ...)`).
SERVE = "giftgraph serve"


class Server:
    """An ASGI app under `python -m uvicorn` in its own process (raised fd limit inherited),
    or the API under `giftgraph serve` (app SERVE)."""

    def __init__(self, app: str, env: dict[str, str], health: str = "/health",
                 args: tuple[str, ...] = ()) -> None:
        self.app = app
        self.env = env
        self.args = args  # more uvicorn options
        self.health = health
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - lives with the server
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        if self.app == SERVE:  # `args`: serve's options (--workers)
            return [sys.executable, "-m", "giftgraph.cli", "serve", "--host", "127.0.0.1",
                    "--port", str(self.port), *self.args]
        return [sys.executable, "-m", "uvicorn", "--factory", self.app, "--host", "127.0.0.1",
                "--port", str(self.port), "--log-level", "warning", "--no-access-log",
                "--timeout-graceful-shutdown", "3",
                # as `giftgraph serve` runs (GIFTGRAPH_WS_PER_MESSAGE_DEFLATE), the same for
                # the raw baseline: every server here is measured on equal terms
                "--ws-per-message-deflate", "false", *self.args]

    def ready(self) -> bool:
        return httpx.get(self.base + self.health, timeout=2).status_code == 200

    def start(self) -> Server:
        """Launch the process (without waiting for it: start several, then enter each)."""
        # this checkout's package first: an editable install of another checkout (a git
        # worktree's shared virtualenv) would otherwise be the server measured
        env = {**os.environ, **self.env,
               "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT)))}
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=env,  # noqa: S603
                                     stdout=self.log, stderr=subprocess.STDOUT)
        atexit.register(self.__exit__)  # never left behind, even if never entered
        return self

    def __enter__(self) -> Server:
        """Start (unless started) and wait until /health answers 200."""
        if self.proc is None:
            self.start()
        assert self.proc is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.app} exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if self.ready():
                    return self
            time.sleep(0.2)
        tail = self.log_tail()
        self.__exit__()
        raise RuntimeError(f"{self.app} did not become healthy:\n{tail}")

    def __exit__(self, *_: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def log_tail(self, lines: int = 30) -> str:
        self.log.seek(0)
        return "\n".join(self.log.read().decode(errors="replace").splitlines()[-lines:])

    def trouble(self, since: int = 0, limit: int = 3) -> tuple[int, list[str]]:
        """Lines of the server's log after byte `since` that report a problem (a traceback,
        an error or a warning; not the per-operation info lines), at most `limit`, and the
        log's size now: a cell's errors are explained by what the server said meanwhile,
        or by its silence (the connection failed outside the application)."""
        self.log.seek(since)
        text = self.log.read()
        found = [line[:300] for line in text.decode(errors="replace").splitlines()
                 if any(word in line for word in TROUBLE)]
        return since + len(text), found[:limit]


def api_env(database_url: str) -> dict[str, str]:
    """Production settings for the API under test, with limits raised for load."""
    return {
        "GIFTGRAPH_DATABASE_URL": database_url,
        "GIFTGRAPH_ENVIRONMENT": "production",
        "GIFTGRAPH_JWT_SECRET": secrets.token_urlsafe(40)[:40],
        "GIFTGRAPH_METRICS_TOKEN": METRICS_TOKEN,
        "GIFTGRAPH_ACCESS_LOG": "false",  # as the benchmarks always ran: no line per request
        "GIFTGRAPH_MUTATION_RATE": "10000000/minute",
        "GIFTGRAPH_FAMILY_MUTATION_RATE": "10000000/minute",
        "GIFTGRAPH_MAX_SOCKETS_PER_USER": "20000",
        "GIFTGRAPH_MAX_SUBSCRIPTIONS_PER_USER": "1000000",  # W2's sockets are one user's
        "GIFTGRAPH_MAX_SUBSCRIPTION_COST_PER_FAMILY": str(2**40),  # and one family's
        # ... and one family's, subscribing all at once (the default: 50, then 20 a second)
        "GIFTGRAPH_FAMILY_SUBSCRIPTION_START_BURST": "1000000",
        "GIFTGRAPH_FAMILY_SUBSCRIPTION_START_RATE": "1000000",
        # W2 opens 10,000 sockets on one process (the default cap is 4,096).
        "GIFTGRAPH_MAX_CONNECTIONS": "30000",
        # A herd's handshakes from a few source addresses (W2, W5, W6).
        "GIFTGRAPH_MAX_CONNECTIONS_PER_IP": "30000",
        "GIFTGRAPH_ACCESS_TOKEN_TTL_SECONDS": "7200",
        # The bench signs up and logs in its users from one address.
        "GIFTGRAPH_SIGNUP_IP_RATE": "10000000/minute",
        "GIFTGRAPH_MAX_REQUESTS_PER_CALLER": "10000",  # W1 runs 64 requests of one user at once
        # ... and one family's answers at ~20 MB a second (the default: 8 MiB, after 32)
        "GIFTGRAPH_ANSWER_BYTES_RATE": str(2**40),
        # ... and the executor's values of them (W1's executed reads, the fan-out's events)
        "GIFTGRAPH_ANSWER_VALUES_RATE": str(2**40),
        "GIFTGRAPH_TOKEN_IP_RATE": "10000000/minute",
        "GIFTGRAPH_LOGIN_IP_RATE": "10000000/minute",
        "GIFTGRAPH_LOGIN_RATE": "10000000/minute",
        # ... and opens its thousands of sockets from it too.
        "GIFTGRAPH_SOCKET_CONNECT_IP_RATE": "10000000/minute",
    }


def api_server(database_url: str) -> Server:
    """The API as its users run it: `giftgraph serve` (its HTTP protocol with the connection
    cap and timeouts, its WebSocket protocol and message cap, its listen backlog, listening
    before the app loads), without uvicorn's access log."""
    return Server(SERVE, api_env(database_url))


def uvicorn_args() -> tuple[str, ...]:
    """uvicorn's options as `giftgraph serve` sets them, for the API's app under `python -m
    uvicorn` (bench.traced: the app wrapped)."""
    from giftgraph.accel.switch import ws_protocol
    from giftgraph.admission.server import HTTP_PROTOCOL
    from giftgraph.config import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    ws_max = str(settings.max_socket_message_bytes)
    return ("--http", HTTP_PROTOCOL, "--ws", ws_protocol(settings.accel),
            "--ws-max-size", ws_max, *listen_args())


def listen_args() -> tuple[str, ...]:
    """uvicorn's listen backlog as `giftgraph serve` sets it (GIFTGRAPH_LISTEN_BACKLOG), for
    the API and the floors alike."""
    from giftgraph.config import Settings

    return ("--backlog", str(Settings(_env_file=None).listen_backlog))  # type: ignore[call-arg]


# ---------------------------------------------------------------- GraphQL calls


# The servers' /metrics bearer token (api_env); worker processes inherit it.
METRICS_TOKEN = os.environ.setdefault("GIFTGRAPH_BENCH_METRICS_TOKEN", secrets.token_urlsafe(40))


def metrics_page(base: str, timeout: float = 30) -> str:
    """The server's /metrics page (production settings: it asks for METRICS_TOKEN)."""
    return HTTP.get(base + "/metrics", timeout=timeout,
                    headers={"authorization": f"Bearer {METRICS_TOKEN}"}).text


HTTP = httpx.Client(timeout=30)  # one keep-alive client: timed calls pay no connection setup


def gql(base: str, query: str, variables: dict[str, Any] | None = None,
        token: str | None = None) -> dict[str, Any]:
    """`data` of one GraphQL call; any error raises."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = HTTP.post(base + "/graphql", json={"query": query, "variables": variables or {}},
                  headers=headers)
    body = r.json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]  # type: ignore[no-any-return]


def login(base: str) -> str:
    from giftgraph.demo import DEMO_EMAIL, DEMO_PASSWORD

    data = gql(base, "mutation($e: String!, $p: String!) { login(email: $e, password: $p) "
               "{ accessToken } }", {"e": DEMO_EMAIL, "p": DEMO_PASSWORD})
    return data["login"]["accessToken"]  # type: ignore[no-any-return]


@dataclass
class Item:
    id: str
    status: str


def biggest_list(base: str, token: str) -> tuple[str, list[Item]]:
    """The demo list with the most items, and its items."""
    data = gql(base, "{ lists(first: 100) { edges { node { id items(first: 100) "
               "{ edges { node { id status } } } } } } }", token=token)
    lists = [e["node"] for e in data["lists"]["edges"]]
    best = max(lists, key=lambda gl: len(gl["items"]["edges"]))
    return best["id"], [Item(**e["node"]) for e in best["items"]["edges"]]


STEPS = ("IDEA", "SELECTED", "PURCHASED", "RECEIVED")
SET_STATUS = ("mutation($i: ID!, $s: ItemStatus!) { setListItemStatus(id: $i, status: $s) "
              "{ id status } }")


def neighbour(status: str) -> str:
    """A status one valid step away (forward if possible)."""
    i = STEPS.index(status)
    return STEPS[i + 1] if i + 1 < len(STEPS) else STEPS[i - 1]


def metric(base: str, name: str) -> float:
    """One unlabelled sample from the server's Prometheus /metrics."""
    for line in metrics_page(base).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def wait_for(check: Any, goal: float, timeout: float) -> float:
    """Poll `check()` until it reaches `goal` or `timeout` passes; its last value."""
    deadline = time.monotonic() + timeout
    value = check()
    while value < goal and time.monotonic() < deadline:
        time.sleep(0.1)
        value = check()
    return float(value)


# ---------------------------------------------------------------- machine


@dataclass(frozen=True)
class CpuMark:
    """CPU time used so far by one process and by the machine's cores (Linux /proc)."""

    at: float  # time.monotonic()
    process: float  # the process's user + system seconds
    busy: float  # all cores' non-idle seconds
    total: float  # all cores' seconds


def cpu_mark(pid: int) -> CpuMark | None:
    """Now's CpuMark of `pid`; None where /proc can't tell (not Linux, process gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        with open("/proc/stat") as f:
            cores = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    idle = cores[3] + cores[4]  # idle + iowait
    return CpuMark(time.monotonic(), (int(fields[11]) + int(fields[12])) / tick,
                   (sum(cores[:8]) - idle) / tick, sum(cores[:8]) / tick)


def cpu_use(before: CpuMark | None, after: CpuMark | None) -> dict[str, float]:
    """Between two marks: the process's share of one core and the machine's busy share."""
    if before is None or after is None or after.total <= before.total:
        return {"server_cpu_share": float("nan"), "machine_busy_share": float("nan"),
                "server_cpu_s": float("nan")}
    return {"server_cpu_share": (after.process - before.process) / (after.at - before.at),
            # at most 1: the tick counts are summed as floats
            "machine_busy_share": min(1.0, (after.busy - before.busy)
                                      / (after.total - before.total)),
            "server_cpu_s": after.process - before.process}


def machine_info(database_url: str) -> dict[str, Any]:
    def cpu_model() -> str:
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        return platform.processor() or "unknown"

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=ROOT,  # noqa: S603, S607 - read-only git
                                 capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return "unknown"
        return out.stdout.strip()

    async def pg_version() -> str:
        conn = await asyncpg.connect(dsn(database_url))
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    import psutil

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git("rev-parse", "HEAD"),
        # changes outside the results, which `bench all` itself rewrites as it goes
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", ".",
                              ":(exclude)bench/results")),
        "postgresql": asyncio.run(pg_version()),
        "packages": {p: _version(p) for p in ("strawberry-graphql", "starlette", "uvicorn",
                                              "uvloop", "httptools", "websockets", "asyncpg",
                                              "sqlalchemy", "orjson", "httpx")},
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"
