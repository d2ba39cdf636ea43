"""Settings from the environment (GIFTGRAPH_*) or a .env file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_JWT_SECRET = "changethis-dev-only-secret-key-0000"  # noqa: S105 - refused in production


class Settings(BaseSettings):
    """Every knob of the service; one instance is passed to create_app()."""

    model_config = SettingsConfigDict(env_prefix="GIFTGRAPH_", env_file=".env", extra="ignore")

    environment: Literal["development", "production", "test"] = "development"
    # None: start the embedded PostgreSQL (pgserver) in data_dir.
    database_url: str | None = None
    data_dir: Path = Path(".giftgraph")
    broadcast_url: str = "memory://"
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    statement_timeout_ms: int = Field(default=10_000, ge=0)
    # A pooled connection idle this long is checked (pinged) before use; 0: before every use.
    db_ping_after_idle_seconds: float = Field(default=1.0, ge=0)

    jwt_secret: str = DEFAULT_JWT_SECRET
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    access_token_ttl_seconds: int = Field(default=15 * 60, ge=5)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    # argon2id cost; the defaults are argon2-cffi's (RFC 9106 low-memory profile).
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)

    cors_origins: list[str] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1

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
    subscriber_queue_size: int = Field(default=1000, ge=1)
    dashboard_interval_ms: int = Field(default=250, ge=0)
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
    rate_limit_storage_url: str = "memory://"
    max_sockets_per_user: int = Field(default=20, ge=1)
    # The admission layer (giftgraph.admission): every bound named there has its setting here.
    signup_ip_rate: str = "10/minute"
    token_ip_rate: str = "60/minute"  # noqa: S105 - a rate, not a secret
    # Pings that re-authenticate a socket (a token check and a database read each), per user.
    socket_reauth_rate: str = "30/minute"
    # New WebSockets per client IP, refused before the handshake: a household behind one
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
    http_header_timeout_seconds: float = Field(default=10, gt=0)
    http_idle_timeout_seconds: float = Field(default=5, gt=0)
    # A request's line and headers as received (uvicorn's httptools protocol has no limit).
    max_header_bytes: int = Field(default=64 * 1024, ge=4096)
    log_json: bool | None = None  # None: JSON in production, console otherwise

    max_page_size: int = 100
    default_page_size: int = 20
    max_body_bytes: int = 1_000_000
    # Read-query results kept per process (JSON bytes), reused while the caller's family is
    # unchanged (see giftgraph.schema.cache); 0 turns the cache off.
    result_cache_bytes: int = Field(default=32 * 2**20, ge=0)
    # Read queries the SQL compiler translates run as one statement that builds the JSON
    # (see giftgraph.schema.compiled); false: every query runs field by field.
    compile_reads: bool = True

    @model_validator(mode="after")
    def _refuse_default_secret_in_production(self) -> Settings:
        if self.environment == "production" and (
            not self.jwt_secret or self.jwt_secret == DEFAULT_JWT_SECRET
        ):
            raise ValueError(
                "GIFTGRAPH_JWT_SECRET must be set to a strong secret in production "
                "(the default development secret is refused)"
            )
        if self.environment == "production" and len(self.jwt_secret) < 32:
            raise ValueError("GIFTGRAPH_JWT_SECRET must be at least 32 characters in production")
        return self

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from env/.env."""
    return Settings()
