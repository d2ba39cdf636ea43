"""`giftgraph serve`: the API server, under uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

from giftgraph.cli.common import (
    load_settings,
    note_legacy_data_dir,
    schema_at_head,
    where_data_lives,
)
from giftgraph.config import Settings


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from giftgraph.accel.switch import ws_protocol
    from giftgraph.admission.server import serve_protocol

    settings = load_settings()
    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.workers
    # Listening before anything slow (the schema check, the app's imports, its start-up):
    # after a restart, the clients that come back meanwhile wait in the listen queue for
    # the app instead of being refused and retrying. (`uvicorn.run` loads the app first.)
    # A busy port is one clear line, before any banner.
    try:
        listening = listen(host, port, settings.listen_backlog)
    except OSError as exc:
        print(f"giftgraph serve: {host}:{port} is not free ({exc.strerror or exc}); choose "
              "another with --port (or GIFTGRAPH_PORT)", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        "giftgraph.asgi:create", host=host, port=port, workers=workers, factory=True,
        log_level="info", access_log=settings.access_log,
        ws_ping_interval=settings.ws_ping_interval_seconds,
        ws_ping_timeout=settings.ws_ping_interval_seconds, proxy_headers=True,
        ws_per_message_deflate=settings.ws_per_message_deflate, ws=ws_protocol(settings.accel),
        # The protocol's parser refuses a larger frame (or fragmented message) from its
        # header, before buffering it, and closes 1009 (admission bound socket_message_bytes).
        ws_max_size=settings.max_socket_message_bytes,
        # Connection cap, request and idle timeouts (giftgraph.admission.server); the idle
        # timeout is uvicorn's keep-alive timer, also set here for its plain protocol.
        http=serve_protocol(),
        timeout_keep_alive=settings.http_idle_timeout_seconds,  # type: ignore[arg-type] # a float timer
        backlog=settings.listen_backlog,
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,  # type: ignore[arg-type]
    )
    try:
        if not _alone_on_its_data(settings, workers):
            return 2
        if settings.database_url and not schema_at_head(settings.database_url, "serve"):
            return 2
        if workers > 1:
            _share_between_workers(settings, workers)
        if not settings.database_url:
            note_legacy_data_dir(settings)
        if workers > 1 and not settings.database_url:
            # Workers share one embedded server: start and migrate it once, here (it stops
            # when this process exits).
            from giftgraph.db.embedded import EmbeddedPostgres
            from giftgraph.db.migrate import upgrade

            embedded = EmbeddedPostgres(settings.data_dir)  # held while uvicorn runs
            asyncio.run(upgrade(embedded.start()))
        for line in startup_lines(settings, host, port):
            print(line, flush=True)
        return run(config, listening)
    finally:
        listening.close()


_HELD: list[object] = []  # the data directory's lock, held until the process exits


def _alone_on_its_data(settings: Settings, workers: int) -> bool:
    """With the embedded database and live events in the process (`memory://`), this is
    the only `serve` of its data directory (giftgraph.cli.datalock): a second one would
    share the data but not the live events. False (said) when another one runs."""
    from giftgraph.cli.datalock import DataInUse, hold

    if settings.database_url or workers > 1 \
            or urlsplit(settings.broadcast_url).scheme != "memory":
        return True
    try:
        _HELD.append(hold(settings.data_dir))
    except DataInUse as busy:
        who = f" (pid {busy.pid})" if busy.pid else ""
        print(f"giftgraph serve: another giftgraph serve{who} is using "
              f"{settings.data_dir.resolve()}; a second one would share its data but not its "
              "live events (they stay in each process). Use the running one (another port: "
              "stop it and start it with --port), or run both with "
              "GIFTGRAPH_BROADCAST_URL=postgres://", file=sys.stderr)
        return False
    return True


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """`host:port` bound and listening, as uvicorn binds (SO_REUSEADDR), for uvicorn to
    serve (`run`); OSError when it can't be (in use, not an address of this machine)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)  # for `--workers`: uvicorn's processes serve it
    return sock


def run(config: Any, listening: socket.socket) -> int:
    """uvicorn on the socket that listens already: one process, or `config.workers`
    (uvicorn's supervisor, as `uvicorn.run` starts them). 3 when it did not start."""
    import uvicorn

    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            from uvicorn.supervisors import Multiprocess

            Multiprocess(config, sockets=[listening]).run()
            return 0
        server.run(sockets=[listening])
    except KeyboardInterrupt:
        pass
    return 0 if server.started else 3


def _share_between_workers(settings: Settings, workers: int) -> None:
    """Workers are processes: what a `memory://` backend holds is each worker's own. The
    broadcaster then goes over the database (LISTEN/NOTIFY), which every worker shares, so
    that an event committed through one worker reaches the sockets of all; the workers read
    it from the environment. Rate-limit budgets can't go there (`limits` has no PostgreSQL
    storage): said, with what shares them."""
    if urlsplit(settings.broadcast_url).scheme == "memory":
        os.environ["GIFTGRAPH_BROADCAST_URL"] = "postgres://"
        print(f"--workers {workers}: events go between the workers over PostgreSQL "
              "LISTEN/NOTIFY (GIFTGRAPH_BROADCAST_URL=postgres://; redis://... for Redis)",
              file=sys.stderr, flush=True)
    if urlsplit(settings.rate_limit_storage_url).scheme == "memory":
        print(f"--workers {workers}: rate limits are counted by each worker (memory://), so "
              f"a client may get up to {workers}x each budget; "
              "GIFTGRAPH_RATE_LIMIT_STORAGE_URL=redis://... shares them",
              file=sys.stderr, flush=True)


def startup_lines(settings: Settings, host: str, port: int) -> list[str]:
    """What `serve` says before uvicorn starts: its version, where the data lives, and the
    addresses of the family app and of GraphiQL."""
    from giftgraph import __version__

    shown = host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - naming it, not binding it
        shown = "localhost"  # every interface: this machine's own address reaches it
    elif ":" in host:
        shown = f"[{host}]"
    base = f"http://{shown}:{port}"
    lines = [f"GiftGraph {__version__}", where_data_lives(settings),
             f"app:       {base}/", f"GraphiQL:  {base}/graphql"]
    if shown != host:
        lines.append(f"listening on every interface ({host or '::'}), port {port}")
    return lines
