"""Settings from the environment (GIFTGRAPH_*) or a .env file."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

DEFAULT_JWT_SECRET = "changethis-dev-only-secret-key-0000"  # noqa: S105 - refused in production
ENV_PREFIX = "GIFTGRAPH_"
# Where the embedded database lived before it moved to the user's data directory: the
# directory `serve` was started in. Still used when it holds a database (see data_dir).
LEGACY_DATA_DIR = Path(".giftgraph")


def user_data_dir() -> Path:
    """The platform's data directory for GiftGraph (~/.local/share/giftgraph on Linux)."""
    return Path(platformdirs.user_data_dir("giftgraph", appauthor=False))


def legacy_data_dir() -> Path | None:
    """./.giftgraph, absolute, when the current directory holds an embedded database there."""
    legacy = Path.cwd() / LEGACY_DATA_DIR
    return legacy if (legacy / "pgdata").is_dir() else None


def default_data_dir() -> Path:
    """The embedded database's directory when GIFTGRAPH_DATA_DIR is unset: the user's data
    directory, so that a start from any directory finds the same data; but a database
    already in ./.giftgraph (the earlier default) is used rather than silently ignored
    (the CLI says so, with how to move it)."""
    return legacy_data_dir() or user_data_dir()


def _origins(value: Any) -> Any:
    """GIFTGRAPH_CORS_ORIGINS: a JSON list, or origins separated by commas."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValueError("not a JSON list of origins (or origins separated by "
                             "commas)") from exc
    return [part.strip() for part in text.split(",") if part.strip()]


DATABASE_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg",
                    "postgresql+psycopg2")
BROADCAST_SCHEMES = ("memory", "postgresql", "postgres", "redis", "rediss")


def _url_of(value: str, schemes: tuple[str, ...], expected: str) -> None:
    """A URL with one of `schemes` and a port that is one, else a ValueError that names
    neither the URL nor any part of it but its scheme."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not one
    except ValueError:
        raise ValueError(f"not a URL with a valid port: expected {expected}") from None
    if parts.scheme.lower() not in schemes:
        shown = parts.scheme if parts.scheme.isalnum() else "none"
        raise ValueError(f"unsupported scheme {shown!r}: expected {expected}")


def _origin_ok(origin: str) -> bool:
    """`*`, or an origin as a browser sends it: a scheme and a host, an optional port, no
    path, query, fragment or user (what CORS and the socket's origin check compare)."""
    if origin == "*":
        return True
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises on a port that is not one
    except ValueError:
        return False
    return bool(parts.scheme and parts.hostname) and parts.path in ("", "/") \
        and not (parts.query or parts.fragment or parts.username)


