"""A per-family cache of read-query results, validated against the family's event log.

Every change to a family's data commits an Event on the family's `family` topic in the
same transaction, and `events.record` holds a per-family lock until COMMIT, so within a
family `seq` order is commit order. The family's newest `family` seq is therefore a
version of everything the family can read: a result stored with the version read before
it was computed is exact for as long as that version is still the newest.

Each request still authenticates (the user lookup) and reads the version (one index-only
lookup) before it may use a stored result. Nothing depends on pub/sub delivery: a change
committed by another instance or process makes the next read a miss just the same.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from graphql import ExecutionResult
from sqlalchemy import ARRAY, bindparam, column, func, select
from sqlalchemy.exc import SQLAlchemyError
from strawberry.extensions import SchemaExtension

from giftgraph.admission.answers import at_least
from giftgraph.auth import CHAIN_REVOKED
from giftgraph.context import CALLER_COLUMNS, Context
from giftgraph.db import models as m
from giftgraph.events import FAMILY_TOPIC
from giftgraph.jsonbytes import kept_json


@dataclass(frozen=True)
class Entry:
    version: int | None
    data: bytes  # the result's `data`, as JSON


# What one entry costs beside its JSON: its key (a tuple of the user's UUID, a date and a
# digest), the Entry and the OrderedDict's node. Counted, so that tiny results cannot make
# the entries many more than the bound meant (`sys.getsizeof` of the parts: ~400 bytes).
ENTRY_OVERHEAD = 512


class ResultStore:
    """Stored results, least recently used evicted first, at most `max_bytes` of JSON and
    of each entry's overhead (`ENTRY_OVERHEAD`)."""

    def __init__(self, max_bytes: int, overhead: int = ENTRY_OVERHEAD) -> None:
        self.max_bytes = max_bytes
        self.overhead = overhead
        self.entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self.size = 0

    def get(self, key: Hashable, version: int | None) -> Any | None:
        """The stored `data` for `key` if it was stored at `version`, else None: its JSON
        as it is (`orjson.Fragment`), which the transports' orjson writes into the response
        without decoding and encoding it again (tens of kilobytes for a nested read)."""
        entry = self.entries.get(key)
        if entry is None or entry.version != version:
            return None
        self.entries.move_to_end(key)
        return orjson.Fragment(entry.data)

    def put(self, key: Hashable, version: int | None, data: Any) -> None:
        most = self.max_bytes // 8  # one huge result would evict everything else
        if at_least(data, most) > most:
            return  # not even written (a 30 MB answer took ~50 ms of the loop to write)
        body = kept_json(data)
        if len(body) > most:
            return
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= len(old.data) + self.overhead
        self.entries[key] = Entry(version, body)
        self.size += len(body) + self.overhead
        while self.size > self.max_bytes:
            _, evicted = self.entries.popitem(last=False)
            self.size -= len(evicted.data) + self.overhead


# Built once: building a statement and its cache key costs more than running this one.
VERSION = select(func.max(m.Event.seq)).where(m.Event.family_id == bindparam("family_id"),
                                              m.Event.topic == FAMILY_TOPIC)
# The caller's row and its family's version in one statement: HTTP authentication reads
# both, so that a cached read costs one round trip to the database, not two. Columns, not
# the entity: the caller is a plain `Caller` (no ORM state, no password hash: only the
# hash's MD5, for the token's stamp, `auth.stamp_matches`). With them, what else may have
# ended the token: its user's `token_epoch` and whether its refresh chain (`:chain_id`,
# NULL for none) has been revoked, a primary-key lookup (`auth.CHAIN_REVOKED`).
USER_AND_VERSION = select(
    *CALLER_COLUMNS,
    func.md5(m.User.password_hash).label("password_digest"),
    m.User.token_epoch,
    CHAIN_REVOKED.label("chain_revoked"),
    select(func.max(m.Event.seq))
    .where(m.Event.family_id == m.User.family_id, m.Event.topic == FAMILY_TOPIC)
    .correlate(m.User).scalar_subquery().label("version"),
).where(m.User.id == bindparam("user_id"))


