"""What the commands share: settings read once with their problems said plainly, and the
database (the configured one, or the embedded one, started and stopped around a command)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from giftgraph.config import Settings, get_settings, legacy_data_dir, problems, user_data_dir

USAGE_ERROR = 2  # a bad setting or argument: the exit code argparse uses for its own
SCHEMA_CHECK_SECONDS = 15  # reading an external database's schema revision


class CommandError(Exception):
    """Said on stderr as it is (one line each), without a traceback; exit `code`."""

    def __init__(self, *lines: str, code: int = 1) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines
        self.code = code


def load_settings() -> Settings:
    """The process's settings; a bad one is a `CommandError` naming its variable."""
    try:
        return get_settings()
    except (ValidationError, SettingsError) as exc:
        raise CommandError(*problems(exc), code=USAGE_ERROR) from None


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def where_data_lives(settings: Settings) -> str:
    """One line naming the database: the embedded one's directory, or the external one's
    host, port and name (never its user or password)."""
    if settings.database_url:
        return f"database: {external_database(settings.database_url)} (GIFTGRAPH_DATABASE_URL)"
    if "data_dir" in settings.model_fields_set:
        chosen = "GIFTGRAPH_DATA_DIR"
    elif settings.data_dir == legacy_data_dir():
        chosen = "found in the current directory"
    else:
        chosen = "the default; GIFTGRAPH_DATA_DIR chooses another"
    return f"data: embedded PostgreSQL in {settings.data_dir.resolve()} ({chosen})"


def external_database(url: str) -> str:
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "PostgreSQL (the URL is not shown)"
    host = parsed.host or str(parsed.query.get("host") or "localhost")
    port = f":{parsed.port}" if parsed.port else ""
    name = f", database {parsed.database}" if parsed.database else ""
    return f"PostgreSQL at {host}{port}{name}"


def note_legacy_data_dir(settings: Settings) -> None:
    """The embedded database used to live in ./.giftgraph of whichever directory a command
    ran in. One found there is used (not silently left for an empty new one), and said so,
    with how to keep using it from anywhere."""
    if settings.database_url or "data_dir" in settings.model_fields_set:
        return
    legacy = legacy_data_dir()
    if legacy is None or settings.data_dir != legacy:
        return
    target = user_data_dir()
    say(f"note: using the database in {legacy} (found in the current directory; the "
        f"default data directory is now {target}, which a start from any directory uses).")
    if (target / "pgdata").exists():
        say(f"  {target} holds a database too. To use one of them wherever you start, set "
            f"GIFTGRAPH_DATA_DIR={legacy} (or {target}).")
    else:
        say(f"  To keep this one wherever you start, stop GiftGraph and move it: "
            f"mkdir -p {target} && mv {legacy / 'pgdata'} {target}/ "
            f"(or set GIFTGRAPH_DATA_DIR={legacy}).")


@contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The database's URL for the length of a command: the configured one, or the embedded
    server's (started here, stopped after)."""
    if settings.database_url:
        yield settings.database_url
        return
    from giftgraph.db.embedded import EmbeddedPostgres

    note_legacy_data_dir(settings)
    embedded = EmbeddedPostgres(Path(settings.data_dir))
    url = embedded.start()
    try:
        yield url
    finally:
        embedded.stop()


@contextmanager
def reaching(url: str) -> Iterator[None]:
    """Around a command's work on the database: one it cannot reach, or that refuses it
    (no such database, a wrong password), is one line naming the database (never its user
    or password), exit 1, not a traceback."""
    from asyncpg.exceptions import PostgresError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (OSError, SQLAlchemyError, PostgresError, TimeoutError) as exc:
        cause = getattr(exc, "orig", None) or exc  # SQLAlchemy's wrapper: the driver's error
        cause = cause.__cause__ or cause  # and under its DB-API adapter, asyncpg's
        raise CommandError(f"could not use the database ({type(cause).__name__}): "
                           f"{external_database(url)}") from None


def schema_at_head(url: str, command: str) -> bool:
    """An external database is served only at this code's head revision: else every write
    would fail while /health said healthy. Migrating it is the operator's step (`giftgraph
    migrate`, as the Dockerfile runs before `serve`), so that several instances never
    migrate on their own at start. Unreachable now: served (warned), /health says so."""
    from sqlalchemy.exc import SQLAlchemyError

    from giftgraph.db.migrate import describe, head_revisions, schema_revisions

    try:
        found = asyncio.run(asyncio.wait_for(schema_revisions(url), SCHEMA_CHECK_SECONDS))
    except (OSError, SQLAlchemyError, TimeoutError) as exc:
        print(f"giftgraph {command}: could not read the database's schema revision "
              f"({type(exc).__name__}); serving, /health reports the database until it is "
              "reachable and migrated", file=sys.stderr, flush=True)
        return True
    if found == head_revisions():
        return True
    print(f"giftgraph {command}: the database is at schema revision {describe(found)}, this "
          f"release needs {describe(head_revisions())}: run `giftgraph migrate` first",
          file=sys.stderr, flush=True)
    return False


def migrated(settings: Settings, url: str) -> None:
    """Before a command writes: the embedded database is migrated (as `serve` does at
    start); an external one must be at this release's revision already (`giftgraph
    migrate` is the operator's step), and reachable."""
    from sqlalchemy.exc import SQLAlchemyError

    from giftgraph.db.migrate import describe, head_revisions, schema_revisions, upgrade

    if not settings.database_url:
        asyncio.run(upgrade(url))
        return
    try:
        found = asyncio.run(asyncio.wait_for(schema_revisions(url), SCHEMA_CHECK_SECONDS))
    except (OSError, SQLAlchemyError, TimeoutError) as exc:
        raise CommandError(f"could not reach the database ({type(exc).__name__}): "
                           f"{external_database(url)}") from None
    if found != head_revisions():
        raise CommandError(f"the database is at schema revision {describe(found)}, this "
                           f"release needs {describe(head_revisions())}: run `giftgraph "
                           f"migrate` first", code=USAGE_ERROR)