class Settings(BaseSettings):
    """Every knob of the service; one instance is passed to create_app()."""

    model_config = SettingsConfigDict(env_prefix="GIFTGRAPH_", env_file=".env", extra="ignore")

    environment: Literal["development", "production", "test"] = "development"
    # None: start the embedded PostgreSQL (pgserver) in data_dir.
    database_url: str | None = None
    data_dir: Path = Field(default_factory=default_data_dir)
    broadcast_url: str = "memory://"
    # Connections kept open per process. An overflow connection is closed as soon as it is
    # back while the pool is full: under steady concurrency above the pool's size that is
    # a new connection (and every statement prepared again on it) for a few percent of
    # requests, so the default keeps all of them and has no overflow.
    db_pool_size: int = Field(default=20, ge=1, le=200)
    db_max_overflow: int = Field(default=0, ge=0, le=200)
    statement_timeout_ms: int = Field(default=10_000, ge=0)
    # A pooled connection idle this long is checked (pinged) before use; 0: before every use.
    db_ping_after_idle_seconds: float = Field(default=1.0, ge=0)

    jwt_secret: str = DEFAULT_JWT_SECRET
    # Required as a bearer token by /metrics when set. Unset: /metrics is open in
    # development and test, and refused (403) in production, since its counters measure
    # every family's activity.
    metrics_token: str | None = None
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    access_token_ttl_seconds: int = Field(default=15 * 60, ge=5)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    # argon2id cost; the defaults are argon2-cffi's (RFC 9106 low-memory profile).
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)

    # A JSON list, or origins separated by commas (`_origins`).
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)

    # Live events
    ws_connection_init_timeout_seconds: float = Field(default=10, gt=0)
    ws_ping_interval_seconds: float = Field(default=20, gt=0)
    # Events are small JSON; permessage-deflate would keep ~60 KB of zlib state per socket
    # and compress every event once per subscriber. Off unless asked for.
    ws_per_message_deflate: bool = False
    max_subscriptions_per_connection: int = Field(default=100, ge=1)
    # Operations open on all of one user's sockets together (max_sockets_per_user times
    # max_subscriptions_per_connection would be 2,000 deliveries of each family event).
    max_subscriptions_per_user: int = Field(default=200, ge=1)
    # The measured costs of one family's open subscriptions in one process, together (live
    # queries aside: max_live_cost_per_family): each event is rendered once per selection.
    max_subscription_cost_per_family: int = Field(default=50_000, ge=1)
    subscriber_queue_size: int = Field(default=1000, ge=1)
    dashboard_interval_ms: int = Field(default=250, ge=0)
    # Live queries (`subscription { live { … } }`): at most one result per subscription per
    # interval; distinct live queries (family, caller, document, variables) per family per
    # process, each one execution per relevant change (admission: live_queries_per_family).
    live_interval_ms: int = Field(default=250, ge=0)
    max_live_queries_per_family: int = Field(default=50, ge=1)
    # Their costs together (each measured as the cost bound measures a document).
    max_live_cost_per_family: int = Field(default=100_000, ge=1)
    # Seconds of live-query execution a second (wall time, charged after each run): one
    # family's, and all families' in this process. Past them a family's live queries run
    # later (their changes fold into the next run): requests and deliveries keep the rest.
    live_seconds_per_family: float = Field(default=0.1, gt=0)
    live_seconds_per_process: float = Field(default=0.35, gt=0)
    # Bytes of the results live queries keep between runs (each its latest result): one
    # family's (at least two answers of max_response_bytes), and all families' in this
    # process (admission: live_bytes).
    max_live_bytes_per_family: int = Field(default=32 * 2**20, ge=64 * 1024)
    max_live_bytes: int = Field(default=256 * 2**20, ge=64 * 1024)
    presence_heartbeat_seconds: float = Field(default=5, gt=0)
    presence_ttl_seconds: float = Field(default=15, gt=0)

    # Hardening
    max_query_depth: int = Field(default=10, ge=1)
    max_aliases: int = Field(default=15, ge=0)
    max_query_tokens: int = Field(default=2000, ge=10)
    # Characters of a document (comments, whitespace and strings included), before parsing.
    max_query_chars: int = Field(default=50_000, ge=100)
    max_query_cost: int = Field(default=50_000, ge=1)
    max_query_overlaps: int = Field(default=5_000, ge=1)
    # None: introspection on, except in production.
    introspection: bool | None = None
    mutation_rate: str = "120/minute"
    # Root mutation fields of a whole family (all its members): members are an ADMIN's to
    # create, so a budget per user alone grows with them.
    family_mutation_rate: str = "600/minute"
    login_rate: str = "10/minute"
    login_ip_rate: str = "60/minute"
    # Logins per account that go ahead of the hashing queue, from a network the account
    # has signed in from (giftgraph.db.networks): its owner's are, a flood's are not.
    known_login_rate: str = "10/hour"
    # An account at least this old is established: its known logins go ahead of those of
    # accounts signed up since (an attacker's, made for a flood). 0: every account is.
    login_established_seconds: float = Field(default=86_400, ge=0, allow_inf_nan=False)
    # Every per-IP bound keys an IPv6 client by its first this many bits (one host is
    # usually given a /64: a bound per address would be none); 128: by each address.
    ipv6_prefix_length: int = Field(default=64, ge=16, le=128)
    rate_limit_storage_url: str = "memory://"
    max_sockets_per_user: int = Field(default=20, ge=1)
    # The admission layer (giftgraph.admission): every bound named there has its setting here.
    signup_ip_rate: str = "10/minute"
    token_ip_rate: str = "60/minute"  # noqa: S105 - a rate, not a secret
    # Pings that re-authenticate a socket (a token check and a database read each), per user.
    socket_reauth_rate: str = "30/minute"
    # New WebSockets and HTTP subscription streams per client IP, one budget, refused
    # before a socket's handshake or a stream's token is read: a household behind one
    # NAT opens a few (one per tab of the app), and all of them again after a restart.
    socket_connect_ip_rate: str = "120/minute"
    max_concurrent_hashes: int = Field(default=2, ge=1)
    # GraphQL requests over HTTP one caller (a family, else an IP) runs at once; the next
    # waits for one of them at most request_wait_seconds, then RATE_LIMITED.
    max_requests_per_caller: int = Field(default=2, ge=1)
    request_wait_seconds: float = Field(default=10, gt=0)
    hash_wait_seconds: float = Field(default=5, gt=0)
    max_socket_message_bytes: int = Field(default=64 * 1024, ge=1024)
    # Levels of arrays and objects in a JSON request body (or GET `variables`/`extensions`):
    # well below the interpreter's recursion limit, which coercion and cache keys would reach.
    max_json_depth: int = Field(default=32, ge=4, le=500)
    # Messages one socket may send per second, on average; bursts of twice
    # max_subscriptions_per_connection (or a second's worth, if more) go through at once.
    socket_message_rate: float = Field(default=20, gt=0)
    max_search_length: int = Field(default=100, ge=1)
    max_replay_events: int = Field(default=10_000, ge=1)
    max_connections: int = Field(default=4096, ge=1)
    # Connections the kernel queues before the process accepts them (uvicorn's `backlog`);
    # after a restart every socket comes back at once. The kernel caps it at somaxconn.
    listen_backlog: int = Field(default=8192, ge=1)
    max_connections_per_ip: int = Field(default=256, ge=1)
    http_header_timeout_seconds: float = Field(default=10, gt=0)
    http_idle_timeout_seconds: float = Field(default=5, gt=0)
    # On SIGTERM: how long `serve` waits for open connections to finish before it closes
    # them (uvicorn's graceful shutdown). An HTTP subscription stream never finishes: it
    # waited forever.
    shutdown_timeout_seconds: float = Field(default=10, gt=0)
    # A request's line and headers as received (uvicorn's httptools protocol has no limit).
    max_header_bytes: int = Field(default=64 * 1024, ge=4096)
    # An answer the client does not read (HTTP; WebSockets on the lean protocol): less than
    # 64 KiB of it taken in this long while the connection's buffer is full, and the
    # connection is reset (its buffers let go).
    http_send_timeout_seconds: float = Field(default=30, gt=0)
    # Pings one WebSocket's client may send a second (as many at once): each is parsed and
    # answered with a pong by the event loop; past it the socket is reset.
    max_ws_pings_per_second: float = Field(default=10, gt=0)
    # One answer serialized (an HTTP response, a subscription's or live query's result):
    # past it, QUERY_TOO_COMPLEX instead. Fields are bounded by max_query_cost; their bytes
    # are not (a 20 KB description is one field).
    max_response_bytes: int = Field(default=4 * 2**20, ge=16 * 1024)
    # Bytes one socket's client has not taken yet: the memory of its messages waiting to be
    # written, and its transport's buffer (at least 5 x max_response_bytes: one answer as a
    # string of 4-byte characters and one in the buffer); the waiting messages of all
    # sockets together. Past either, the socket owing them is cut (admission.sockets.Owing).
    max_socket_owed_bytes: int = Field(default=20 * 2**20, ge=64 * 1024)
    max_owed_bytes: int = Field(default=256 * 2**20, ge=64 * 1024)
    # Bytes of answers one caller (a family, else an IP network) is sent a second, after a
    # burst: past it its next request (or socket operation) waits until it has paid.
    answer_bytes_rate: int = Field(default=8 * 2**20, ge=1024)
    answer_bytes_burst: int = Field(default=32 * 2**20, ge=1024)
    # Values (objects, lists, strings, numbers...) of the answers the executor built for
    # one caller, a second, after a burst (compiled reads' answers have none): likewise.
    answer_values_rate: int = Field(default=20_000, ge=100)
    answer_values_burst: int = Field(default=100_000, ge=100)
    log_json: bool | None = None  # None: JSON in production, console otherwise
    # uvicorn's line per HTTP request (`serve`), written by the log thread as every line is.
    access_log: bool = True

    max_page_size: int = 100
    default_page_size: int = 20
    max_body_bytes: int = 1_000_000
    # Read-query results kept per process (JSON bytes), reused while the caller's family is
    # unchanged (see giftgraph.schema.cache); 0 turns the cache off.
    result_cache_bytes: int = Field(default=32 * 2**20, ge=0)
    # Read queries the SQL compiler translates run as one statement that builds the JSON
    # (see giftgraph.accel.compiled); false: every query runs field by field.
    compile_reads: bool = True
    # The fast paths (giftgraph.accel): compiled reads, the lean executor, direct socket
    # writes and parked subscriptions. false: the plain Strawberry / graphql-core / uvicorn
    # paths serve everything, with the same behaviour, only slower.
    accel: bool = True
    # Refusals per caller (a family, else an IP; giftgraph.admission.requests.Pace): a
    # burst of refusal_burst, then refusal_rate a second; past that, each request of the
    # caller waits for its turn before its body is read.
    refusal_rate: float = Field(default=2, gt=0)
    refusal_burst: int = Field(default=10, ge=1)
    # Seconds of parsing and validating documents not seen before, per caller (a family,
    # else an IP; giftgraph.admission.pace.Allowance): this share of a second each second,
    # after a burst of analysis_burst_seconds; past it, a new document is RATE_LIMITED
    # before it is parsed (documents already parsed and validated cost nothing).
    analysis_seconds_per_caller: float = Field(default=0.02, gt=0)
    analysis_burst_seconds: float = Field(default=0.25, gt=0)
    # A family's root mutation fields start at most at family_mutation_rate's average
    # pace, after a burst of this many; the rest wait their turn (giftgraph.admission.pace).
    family_mutation_burst: int = Field(default=30, ge=1)
    # Operations a family starts over its sockets: a burst, then this many a second; a
    # socket's next `subscribe` waits (the socket is not read meanwhile).
    family_subscription_start_burst: int = Field(default=50, ge=1)
    family_subscription_start_rate: float = Field(default=20, gt=0)
    # How much lower the password-hashing threads' scheduling priority is than the event
    # loop's (Linux nice, per thread); 0 leaves it alone.
    hash_thread_niceness: int = Field(default=5, ge=0, le=19)
    # APQ registrations (documents stored by hash, giftgraph.persisted) per user, else per
    # IP: past it a request still runs, but its document is not stored.
    persisted_register_rate: str = "60/minute"
    # Documents kept in persisted_documents at most (every instance's): past it the oldest
    # registrations give way (0: none kept there, only in each process's LRU).
    max_persisted_documents: int = Field(default=10_000, ge=0)
    # A JSON manifest {sha256: document} (graphql-codegen's persisted documents), checked
    # at start-up; with trusted_documents_only, no other document runs.
    trusted_documents: Path | None = None
    trusted_documents_only: bool = False

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if value == "" else value  # `${GIFTGRAPH_METRICS_TOKEN:-}` in compose

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        return _origins(value)

    @field_validator("database_url")
    @classmethod
    def _a_postgres_url(cls, value: str | None) -> str | None:
        # Messages never repeat the URL (it may hold a password; see `problems`).
        if value is not None:
            _url_of(value, DATABASE_SCHEMES, "a PostgreSQL URL, postgresql://user:password@"
                    "host:5432/database")
        return value

    @field_validator("broadcast_url")
    @classmethod
    def _a_broadcast_url(cls, value: str) -> str:
        _url_of(value, BROADCAST_SCHEMES, "memory://, postgresql://… or redis://…")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _each_an_origin(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not _origin_ok(origin):
                raise ValueError(f"{origin!r} is not an origin: expected '*' or one like "
                                 "https://example.com (scheme, host, optional port, no path)")
        return value

    @field_validator("trusted_documents")
    @classmethod
    def _manifest_loads(cls, value: Path | None) -> Path | None:
        if value is not None:
            from giftgraph.persisted import ManifestError, load_manifest

            try:
                load_manifest(value)
            except ManifestError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @model_validator(mode="after")
    def _trusted_only_needs_manifest(self) -> Settings:
        if self.trusted_documents_only and self.trusted_documents is None:
            raise ValueError("GIFTGRAPH_TRUSTED_DOCUMENTS_ONLY: needs a manifest in "
                             "GIFTGRAPH_TRUSTED_DOCUMENTS")
        return self

    @model_validator(mode="after")
    def _refuse_default_secret_in_production(self) -> Settings:
        # The messages never contain the secret (see `problems`).
        if self.environment == "production" and (
            not self.jwt_secret or self.jwt_secret == DEFAULT_JWT_SECRET
        ):
            raise ValueError(
                "GIFTGRAPH_JWT_SECRET: must be set to a strong secret in production "
                "(the default development secret is refused)"
            )
        if self.environment == "production" and self.metrics_token is not None \
                and len(self.metrics_token) < 32:
            raise ValueError("GIFTGRAPH_METRICS_TOKEN: must be at least 32 characters in "
                             "production")
        if self.environment == "production" and len(self.jwt_secret) < 32:
            raise ValueError(
                "GIFTGRAPH_JWT_SECRET: must be at least 32 characters in production; make "
                "one with `python -c 'import secrets; print(secrets.token_urlsafe(48))'`")
        return self

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


# Settings whose values are never repeated in an error: secrets, and URLs (which may carry
# a password).
_SECRET_NAME = re.compile(r"secret|password|url|token$")
_SOURCE_FIELD = re.compile(r'field "([a-z0-9_]+)"')


def _shown(name: str, value: Any) -> str:
    if _SECRET_NAME.search(name) or not isinstance(value, str | int | float | bool):
        return ""
    text = repr(value)
    return f" (got {text[:60]}{'...' if len(text) > 60 else ''})"


def problems(exc: ValidationError | SettingsError) -> list[str]:
    """One line per bad setting, each naming its variable (`GIFTGRAPH_PORT: ...`); the value
    is repeated only for settings that can't hold a secret."""
    if isinstance(exc, SettingsError):  # a value pydantic-settings could not decode
        found = _SOURCE_FIELD.search(str(exc))
        name = found.group(1) if found else "?"
        return [f"{ENV_PREFIX}{name.upper()}: could not be read ({exc.__cause__ or exc})"
                if not _SECRET_NAME.search(name) else
                f"{ENV_PREFIX}{name.upper()}: could not be read"]
    lines = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        fields = [str(part) for part in error["loc"] if not isinstance(part, int)]
        if not fields:  # a check of several settings: its message names them
            lines.append(message)
            continue
        name = fields[0]
        lines.append(f"{ENV_PREFIX}{name.upper()}: {message}{_shown(name, error.get('input'))}")
    return lines


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from env/.env."""
    return Settings()
