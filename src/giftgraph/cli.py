"""The `giftgraph` command: serve | migrate | demo-data | export-schema | bench."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from giftgraph.config import Settings, get_settings

SCHEMA_CHECK_SECONDS = 15  # `serve`: reading an external database's schema revision


def _database_url(settings: Settings) -> tuple[str, object | None]:
    """The configured URL, or the embedded server's (started; caller stops it)."""
    if settings.database_url:
        return settings.database_url, None
    from giftgraph.db.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(settings.data_dir)
    return embedded.start(), embedded


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from giftgraph.admission.server import serve_protocol
    from giftgraph.live.wire import WS_PROTOCOL

    settings = get_settings()
    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.workers
    if settings.database_url and not _schema_at_head(settings.database_url):
        return 2
    if workers > 1:
        _share_between_workers(settings, workers)
    if workers > 1 and not settings.database_url:
        # Workers share one embedded server: start and migrate it once, here.
        url, _embedded = _database_url(settings)
        from giftgraph.db.migrate import upgrade

        asyncio.run(upgrade(url))
    print(f"GiftGraph serving on http://{host}:{port}/graphql", flush=True)
    uvicorn.run(
        "giftgraph.asgi:create", host=host, port=port, workers=workers, factory=True,
        log_level="info", ws_ping_interval=settings.ws_ping_interval_seconds,
        ws_ping_timeout=settings.ws_ping_interval_seconds, proxy_headers=True,
        ws_per_message_deflate=settings.ws_per_message_deflate, ws=WS_PROTOCOL,
        # The protocol's parser refuses a larger frame (or fragmented message) from its
        # header, before buffering it, and closes 1009 (admission bound socket_message_bytes).
        ws_max_size=settings.max_socket_message_bytes,
        # Connection cap, request and idle timeouts (giftgraph.admission.server); the idle
        # timeout is uvicorn's keep-alive timer, also set here for its plain protocol.
        http=serve_protocol(), timeout_keep_alive=settings.http_idle_timeout_seconds,
    )
    return 0


def _schema_at_head(url: str) -> bool:
    """An external database is served only at this code's head revision: else every write
    would fail while /health said healthy. Migrating it is the operator's step (`giftgraph
    migrate`, as the Dockerfile runs before `serve`), so that several instances never
    migrate on their own at start. Unreachable now: served (warned), /health says so."""
    from sqlalchemy.exc import SQLAlchemyError

    from giftgraph.db.migrate import describe, head_revisions, schema_revisions

    try:
        found = asyncio.run(asyncio.wait_for(schema_revisions(url), SCHEMA_CHECK_SECONDS))
    except (OSError, SQLAlchemyError, TimeoutError) as exc:
        print(f"giftgraph serve: could not read the database's schema revision "
              f"({type(exc).__name__}); serving, /health reports the database until it is "
              "reachable and migrated", file=sys.stderr, flush=True)
        return True
    if found == head_revisions():
        return True
    print(f"giftgraph serve: the database is at schema revision {describe(found)}, this "
          f"release needs {describe(head_revisions())}: run `giftgraph migrate` first",
          file=sys.stderr, flush=True)
    return False


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


def cmd_migrate(_: argparse.Namespace) -> int:
    from giftgraph.db.migrate import upgrade

    settings = get_settings()
    url, embedded = _database_url(settings)
    try:
        asyncio.run(upgrade(url))
    finally:
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]
    print("database is at the latest migration")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from giftgraph.db.migrate import upgrade
    from giftgraph.demo import seed

    settings = get_settings()
    url, embedded = _database_url(settings)
    try:
        asyncio.run(upgrade(url))
        login = asyncio.run(seed(url, settings, seed_value=args.seed))
    finally:
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]
    print(f"\nDemo family ready. Log in with email {login.email!r} and password {login.password!r}")
    return 0


def cmd_export_schema(args: argparse.Namespace) -> int:
    from giftgraph.schema.schema import build_schema

    sdl = build_schema().as_str() + "\n"
    if args.output == "-":
        sys.stdout.write(sdl)
    else:
        Path(args.output).write_text(sdl)
        print(f"wrote {args.output}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    # bench/ lives beside src/ in the repository, not in the installed package.
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / "bench" / "runner.py").is_file():
            sys.path.insert(0, str(root))
            break
    else:
        print("giftgraph bench: run it from the repository (no bench/ directory found)")
        return 2
    runner = importlib.import_module("bench.runner")
    return int(runner.run(args.workload, duration=args.duration, quick=args.quick,
                          keep_db=args.keep_db))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="giftgraph", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "serve", help="run the API server (embedded PostgreSQL by default, migrated at "
        "start)",
        description="Run the API server. The embedded PostgreSQL is migrated at start. An "
        "external database (GIFTGRAPH_DATABASE_URL) must be at this release's schema "
        "revision: run `giftgraph migrate` first; if it is not, serve refuses to start "
        "(exit code 2).")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("migrate", help="upgrade the database schema to the latest revision")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("demo-data", help="seed a realistic demo family and print its login")
    p.add_argument("--seed", type=int, default=7, help="random seed (same seed, same data)")
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("export-schema", help="write the GraphQL SDL")
    p.add_argument("output", nargs="?", default="schema.graphql")
    p.set_defaults(func=cmd_export_schema)

    p = sub.add_parser("bench", help="benchmarks against real server processes (bench/)")
    p.add_argument("workload", nargs="?", default="all",
                   choices=("reads", "fanout", "memory", "writes", "fairness", "soak", "all"),
                   help="one workload, or all of W1-W4 (the default); fairness and soak "
                        "only by name")
    p.add_argument("--duration", type=float,
                   help="seconds per measured level (default 10), per fairness phase "
                        "(default 12), or of the whole soak (default 1800)")
    p.add_argument("--quick", action="store_true", help="short runs, fewer sizes (3 s levels)")
    p.add_argument("--keep-db", action="store_true", help="keep the benchmark database")
    p.set_defaults(func=cmd_bench)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