# USER_AND_VERSION for many callers at once (`CallerReads`): one row per (user, chain) pair
# of the arrays whose user exists, numbered by its place in them (`n`, from 1).
_KEYS = func.unnest(bindparam("user_ids", type_=ARRAY(m.User.id.type)),
                    bindparam("chain_ids", type_=ARRAY(m.RefreshToken.id.type))) \
    .table_valued(column("user_id", m.User.id.type), column("chain_id", m.RefreshToken.id.type),
                  with_ordinality="n").render_derived(name="k")
USERS_AND_VERSIONS = select(
    _KEYS.c.n,
    *CALLER_COLUMNS,
    func.md5(m.User.password_hash).label("password_digest"),
    m.User.token_epoch,
    select(m.RefreshToken.revoked_at.is_not(None)).where(m.RefreshToken.id == _KEYS.c.chain_id)
    .scalar_subquery().label("chain_revoked"),
    select(func.max(m.Event.seq))
    .where(m.Event.family_id == m.User.family_id, m.Event.topic == FAMILY_TOPIC)
    .correlate(m.User).scalar_subquery().label("version"),
).select_from(_KEYS.join(m.User, m.User.id == _KEYS.c.user_id))


async def family_version(ctx: Context) -> int | None:
    """The seq of the family's newest change (None before any): an index-only lookup, or
    none when authentication read it at the start of this operation (`USER_AND_VERSION`:
    still before anything executes, as a stored result's version must be)."""
    known = ctx.operation.family_version
    if known is not None:
        return known[0]
    version: int | None = await ctx.db.scalar(VERSION,
                                              {"family_id": ctx.family_id})
    return version


class ResultCache(SchemaExtension):
    """Answers a repeated query from `store` while the caller's family is unchanged.

    Runs after the extensions that may refuse an operation (limits, rate limits), so a
    stored result never skips a check. Only error-free query results are stored, keyed by
    the caller (results may depend on who asks), the document, operation name, variables
    and today's date (the dashboard's "upcoming" is relative to it).
    """

    def __init__(self, store: ResultStore) -> None:
        super().__init__()
        self.store = store

    async def on_execute(self) -> AsyncIterator[None]:
        ec = self.execution_context
        ctx: Context = ec.context
        key = None
        if ec.result is None and ec.operation_type.value == "query" and ctx.user is not None \
                and not ec.pre_execution_errors:
            key = _key(ctx.user.id, ec.query, ec.operation_name, ec.variables)
        if key is None:
            yield
            return
        try:
            version = await family_version(ctx)
        except (SQLAlchemyError, OSError):
            # The database is failing: execute uncached, on a fresh session, so that the
            # fields report it as they would without the cache (retryable errors).
            await ctx.db.close()
            yield
            return
        data = self.store.get(key, version)
        if data is not None:
            ec.result = ExecutionResult(data=data)
        if ctx.metrics is not None:
            ctx.metrics.result_cache.labels("miss" if data is None else "hit").inc()
        yield
        if data is None:
            self._keep(key, version, ec.result)

    def _keep(self, key: Hashable, version: int | None, result: Any) -> None:
        if isinstance(result, ExecutionResult) and not result.errors and result.data is not None:
            self.store.put(key, version, result.data)


def _key(user_id: uuid.UUID, query: str | None, operation_name: str | None,
         variables: dict[str, Any] | None) -> Hashable | None:
    """The entry's key: the document, operation name and variables by their digest, not
    their text (up to a request body each; the store counts only the results' bytes and a
    fixed overhead per entry)."""
    try:
        canonical = orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON (never over HTTP or sockets): simply not cached
        return None
    digest = hashlib.blake2b(canonical, digest_size=32)
    for part in (query, operation_name):
        text = (part or "").encode("utf-8", "surrogatepass")
        digest.update(len(text).to_bytes(8, "big"))  # length-prefixed: no ambiguity
        digest.update(text)
    return (user_id, datetime.now(UTC).date(), query is None, operation_name is None,
            digest.digest())
