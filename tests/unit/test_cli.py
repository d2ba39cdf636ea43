"""The `giftgraph` command and its settings, as a new user meets them: a bad setting is one
line naming its variable (exit 2, no traceback, never a secret), CORS origins separated by
commas, where the data lives, --version, and help for every option."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from giftgraph import __version__
from giftgraph.cli import build_parser
from giftgraph.cli.common import external_database, note_legacy_data_dir, where_data_lives
from giftgraph.cli.serve import startup_lines
from giftgraph.config import Settings, problems

WEAK_SECRET = "hunter2-is-weak"


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`giftgraph ARGS` in a directory of its own (no .env), with only `env`'s settings."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("GIFTGRAPH_") and k != "XDG_RUNTIME_DIR"}
    return subprocess.run(  # noqa: S603 - our own interpreter, fixed args
        [sys.executable, "-m", "giftgraph.cli", *args], cwd=tmp_path, env={**clean, **env},
        capture_output=True, text=True, timeout=60, check=False)


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_a_bad_port_is_one_line_naming_it(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "serve", GIFTGRAPH_PORT="abc")
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("GIFTGRAPH_PORT: ")
    assert "'abc'" in line
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("flag", "value"), [
    ("--port", "99999"), ("--port", "0"), ("--port", "abc"), ("--workers", "0")])
def test_serve_refuses_a_port_or_worker_count_its_setting_would_refuse(
        flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    # 99999 used to be handed to the OS (which bound 34463) while the banner said 99999.
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", flag, value])
    assert exit_.value.code == 2
    assert f"argument {flag}: " in capsys.readouterr().err


def test_serve_takes_a_valid_port_and_worker_count() -> None:
    args = build_parser().parse_args(["serve", "--port", "65535", "--workers", "3"])
    assert (args.port, args.workers) == (65535, 3)


@pytest.mark.parametrize("command", [
    ["migrate"], ["demo-data"], ["export-schema", "-"],
    ["user", "create", "a@example.com", "--name", "A", "--new-family", "F"],
    ["user", "reset-password", "a@example.com"]])
def test_every_command_says_a_bad_setting_in_one_line(tmp_path: Path, command: list[str]) -> None:
    done = run_cli(tmp_path, *command, GIFTGRAPH_DB_POOL_SIZE="lots")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == ("GIFTGRAPH_DB_POOL_SIZE: Input should be a valid integer, unable "
                           "to parse string as an integer (got 'lots')\n")


def test_a_bad_setting_in_dot_env_is_said_the_same(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GIFTGRAPH_PORT=0\n")
    done = run_cli(tmp_path, "serve")
    assert done.returncode == 2
    assert done.stderr == ("GIFTGRAPH_PORT: Input should be greater than or equal to 1 "
                           "(got '0')\n")


def test_a_weak_production_secret_is_refused_and_never_echoed(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "migrate", GIFTGRAPH_ENVIRONMENT="production",
                   GIFTGRAPH_JWT_SECRET=WEAK_SECRET)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("GIFTGRAPH_JWT_SECRET: must be at least 32 characters")
    assert WEAK_SECRET not in done.stderr + done.stdout
    done = run_cli(tmp_path, "serve", GIFTGRAPH_ENVIRONMENT="production")
    assert done.returncode == 2
    assert done.stderr.startswith("GIFTGRAPH_JWT_SECRET: must be set")


def test_every_bad_setting_has_its_line_and_secrets_and_urls_are_not_repeated() -> None:
    with pytest.raises(ValidationError) as caught:
        settings(environment="staging", db_pool_size=0, port=70000)
    lines = problems(caught.value)
    assert len(lines) == 3
    assert lines[0].startswith("GIFTGRAPH_ENVIRONMENT: ")
    assert "'staging'" in lines[0]
    assert lines[1].startswith("GIFTGRAPH_DB_POOL_SIZE: ")
    assert "(got 0)" in lines[1]
    assert lines[2].startswith("GIFTGRAPH_PORT: ")
    with pytest.raises(ValidationError) as caught:
        settings(jwt_secret=12345, database_url=["postgresql://u:pa55word@db/x"])
    lines = problems(caught.value)
    assert sorted(line.split(":")[0] for line in lines) == ["GIFTGRAPH_DATABASE_URL",
                                                            "GIFTGRAPH_JWT_SECRET"]
    assert "pa55word" not in "\n".join(lines)
    assert "12345" not in "\n".join(lines)


def test_cors_origins_separated_by_commas_or_a_json_list(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for value, expected in (
        ("http://localhost:3000", ["http://localhost:3000"]),
        ("http://localhost:3000, https://app.example,", ["http://localhost:3000",
                                                        "https://app.example"]),
        ('["https://app.example", "http://localhost:3000"]', ["https://app.example",
                                                              "http://localhost:3000"]),
        ("", []),
    ):
        monkeypatch.setenv("GIFTGRAPH_CORS_ORIGINS", value)
        assert settings().cors_origins == expected, value
    monkeypatch.setenv("GIFTGRAPH_CORS_ORIGINS", '["https://app.example"')
    with pytest.raises(ValidationError) as caught:
        settings()
    [line] = problems(caught.value)
    assert line.startswith("GIFTGRAPH_CORS_ORIGINS: not a JSON list")


@pytest.mark.parametrize("value", ["not a url", "https://app.example/path",
                                   "http://localhost:3000,app.example", "https://h:99999"])
def test_something_that_is_not_an_origin_is_one_line(tmp_path: Path, value: str) -> None:
    # It used to reach Strawberry's check at the app's start: a traceback, exit 1.
    done = run_cli(tmp_path, "serve", "--port", "1", GIFTGRAPH_CORS_ORIGINS=value)
    assert (done.returncode, done.stdout) == (2, "")
    [line] = done.stderr.splitlines()
    assert line.startswith("GIFTGRAPH_CORS_ORIGINS: ")
    assert "is not an origin" in line


@pytest.mark.parametrize(("name", "value"), [
    ("GIFTGRAPH_DATABASE_URL", "mysql://u:pa55word@db/x"),
    ("GIFTGRAPH_DATABASE_URL", "postgresql://u:pa55word@db:99999999/x"),
    ("GIFTGRAPH_DATABASE_URL", "pa55word"),
    ("GIFTGRAPH_BROADCAST_URL", "ftp://u:pa55word@db/x")])
def test_a_url_of_the_wrong_kind_is_one_line_without_its_value(tmp_path: Path, name: str,
                                                               value: str) -> None:
    done = run_cli(tmp_path, "migrate", **{name: value})
    assert (done.returncode, done.stdout) == (2, "")
    [line] = done.stderr.splitlines()
    assert line.startswith(f"{name}: ")
    assert "pa55word" not in done.stderr


def test_an_unreachable_database_is_one_line_naming_it(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "migrate",
                   GIFTGRAPH_DATABASE_URL="postgresql://u:pa55word@127.0.0.1:9/x")
    assert done.returncode == 1
    assert done.stderr == ("giftgraph migrate: could not use the database "
                           "(ConnectionRefusedError): PostgreSQL at 127.0.0.1:9, database x\n")
    assert "pa55word" not in done.stdout + done.stderr


def test_a_comma_separated_cors_list_starts_the_command(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "export-schema", "-",
                   GIFTGRAPH_CORS_ORIGINS="http://localhost:3000,https://app.example")
    assert done.returncode == 0, done.stderr
    assert "type Query" in done.stdout


def test_version(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "--version")
    assert (done.returncode, done.stdout) == (0, f"giftgraph {__version__}\n")


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_every_option_has_help_with_its_default() -> None:
    parsers = _parsers(build_parser())
    assert {p.prog for p in parsers} >= {"giftgraph user create",
                                         "giftgraph user reset-password", "giftgraph serve"}
    for parser in parsers:
        assert parser.description, parser.prog
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help, (parser.prog, action.dest)
            optional = bool(action.option_strings) and not action.required
            if optional and not isinstance(action, argparse._VersionAction):
                assert "default" in action.help or "required" in action.help, \
                    (parser.prog, action.dest, action.help)


def test_the_data_directory_is_the_users_not_the_current_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("GIFTGRAPH_DATA_DIR", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = settings()
    assert s.data_dir == tmp_path / "xdg" / "giftgraph"
    assert where_data_lives(s) == (f"data: embedded PostgreSQL in {tmp_path / 'xdg' / 'giftgraph'}"
                                   " (the default; GIFTGRAPH_DATA_DIR chooses another)")
    note_legacy_data_dir(s)
    assert capsys.readouterr().err == ""

    # A database left in ./.giftgraph by an earlier release is used, and said so.
    (elsewhere / ".giftgraph" / "pgdata").mkdir(parents=True)
    s = settings()
    assert s.data_dir == elsewhere / ".giftgraph"
    assert where_data_lives(s).endswith("(found in the current directory)")
    note_legacy_data_dir(s)
    said = capsys.readouterr().err
    assert f"using the database in {elsewhere / '.giftgraph'}" in said
    assert f"GIFTGRAPH_DATA_DIR={elsewhere / '.giftgraph'}" in said
    assert f"mv {elsewhere / '.giftgraph' / 'pgdata'} {tmp_path / 'xdg' / 'giftgraph'}/" in said

    # Chosen: no note.
    monkeypatch.setenv("GIFTGRAPH_DATA_DIR", str(tmp_path / "chosen"))
    s = settings()
    assert s.data_dir == tmp_path / "chosen"
    assert where_data_lives(s).endswith("(GIFTGRAPH_DATA_DIR)")
    note_legacy_data_dir(s)
    assert capsys.readouterr().err == ""


def test_an_external_database_is_named_without_its_credentials() -> None:
    s = settings(database_url="postgresql+asyncpg://app:pa55word@db.internal:6432/gifts")
    line = where_data_lives(s)
    assert line == ("database: PostgreSQL at db.internal:6432, database gifts "
                    "(GIFTGRAPH_DATABASE_URL)")
    s = settings(database_url="postgresql://app:pa55word@/gifts?host=/run/postgresql")
    assert where_data_lives(s).startswith("database: PostgreSQL at /run/postgresql, ")
    # (A value that is no URL is refused as a setting; if one got here, still nothing shown.)
    assert "pa55word" not in external_database("not a url :pa55word@")


def test_serve_names_the_dashboard_and_graphiql() -> None:
    s = settings(database_url="postgresql://db/gifts")
    assert startup_lines(s, "127.0.0.1", 8000)[2:] == [
        "app:       http://127.0.0.1:8000/", "GraphiQL:  http://127.0.0.1:8000/graphql"]
    lines = startup_lines(s, "0.0.0.0", 9000)  # noqa: S104 - not bound, only shown
    assert lines[2:4] == ["app:       http://localhost:9000/",
                          "GraphiQL:  http://localhost:9000/graphql"]
    assert lines[4] == "listening on every interface (0.0.0.0), port 9000"
    assert startup_lines(s, "::1", 80)[2] == "app:       http://[::1]:80/"


def test_importing_pgserver_says_nothing_about_xdg_runtime_dir(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c",
         "from giftgraph.db.embedded import load_pgserver; load_pgserver()"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "XDG_RUNTIME_DIR" not in done.stderr


@pytest.mark.parametrize(("value", "expected"), [(None, 8192), ("16384", 16384)])
def test_serve_listens_with_the_backlog_setting(monkeypatch: pytest.MonkeyPatch,
                                                value: str | None, expected: int) -> None:
    """`giftgraph serve` passes GIFTGRAPH_LISTEN_BACKLOG to uvicorn as its `backlog`, and
    uvicorn's config takes it."""
    import uvicorn

    from tests.support import serve_options

    options = serve_options(monkeypatch, LISTEN_BACKLOG=value)
    assert options["backlog"] == expected
    assert uvicorn.Config("giftgraph.asgi:create", backlog=options["backlog"]).backlog == expected
