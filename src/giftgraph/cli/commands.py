"""`giftgraph migrate | demo-data | export-schema | bench`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from giftgraph.cli.common import database, load_settings, reaching, where_data_lives


def cmd_migrate(_: argparse.Namespace) -> int:
    from giftgraph.db.migrate import upgrade

    settings = load_settings()
    print(where_data_lives(settings), flush=True)
    with database(settings) as url, reaching(url):
        asyncio.run(upgrade(url))
    print("database is at the latest migration")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from giftgraph.db.migrate import upgrade
    from giftgraph.demo import seed

    settings = load_settings()
    print(where_data_lives(settings), flush=True)
    with database(settings) as url, reaching(url):
        asyncio.run(upgrade(url))
        login = asyncio.run(seed(url, settings, seed_value=args.seed))
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
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (root / "bench" / "runner.py").is_file():
            sys.path.insert(0, str(root))
            break
    else:
        print("giftgraph bench: run it from the repository (no bench/ directory found)")
        return 2
    runner = importlib.import_module("bench.runner")
    return int(runner.run(args.workload, duration=args.duration, quick=args.quick,
                          keep_db=args.keep_db))
