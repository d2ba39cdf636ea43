"""The `giftgraph` command: serve | migrate | demo-data | export-schema | bench | user.

Every setting is read from the environment (GIFTGRAPH_*) or a .env file in the current
directory; see docs/operations.md. A bad one is one line naming its variable, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError
from pydantic_settings import SettingsError

from giftgraph import __version__
from giftgraph.cli.commands import cmd_bench, cmd_demo_data, cmd_export_schema, cmd_migrate
from giftgraph.cli.common import USAGE_ERROR, CommandError
from giftgraph.cli.serve import cmd_serve
from giftgraph.cli.users import cmd_user_create, cmd_user_reset_password
from giftgraph.config import Settings, problems

BENCH_WORKLOADS = ("reads", "fanout", "memory", "writes", "fairness", "soak", "tenants",
                   "storm", "plans", "live", "all")
EPILOG = "Settings: GIFTGRAPH_* environment variables or .env (docs/operations.md)."


class _Formatter(argparse.HelpFormatter):
    """Descriptions wrapped paragraph by paragraph; an examples paragraph kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.strip().split("\n\n"):
            if paragraph.startswith("examples:"):
                paragraphs.append(textwrap.indent(paragraph, indent))
            else:
                paragraphs.append(textwrap.fill(" ".join(paragraph.split()), width,
                                                initial_indent=indent, subsequent_indent=indent))
        return "\n\n".join(paragraphs)


