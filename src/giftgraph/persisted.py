"""Persisted documents: automatic persisted queries (APQ) and trusted documents.

A request may name its document by its SHA-256 instead of sending it:

- **APQ** (Apollo's protocol): `extensions.persistedQuery = {version: 1, sha256Hash}`. An
  unknown hash without a query is `PERSISTED_QUERY_NOT_FOUND` (message
  `PersistedQueryNotFound`); the client then sends the query with the hash, the hash is
  checked, and once the document has been parsed and validated it is stored: in
  PostgreSQL (`persisted_documents`, shared by every instance) behind a per-process LRU.
  A registration is its caller's: found by hash only by callers of the family that
  registered it (an anonymous caller's, by anonymous callers of its IP). Stored under
  `scoped(scope, hash)`, the SHA-256 of both, so the table and its bounds are unchanged
  and a lookup is still one key; found across families, a hash confirmed a guess of the
  literals another family had typed (a name, a search term): it ran, or was refused
  UNAUTHENTICATED, where an unknown hash is PERSISTED_QUERY_NOT_FOUND.
- **Trusted documents**: `GIFTGRAPH_TRUSTED_DOCUMENTS` names a JSON manifest
  `{hash: document}` (graphql-codegen's persisted-documents format); a request sends
  `documentId: "sha256:<hex>"` (or the APQ extension with a manifest hash). With
  `GIFTGRAPH_TRUSTED_DOCUMENTS_ONLY=true` only the manifest's documents run: any other is
  `PERSISTED_QUERY_NOT_ALLOWED`, and nothing is stored.

`Documents.resolve` turns what a request (HTTP body, GET parameters or a socket's
`subscribe` payload) says into the document to run, for its caller's scope (`scope_of`);
`Documents.remember` stores an APQ registration after the document was found valid.
The manifest's documents are everyone's.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from graphql.language import BREAK, Visitor, visit
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from strawberry.extensions import SchemaExtension

from giftgraph.errors import AppError

log = logging.getLogger("giftgraph.persisted")

NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
NOT_ALLOWED = "PERSISTED_QUERY_NOT_ALLOWED"
_HEX = re.compile(r"[0-9a-f]{64}")


class PersistedQueryNotFound(AppError):
    """The hash names no document this server knows: send the query with it."""

    code = NOT_FOUND

    def __init__(self) -> None:
        super().__init__("PersistedQueryNotFound")


class PersistedQueryNotAllowed(AppError):
    """Only trusted documents run on this server."""

    code = NOT_ALLOWED

    def __init__(self) -> None:
        super().__init__("Only trusted documents are allowed on this server")


class BadPersistedQuery(AppError):
    """A malformed persisted-query request."""

    code = "BAD_USER_INPUT"


class ManifestError(ValueError):
    """A trusted-documents manifest that cannot be used."""


def digest(document: str) -> str:
    """The SHA-256 of a document, lower-case hex, as APQ and graphql-codegen compute it."""
    return hashlib.sha256(document.encode()).hexdigest()


def scope_of(caller: str | None) -> str:
    """Whose APQ registrations a caller sees: `caller` as `admission.checks.caller_key`
    names it (`family:<id>` for an authenticated caller, else `ip:<address>`)."""
    return caller or "ip:unknown"


def scoped(scope: str, key: str) -> str:
    """The stored key of `key` registered in `scope`: 64 hex digits, as a hash is."""
    return digest(f"{scope}\n{key}")


def _hash_of(value: object, what: str) -> str:
    """A 64-digit lower-case hex hash, with or without the `sha256:` prefix."""
    if not isinstance(value, str):
        raise BadPersistedQuery(f"{what} must be a string")
    bare = value.removeprefix("sha256:")
    if not _HEX.fullmatch(bare):
        raise BadPersistedQuery(f"{what} must be a SHA-256 in lower-case hex")
    return bare


def load_manifest(path: Path) -> dict[str, str]:
    """A manifest `{hash: document}`, each hash checked against its document."""
    try:
        raw = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a JSON object {{hash: document}}")
    manifest: dict[str, str] = {}
    for key, document in raw.items():
        bare = key.removeprefix("sha256:")
        if not isinstance(document, str) or not _HEX.fullmatch(bare):
            raise ManifestError(f"{path}: entry {key!r} is not a sha256 hash and a document")
        if digest(document) != bare:
            raise ManifestError(f"{path}: entry {key!r} does not match its document's hash")
        manifest[bare] = document
    return manifest


@dataclass(frozen=True, slots=True)
class Resolved:
    """The document to run, and the hash to store it under once it proves valid."""

    query: str | None
    register: str | None = None


class Recent:
    """A small LRU of documents by hash, bounded in entries and characters."""

    def __init__(self, entries: int, chars: int) -> None:
        self.entries, self.chars = entries, chars
        self.held: OrderedDict[str, str] = OrderedDict()
        self.size = 0

    def get(self, key: str) -> str | None:
        document = self.held.get(key)
        if document is not None:
            self.held.move_to_end(key)
        return document

    def put(self, key: str, document: str) -> None:
        if key in self.held or len(document) > self.chars:
            return
        self.held[key] = document
        self.size += len(document)
        while len(self.held) > self.entries or self.size > self.chars:
            _, dropped = self.held.popitem(last=False)
            self.size -= len(dropped)


class Documents:
    """Where documents named by hash come from: the manifest, this process, PostgreSQL."""

    def __init__(self, manifest: dict[str, str] | None = None, *, only_trusted: bool = False,
                 sessions: async_sessionmaker[AsyncSession] | None = None,
                 recent: Recent | None = None, most: int = 10_000) -> None:
        self.manifest = manifest or {}
        self.most = most  # documents kept in the table at most
        self.only_trusted = only_trusted
        self.sessions = sessions
        self.recent = recent or Recent(entries=2048, chars=8 * 2**20)

    async def resolve(self, query: object, extensions: object, document_id: object,
                      scope: str) -> Resolved:
        """The document a request of `scope` (`scope_of`) asks to run (its `query`,
        `extensions` and `documentId`)."""
        if document_id is not None:
            if query is not None:
                raise BadPersistedQuery("send either documentId or query, not both")
            return Resolved(await self._known(_hash_of(document_id, "documentId"), scope))
        persisted = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
        if persisted is None:
            if self.only_trusted and (not isinstance(query, str)
                                      or digest(query) not in self.manifest):
                raise PersistedQueryNotAllowed
            return Resolved(query if isinstance(query, str) else None)
        if not isinstance(persisted, dict) or persisted.get("version") != 1:
            raise BadPersistedQuery("persistedQuery must be {version: 1, sha256Hash}")
        key = _hash_of(persisted.get("sha256Hash"), "persistedQuery.sha256Hash")
        if query is None:
            return Resolved(await self._known(key, scope))
        if not isinstance(query, str):
            raise BadPersistedQuery("query must be a string")
        if digest(query) != key:
            raise BadPersistedQuery("provided sha does not match query")
        if key in self.manifest:
            return Resolved(query)
        if self.only_trusted:
            raise PersistedQueryNotAllowed
        stored = scoped(scope, key) in self.recent.held
        return Resolved(query, register=None if stored else key)

    async def _known(self, key: str, scope: str) -> str:
        document = self.manifest.get(key)
        if document is None and not self.only_trusted:
            stored = scoped(scope, key)
            document = self.recent.get(stored) or await self._load(stored)
        if document is None:
            raise PersistedQueryNotFound
        return document

    async def _load(self, key: str) -> str | None:
        if self.sessions is None:
            return None
        async with self.sessions() as session:
            document: str | None = await session.scalar(
                text("SELECT document FROM persisted_documents WHERE hash = :h"), {"h": key})
        if document is not None:
            self.recent.put(key, document)
        return document

    async def remember(self, key: str, document: str, scope: str) -> None:
        """Store an APQ registration of `scope` (the document was parsed and validated),
        under `scoped(scope, key)`. The table is
        a cache, as APQ means it: past `most` documents the oldest registrations give way
        (a client whose hash is gone sends its document again and registers it anew). A
        table that refused new documents once full let whoever filled it stop every other
        client's registrations, for good."""
        if digest(document) != key or self.only_trusted:
            return
        key = scoped(scope, key)
        if self.sessions is None or self.most == 0:
            self.recent.put(key, document)
            return
        async with self.sessions() as session, session.begin():
            stored = await session.scalar(
                text("INSERT INTO persisted_documents (hash, document) "
                     "VALUES (CAST(:h AS varchar), CAST(:d AS text)) "
                     "ON CONFLICT (hash) DO NOTHING RETURNING true"),
                {"h": key, "d": document})
            if stored:
                await session.execute(
                    text("DELETE FROM persisted_documents WHERE hash IN ("
                         "SELECT hash FROM persisted_documents "
                         "ORDER BY created_at DESC, hash DESC OFFSET :most)"),
                    {"most": self.most})
        self.recent.put(key, document)


