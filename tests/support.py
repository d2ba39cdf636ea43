"""Real processes for the tests: the service under uvicorn, and a private redis-server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import httpx
import pytest

from giftgraph.accel.switch import ws_protocol
from giftgraph.admission.server import HTTP_PROTOCOL
from giftgraph.config import Settings

# The fast paths (giftgraph.accel) on or off for this test run, as the app reads the switch:
# `GIFTGRAPH_ACCEL=false pytest ...` runs everything on the plain library paths.
ACCEL: bool = Settings(_env_file=None).accel  # type: ignore[call-arg]
# The `--ws` protocol of a test server: what `giftgraph serve` picks under the switch.
WS_PROTOCOL = ws_protocol(ACCEL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a test instance: fast password hashing, generous limits."""
    return {
        **os.environ,
        "GIFTGRAPH_DATABASE_URL": database_url,
        "GIFTGRAPH_ENVIRONMENT": "test",
        "GIFTGRAPH_ARGON2_TIME_COST": "1",
        "GIFTGRAPH_ARGON2_MEMORY_KIB": "1024",
        "GIFTGRAPH_ARGON2_PARALLELISM": "1",
        "GIFTGRAPH_MUTATION_RATE": "100000/minute",
        "GIFTGRAPH_FAMILY_MUTATION_RATE": "100000/minute",
        "GIFTGRAPH_LOGIN_RATE": "100000/minute",
        "GIFTGRAPH_LOGIN_IP_RATE": "100000/minute",
        "GIFTGRAPH_SIGNUP_IP_RATE": "100000/minute",
        "GIFTGRAPH_MAX_REQUESTS_PER_CALLER": "64",
        "GIFTGRAPH_REFUSAL_RATE": "100000",
        "GIFTGRAPH_REFUSAL_BURST": "100000",
        "GIFTGRAPH_ANALYSIS_SECONDS_PER_CALLER": "100000",
        "GIFTGRAPH_ANALYSIS_BURST_SECONDS": "100000",
        "GIFTGRAPH_FAMILY_MUTATION_BURST": "100000",
        "GIFTGRAPH_FAMILY_SUBSCRIPTION_START_BURST": "100000",
        "GIFTGRAPH_TOKEN_IP_RATE": "100000/minute",
        "GIFTGRAPH_SOCKET_CONNECT_IP_RATE": "100000/minute",
        # Tests open many subscriptions as one user; the admission tests set their own.
        "GIFTGRAPH_MAX_SUBSCRIPTIONS_PER_USER": "1000000",
        "GIFTGRAPH_MAX_SUBSCRIPTION_COST_PER_FAMILY": "1000000000",  # 1,000 of one family
        **extra,
    }