class Subparsers(Protocol):
    """What `ArgumentParser.add_subparsers()` returns, as far as the commands use it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def _add(sub: Subparsers, name: str, summary: str,
         description: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=summary, description=description,
                          formatter_class=_Formatter, epilog=EPILOG)


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high`, as the matching setting allows
    (`--port 99999` would otherwise reach the OS as another port, `--port 0` mean 8000)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"{low}-{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds} (got {value})")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="giftgraph", description=__doc__,
                                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"giftgraph {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _add(sub, "serve", "run the API server (embedded PostgreSQL by default, migrated at start)",
             "Run the API server. It prints where its data lives and the addresses of "
             "the dashboard (/) and GraphiQL (/graphql).\n\n"
             "Without GIFTGRAPH_DATABASE_URL it starts an embedded PostgreSQL in "
             "GIFTGRAPH_DATA_DIR (default: the user's data directory, e.g. "
             "~/.local/share/giftgraph), migrated at start. An external database must "
             "be at this release's schema revision: run `giftgraph migrate` first; if "
             "it is not, serve refuses to start (exit code 2).")
    p.add_argument("--host", help="interface to listen on (default: GIFTGRAPH_HOST, "
                   "127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=_int_in(1, 65535),
                   help="TCP port (default: GIFTGRAPH_PORT, 8000)")
    p.add_argument("--workers", type=_int_in(1),
                   help="worker processes (default: GIFTGRAPH_WORKERS, 1); more than one "
                   "share events over PostgreSQL LISTEN/NOTIFY")
    p.set_defaults(func=cmd_serve)

    p = _add(sub, "migrate", "upgrade the database schema to the latest revision",
             "Upgrade the database (GIFTGRAPH_DATABASE_URL, or "
             "the embedded one in GIFTGRAPH_DATA_DIR) to the latest "
             "schema revision.")
    p.set_defaults(func=cmd_migrate)

    p = _add(sub, "demo-data", "seed a realistic demo family and print its login",
             "Seed a realistic demo family (migrating "
             "first) and print its login.")
    p.add_argument("--seed", type=int, default=7,
                   help="random seed: the same seed gives the same data (default: 7)")
    p.set_defaults(func=cmd_demo_data)

    p = _add(sub, "export-schema", "write the GraphQL SDL",
             "Write the GraphQL schema (SDL).")
    p.add_argument("output", nargs="?", default="schema.graphql",
                   help="file to write, or - for standard output (default: schema.graphql)")
    p.set_defaults(func=cmd_export_schema)

    p = _add(sub, "bench", "benchmarks against real server processes (bench/)",
             "Benchmarks against real server processes; run "
             "from the repository (bench/). Results go to bench/results/.")
    p.add_argument("workload", nargs="?", default="all", choices=BENCH_WORKLOADS,
                   help="one workload, or all of W1-W4 (default: all); fairness, soak, "
                        "tenants, storm, plans and live only by name")
    p.add_argument("--duration", type=float,
                   help="seconds per measured level (default: 10), per fairness phase "
                        "(default: 20), or of the whole soak (default: 1800)")
    p.add_argument("--quick", action="store_true",
                   help="short runs, fewer sizes (3 s levels) (default: off)")
    p.add_argument("--keep-db", action="store_true",
                   help="keep the benchmark database afterwards (default: dropped)")
    p.set_defaults(func=cmd_bench)

    _user_parsers(sub)
    return parser


def _user_parsers(sub: Subparsers) -> None:
    user = _add(sub, "user", "create users, reset passwords (for operators)",
             "Accounts, without the API: for the first "
             "login, or a member locked out. Passwords are typed at "
             "a terminal (twice) or read from standard input "
             "(--password-stdin), never given as an argument: "
             "arguments are visible in `ps` and shell history.")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="COMMAND")

    p = _add(user_sub, "create", "create a user: the ADMIN of a new family, or a member of one",
             "Create a user: with --new-family, a new family and its first ADMIN (as "
             "signUp); with --family, a member of an existing family (as "
             "registerUser).\n\nexamples:\n"
             "  giftgraph user create alice@example.com --name Alice "
             "--new-family 'The Smiths'\n"
             "  echo \"$PW\" | giftgraph user create bob@example.com --name Bob "
             "--family 'The Smiths' --password-stdin")
    p.add_argument("email", metavar="EMAIL", help="the user's email (their login)")
    p.add_argument("--name", required=True, help="display name (required)")
    family = p.add_mutually_exclusive_group(required=True)
    family.add_argument("--new-family", metavar="NAME",
                        help="create a family of this name, with the user as its ADMIN "
                             "(required: this or --family)")
    family.add_argument("--family", metavar="NAME_OR_ID",
                        help="add the user to this existing family: its ID, or its name "
                             "if no other family has it (required: this or --new-family)")
    p.add_argument("--role", choices=("MEMBER", "ADMIN"),
                   help="role in an existing family (default: MEMBER; a new family's first "
                        "user is its ADMIN)")
    p.add_argument("--currency", default="USD",
                   help="a new family's currency, ISO 4217 (default: USD)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from standard input's first line (default: "
                        "prompt at the terminal)")
    p.set_defaults(func=cmd_user_create)

    p = _add(user_sub, "reset-password", "set a user's password and end all their sessions",
             "Set a user's password, as a password change through the API does: every "
             "refresh token of theirs is revoked and every access token issued before "
             "stops working (users.token_epoch moves on). Their open sockets on running "
             "servers close at once when GIFTGRAPH_BROADCAST_URL is shared "
             "(postgres:// or redis://).")
    p.add_argument("email", metavar="EMAIL", help="the user's email")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the new password from standard input's first line (default: "
                        "prompt at the terminal)")
    p.set_defaults(func=cmd_user_reset_password)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CommandError as exc:
        name = " ".join(filter(None, (args.command, getattr(args, "user_command", None))))
        for line in exc.lines:  # a setting's line names its variable, and is shown as is
            shown = line if line.startswith("GIFTGRAPH_") else f"giftgraph {name}: {line}"
            print(shown, file=sys.stderr, flush=True)
        return exc.code
    except (ValidationError, SettingsError) as exc:
        # Settings read on the way (a command that does not load them first): said the same.
        if isinstance(exc, ValidationError) and exc.title != Settings.__name__:
            raise
        for line in problems(exc):
            print(line, file=sys.stderr, flush=True)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