def request_parts(data: dict[str, Any]) -> tuple[object, object, object]:
    """(query, extensions, documentId) of a parsed request body or socket payload."""
    return data.get("query"), data.get("extensions"), data.get("documentId")


# What `Documents.resolve` refuses a request with (before anything is parsed).
REFUSED = (PersistedQueryNotFound, PersistedQueryNotAllowed, BadPersistedQuery)


@dataclass(slots=True)
class Registration:
    """An APQ registration waiting for its document to be found valid: `store` is given
    the operation's context (whose caller the registration budget charges)."""

    key: str
    document: str
    store: Callable[[str, str, Any], Awaitable[None]]
    done: bool = False
    runs: str | None = None  # the text that runs, when not `document` (a `query @live`)


# The request's (or the socket operation's task's) registration, set where the request
# was resolved; read by `RegisterPersisted` in the same task.
REGISTERING: ContextVar[Registration | None] = ContextVar("giftgraph_registering",
                                                          default=None)


class RegisterPersisted(SchemaExtension):
    """Stores the pending APQ registration once its operation reaches execution: its
    document parsed, passed validation and every bound measured before execution. A
    document that fails any of them is never stored."""

    async def on_execute(self) -> AsyncIterator[None]:
        pending = REGISTERING.get()
        ec = self.execution_context
        if pending is not None and not pending.done \
                and ec.query == (pending.runs or pending.document):
            pending.done = True
            if _carries_literal_strings(ec):
                yield  # run, never stored: its hash would replay it (a login's password)
                return
            try:
                await pending.store(pending.key, pending.document, ec.context)
            except Exception:  # the answer does not depend on it: the client sends it again
                log.warning("persisted document %s not stored", pending.key, exc_info=True)
        yield


class _Strings(Visitor):
    found = False

    def enter_string_value(self, *_: object) -> object:
        self.found = True
        return BREAK


def _carries_literal_strings(ec: Any) -> bool:
    """A mutation whose document writes a string itself (not through a variable): such a
    document may hold a secret (`login(email: "...", password: "...")`), and once stored
    its hash alone, sent from anywhere, would run it again. Not stored; the client sends it
    whole each time (Apollo's link does so after PERSISTED_QUERY_NOT_FOUND)."""
    document = getattr(ec, "graphql_document", None)
    try:
        mutation = ec.operation_type.value == "mutation"
    except Exception:  # no operation to tell: store nothing
        return True
    if not mutation:
        return False
    if document is None:
        return True
    visitor = _Strings()
    visit(document, visitor)
    return visitor.found
