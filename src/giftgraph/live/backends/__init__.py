"""broadcaster backends that survive their broker: reconnect, resubscribe, report state.

broadcaster 0.3.1's own backends end (or hang) their listener when the connection drops
(encode/broadcaster #144, #66), its redis backend misses the first subscriber's messages
with redis-py >= 8, and its postgres backend breaks on concurrent publishes (#22). These
backends never raise from `next_published`: on a lost connection they reconnect with
backoff, resubscribe every channel, then emit a RECONNECTED marker so subscribers can
catch up from the Event table (nothing committed while the broker was away is lost).

Publishing tells two failures apart. `Refused`: the broker will never take this message (too
large once encoded, not encodable, refused as invalid); retrying cannot help, and the hub sends
an event by reference instead or drops the message. Any other error: the broker is away for
now, and the hub keeps the message (in order) to publish again. `payload_size` is what the
backend sends, in bytes, after its own encoding and escaping: what its limit applies to.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from giftgraph.accel.internals import BroadcastBackend
from giftgraph.live.backends.base import (
    PG_NOTIFY_LIMIT,
    RECONNECTED,
    REDIS_MESSAGE_LIMIT,
    Backoff,
    LocalBackend,
    Refused,
    ResilientBackend,
    utf8,
)
from giftgraph.live.backends.pg_notify import PostgresBackend
from giftgraph.live.backends.redis_pubsub import RedisBackend

__all__ = [
    "PG_NOTIFY_LIMIT",
    "RECONNECTED",
    "REDIS_MESSAGE_LIMIT",
    "Backoff",
    "LocalBackend",
    "PostgresBackend",
    "RedisBackend",
    "Refused",
    "ResilientBackend",
    "make_backend",
    "plain_dsn",
    "utf8",
]


def make_backend(url: str, database_url: str) -> BroadcastBackend:
    """`memory://`, `redis://…`, or `postgres://` (bare: the application database)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return LocalBackend(url)
    if scheme in ("redis", "rediss"):
        return RedisBackend(url)
    if scheme in ("postgres", "postgresql"):
        parts = urlsplit(url)
        target = url if parts.netloc or parts.path.strip("/") else database_url
        return PostgresBackend(plain_dsn(target))
    raise ValueError(f"unsupported broadcast URL scheme: {scheme!r}")


def plain_dsn(url: str) -> str:
    """A libpq/asyncpg DSN for a SQLAlchemy-style URL."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