def start_service(port: int, env: dict[str, str],
                  out: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """`python -m uvicorn` serving the app factory on 127.0.0.1:`port` (not yet healthy),
    with the HTTP and WebSocket protocol classes `giftgraph serve` uses (the HTTP one
    applies the connection bounds and the idle timeout from the environment's settings)."""
    return subprocess.Popen(  # noqa: S603 - our own interpreter, fixed args
        [sys.executable, "-m", "uvicorn", "--factory", "giftgraph.asgi:create",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--http", HTTP_PROTOCOL, "--ws", WS_PROTOCOL, "--ws-max-size", ws_max_size(env)],
        env=env, stdout=out, stderr=subprocess.STDOUT if out is not None else None,
    )


def ws_max_size(env: dict[str, str]) -> str:
    """The WebSocket message cap `giftgraph serve` would pass uvicorn under `env`."""
    configured = env.get("GIFTGRAPH_MAX_SOCKET_MESSAGE_BYTES")
    return configured or str(Settings.model_fields["max_socket_message_bytes"].default)


def wait_healthy(base: str, proc: subprocess.Popen[bytes], deadline: float,
                 describe: str = "") -> None:
    """Until `base`/health answers 200; fails if the process exits or `deadline` passes."""
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        assert proc.poll() is None, f"{base} exited during startup{describe}"
        assert time.monotonic() < deadline, f"{base} did not become healthy{describe}"
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a process we started; kill it if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("GIFTGRAPH_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed but GIFTGRAPH_REQUIRE_REDIS=1")
        pytest.skip("redis-server is not installed (set GIFTGRAPH_REQUIRE_REDIS=1 to fail)")
    return binary


class RedisServer:
    """A private redis-server on a fixed port that can be stopped, started and frozen."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary, self.port = binary, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - redis-server from PATH, fixed args
            [self.binary, "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--bind", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.ping():
            assert self.proc.poll() is None, "redis-server exited during startup"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections, but nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.thaw()  # a stopped process would not act on SIGTERM
            stop(self.proc)
            self.proc = None


@contextlib.contextmanager
def serving(database_url: str, **extra: str) -> Iterator[str]:
    """The service in its own process on a free port, healthy; yields its base URL."""
    port = free_port()
    proc = start_service(port, service_env(database_url, **extra))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, time.monotonic() + 30)
        yield base
    finally:
        stop(proc)


def spy_published(hub: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every event `hub` publishes from now on, in order (publishing goes on as before)."""
    published: list[Any] = []
    original = hub.publish

    async def spy(events: list[Any]) -> int:
        published.extend(events)
        return int(await original(events))

    monkeypatch.setattr(hub, "publish", spy)
    return published


def serve_options(monkeypatch: pytest.MonkeyPatch, **env: str | None) -> dict[str, Any]:
    """The options of the uvicorn config `giftgraph serve` runs (which is not run) with
    these GIFTGRAPH_ settings (None: unset), on a free port and an unused database URL."""
    from giftgraph import cli
    from giftgraph.cli import serve
    from giftgraph.config import get_settings

    calls: list[dict[str, Any]] = []

    def run(config: Any, listening: Any) -> int:
        calls.append(vars(config))
        return 0

    monkeypatch.setattr(serve, "run", run)
    monkeypatch.setenv("GIFTGRAPH_DATABASE_URL", "postgresql://unused/db")
    monkeypatch.setenv("GIFTGRAPH_PORT", str(free_port()))
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(f"GIFTGRAPH_{name}", raising=False)
        else:
            monkeypatch.setenv(f"GIFTGRAPH_{name}", value)
    get_settings.cache_clear()
    try:
        assert cli.main(["serve"]) == 0
    finally:
        get_settings.cache_clear()
    [options] = calls
    return options


# A WebSocket driven from a raw socket (tests of what a client that stops reading gets).
def ws_upgrade(host: str = "127.0.0.1", protocol: str = "graphql-transport-ws") -> bytes:
    """The client's opening handshake for /graphql (RFC 6455 4.1, the RFC's sample key)."""
    return (f"GET /graphql HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}"
            "\r\n\r\n").encode("ascii")


def text_frame(text: str) -> bytes:
    """A client's masked text frame (RFC 6455 5.3), with a zero mask: the payload as it is."""
    data = text.encode()
    n = len(data)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + data


def unread_stream(base: str, token: str, query: str) -> socket.socket:
    """A multipart subscription stream of `query` (an HTTP POST to /graphql) whose client
    reads no more than its response's first bytes, `200` asserted (a tiny receive buffer)."""
    hold = socket.socket()
    hold.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hold.connect(("127.0.0.1", int(base.rsplit(":", 1)[1])))
    body = json.dumps({"query": query}).encode()
    hold.sendall(b"POST /graphql HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
                 b'accept: multipart/mixed;subscriptionSpec="1.0", application/json\r\n'
                 b"authorization: Bearer " + token.encode() + b"\r\ncontent-length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    hold.settimeout(10)
    assert hold.recv(64).startswith(b"HTTP/1.1 200")
    return hold
