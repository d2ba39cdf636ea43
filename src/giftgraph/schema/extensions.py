"""Schema extensions: the per-operation scope (db, loaders, auth) and error formatting."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from graphql import (
    BREAK,
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    StringValueNode,
    Visitor,
    validate,
    visit,
)
from graphql.validation import ASTValidationRule
from sqlalchemy.exc import SQLAlchemyError
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from giftgraph import auth
from giftgraph.accel import internals
from giftgraph.admission import courtesy
from giftgraph.admission.sockets import owed_by
from giftgraph.context import (
    CALLER_COLUMNS,
    Caller,
    Context,
    operation_scope,
)
from giftgraph.db.engine import Database
from giftgraph.db.session import Prepared, log_outage, timed_out, unavailable
from giftgraph.db.session import fetch as session_fetch
from giftgraph.errors import AppError, BadInput, ServiceUnavailable, Unauthenticated
from giftgraph.schema.cache import USER_AND_VERSION, USERS_AND_VERSIONS
from giftgraph.schema.retry import transient
from giftgraph.tracing import current_trace_id

log = logging.getLogger("giftgraph.errors")
# Every authenticated request runs it: on asyncpg directly (`Prepared`).
CALLER_AND_VERSION = Prepared(USER_AND_VERSION)
USERS_AND_VERSIONS_PREPARED = Prepared(USERS_AND_VERSIONS)
# What Strawberry's own validation adds to the rules (strawberry.schema.schema
# .validate_document), which `ValidationCache` replaces.
STRAWBERRY_RULES = (MaybeNullValidationRule, OneOfInputValidationRule)


class CallerReads:
    """The callers that sockets authenticate (connection_init) in the same turn of the
    event loop, read in one statement (`USERS_AND_VERSIONS`): after a restart every socket
    comes back at once, and a statement's round trip costs far more of the server's CPU
    than its rows. Read on the database's authentication lane (`Database.lane_engine`):
    not behind the operations that hold the main pool, the subscription starts of the
    sockets already in among them. A failed read fails each of them, as their own reads
    would have."""

    MAX = 256  # callers a statement reads at most

    def __init__(self, database: Database) -> None:
        self.database = database
        self.pending: list[tuple[uuid.UUID, uuid.UUID | None, asyncio.Future[Any]]] = []

    async def read(self, user_id: uuid.UUID, chain_id: uuid.UUID | None) -> Any:
        """The caller's row (CALLER_AND_VERSION's columns), None when there is no such user."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self.pending:  # the turn's first: read once the others of this turn are in
            # in a context of its own: not this socket's (kept by what the read opens)
            loop.call_soon(self._flush, context=contextvars.Context())
        self.pending.append((user_id, chain_id, future))
        return await future

    def _flush(self) -> None:
        pending, self.pending = self.pending, []
        for start in range(0, len(pending), self.MAX):
            task = asyncio.ensure_future(self._read(pending[start:start + self.MAX]))
            _reads.add(task)
            task.add_done_callback(_reads.discard)

    async def _read(self, batch: list[tuple[uuid.UUID, uuid.UUID | None,
                                            asyncio.Future[Any]]]) -> None:
        try:
            rows = await session_fetch(self.database, USERS_AND_VERSIONS_PREPARED, {
                "user_ids": [user for user, _, _ in batch],
                "chain_ids": [chain for _, chain, _ in batch]}, lane=True)
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (the app stops): so are its callers' reads
            for _, _, future in batch:
                future.cancel()
            raise
        shaped = CALLER_AND_VERSION.row._make  # as one caller's read gives it
        found = {row.n: shaped(row[1:]) for row in rows}
        for n, (_, _, future) in enumerate(batch, start=1):
            if not future.done():
                future.set_result(found.get(n))


_reads: set[asyncio.Future[None]] = set()  # batches being read (held until done)


async def authenticate(ctx: Context, reads: CallerReads | None = None) -> auth.AccessClaims | None:
    """Resolve the caller from its bearer token; failures are kept for resolvers to raise.
    The token's claims when it is accepted. With `reads`, the caller is read with the
    others of this turn (sockets); without, on the operation's connection."""
    try:
        token = auth.bearer_token(ctx.authorization)
        if token is None:
            return None
        claims = auth.decode_access_token(ctx.settings, token)
        user, version = await caller_of(ctx, claims, reads)
        ctx.user = user
        owed_by(ctx.request.scope, user.family_id)  # what it owes is its family's
        ctx.operation.family_version = (version,)
        return claims
    except AppError as exc:
        ctx.auth_error = exc
    except (SQLAlchemyError, OSError) as exc:
        # The database is unreachable: resolvers that need the caller fail with a code.
        # One line for a database that is down or silent (each request of an outage logged
        # its traceback: 39 MB in a 40 s freeze); the whole of anything else.
        if unavailable(exc):
            log_outage(log, "authentication", exc, ctx.trace_id)
        else:
            log.warning("authentication failed (traceId=%s)", ctx.trace_id, exc_info=exc)
        ctx.auth_error = ServiceUnavailable()
        ctx.auth_error.__cause__ = exc
    return None


async def caller_of(ctx: Context, claims: auth.AccessClaims,
                    reads: CallerReads | None = None) -> tuple[Caller, int | None]:
    """The user of a verified token and its family's version, in one statement; Invalid
    token when the token has ended: its user deleted, deactivated, moved to another family,
    its password changed, its `token_epoch` moved on, or its refresh chain revoked."""
    if reads is not None:
        row = await reads.read(claims.user_id, claims.chain)
    else:
        rows = await ctx.db.fetch(CALLER_AND_VERSION, {"user_id": claims.user_id,
                                                       "chain_id": claims.chain})
        row = rows[0] if rows else None
    if row is None:
        raise Unauthenticated("Invalid token")
    user = Caller(*row[:len(CALLER_COLUMNS)])
    if not user.is_active or user.family_id != claims.family_id \
            or row.token_epoch != claims.epoch or row.chain_revoked \
            or not auth.stamp_matches(ctx.settings, claims, row.password_digest):
        raise Unauthenticated("Invalid token")
    return user, row.version


class RequestScope(SchemaExtension):
    """Gives each operation its own session, loaders and authenticated user."""

    async def on_operation(self) -> AsyncIterator[None]:
        ctx: Context = self.execution_context.context
        async with operation_scope(ctx.database, ctx.publish):
            if ctx.connection_params is None:  # HTTP; sockets authenticate in connection_init
                await authenticate(ctx)
            yield

    async def on_execute(self) -> AsyncIterator[None]:
        yield
        ctx: Context = self.execution_context.context
        if ctx.connection_params is not None:
            # A socket's or stream's operation is answered while its operation stage
            # stays open (Strawberry streams every operation there): its reads'
            # connection goes back now, not once a client that does not read has taken
            # the answer. Held, 8 unread sockets' 40 queries took the whole pool and
            # every other family's requests failed after 30 s (without the fast paths;
            # adversary, 2026-11-29). A later read opens another.
            await ctx.db.close()


def _code(error: GraphQLError) -> str | None:
    original = error.original_error
    if isinstance(original, AppError):
        return original.code
    if original is None or (not error.path and isinstance(original, GraphQLError)):
        # Parse, validation and variable-coercion errors (graphql-core keeps the scalar's
        # own GraphQLError as the cause of the latter): the client's input is at fault.
        return "BAD_USER_INPUT"
    return None


class FormatErrors(SchemaExtension):
    """Adds `code` and `traceId` to every error; masks unexpected ones (logged in full).

    Errors are formatted in place: Strawberry builds some results (parse errors) from
    the same error objects outside this hook's view, so mutating them reaches those too.
    """

    def on_operation(self) -> Iterator[None]:
        self._streamed = False
        try:
            yield
        except GraphQLError as error:
            # ParserCache parses inside its hook, so a syntax error escapes the operation
            # (Strawberry turns it into the result afterwards): format it on its way out.
            self.format(error)
            raise
        ec = self.execution_context
        for refused in ec.pre_execution_errors or []:
            self.format(refused)
        if not self._streamed:  # subscription results were formatted one by one
            self._format_result(ec.result)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        """Each subscription result (and its errors) on its way to the client; once it is
        sent, the errors' tracebacks go (`forget_traceback`), as an HTTP answer's do."""
        self._streamed = True
        self._format_result(result)
        yield None
        for error in getattr(result, "errors", None) or []:
            forget_traceback(error)

    def _format_result(self, result: Any) -> None:
        for error in getattr(result, "errors", None) or []:
            self.format(error)

    def format(self, error: GraphQLError) -> GraphQLError:
        # The trace's id while tracing is on (the socket's context is the connection's).
        return format_error(error, current_trace_id()
                            or getattr(self.execution_context.context, "trace_id", None))


def forget_traceback(error: BaseException) -> None:
    """Drop the tracebacks of an error whose result is done (formatted and logged), of its
    original error and of the exceptions chained to them. A parse error (or a refusal in
    `on_parse`) escapes Strawberry's parsing hook to `Schema.execute`, whose frame, in the
    error's traceback, holds the execution context that holds the error: a cycle keeping
    the request (its body, its document's text) until the interpreter's rare full
    collection. Measured: +0.9 MB of RSS per request with a 900 KB body, for hundreds."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        exc = todo.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        exc.__traceback__ = None
        original = getattr(exc, "original_error", None)
        todo += [exc.__cause__, exc.__context__,
                 original if isinstance(original, BaseException) else None]


def format_error(error: GraphQLError, trace_id: str | None) -> GraphQLError:
    """Adds `code` and `traceId` to an error, in place; masks (and logs) unexpected ones."""
    if (error.extensions or {}).get("traceId"):
        return error  # already done
    code = _code(error)
    if code is None and unavailable(error.original_error):
        log_outage(log, "an operation", error.original_error, trace_id)
        return _retryable(error, ServiceUnavailable().message, trace_id)
    if code is None and timed_out(error.original_error):
        # PostgreSQL's statement_timeout (the watchdog's is `unavailable`, above): the
        # statement was cancelled and its transaction rolled back, as PostgreSQL said;
        # after a change of the operation committed, OperationDb answers
        # `AppliedThenFailed` instead.
        log.warning("%s: a statement ran out of time, nothing of it applied (traceId=%s)",
                    ".".join(map(str, error.path or [])), trace_id)
        return _retryable(error, TIMED_OUT, trace_id)
    if code is None and (reason := transient(error.original_error)) is not None:
        log.warning("%s: aborted for a concurrent transaction (%s), not retried further "
                    "(traceId=%s)", ".".join(map(str, error.path or [])), reason, trace_id)
        return _retryable(error, COLLIDED, trace_id)
    if code is None:
        log.error(
            "unexpected error in %s (traceId=%s)", ".".join(map(str, error.path or [])),
            trace_id, exc_info=error.original_error,
        )
        error.message = "Internal server error"
        error.args = (error.message,)
        error.locations = error.locations if error.path else None
        error.original_error = None
        error.extensions = {"code": "INTERNAL_SERVER_ERROR", "traceId": trace_id}
        return error
    original = error.original_error
    extra = original.extensions if isinstance(original, AppError) else {}
    error.extensions = {**(error.extensions or {}), **extra, "code": code, "traceId": trace_id}
    return error


TIMED_OUT = "The operation took too long and was cancelled, nothing of it applied; please retry"
COLLIDED = "The operation collided with concurrent changes and was not applied, please retry"


def _retryable(error: GraphQLError, message: str, trace_id: str | None) -> GraphQLError:
    """A failure that is nobody's fault and may pass (the database down, transactions
    colliding): said so, `retryable`, with nothing of the cause."""
    error.message = message
    error.args = (message,)
    error.original_error = None
    error.extensions = {"code": "INTERNAL_SERVER_ERROR", "retryable": True, "traceId": trace_id}
    return error


def _clone(error: GraphQLError) -> GraphQLError:
    """A copy of a cached error for one request (its extensions its own), its locations
    copied, not found again in the source (that scanned the document's lines for each
    error: see `admission.checks.IndexedSource`)."""
    clone = GraphQLError(error.message, original_error=error.original_error,
                         extensions=dict(error.extensions or {}))
    clone.nodes, clone.source, clone.positions = error.nodes, error.source, error.positions
    clone.path = list(error.path) if error.path else None
    clone.locations = list(error.locations) if error.locations else None
    return clone


# `admission.checks.analysed`: work on a document, and the seconds it took.
Analyse = Callable[..., Awaitable[tuple[Any, float]]]


class ValidationCache:
    """graphql-core's validation, with the rules Strawberry adds to every validation, its
    results kept as long as their document is (one cache per schema): the parsed
    documents' cache (`admission.checks.PARSED`) bounds both. Keyed by the document
    object, an lru_cache of its own kept 512 documents alive whatever their size. Without
    `suggest` no error suggests a name (graphql-core's `hide_suggestions`: field,
    argument, type, enum value and input field names alike). `known` and `remember` are
    for the event loop's thread; `compute` may run in another."""

    def __init__(self, *, suggest: bool) -> None:
        self.suggest = suggest
        # By the document object's id, forgotten with it: graphql-core's nodes hash and
        # compare by their whole tree (a WeakKeyDictionary hashed a 600-field document,
        # 1.7 ms, at every lookup, and gave a document the errors of an equal one parsed
        # from another text: another caller's places).
        self.results: dict[int, dict[Any, list[GraphQLError]]] = {}

    def known(self, schema: GraphQLSchema, document: DocumentNode,
              rules: tuple[type[ASTValidationRule], ...]) -> list[GraphQLError] | None:
        found = self.results.get(id(document))
        return None if found is None else found.get((schema, rules))

    def compute(self, schema: GraphQLSchema, document: DocumentNode,
                rules: tuple[type[ASTValidationRule], ...]) -> list[GraphQLError]:
        return validate(schema, document, (*rules, *STRAWBERRY_RULES, *courtesy.rules()),
                        hide_suggestions=not self.suggest)

    def remember(self, schema: GraphQLSchema, document: DocumentNode,
                 rules: tuple[type[ASTValidationRule], ...],
                 errors: list[GraphQLError]) -> None:
        key = id(document)
        found = self.results.get(key)
        if found is None:
            found = self.results[key] = {}
            weakref.finalize(document, self.results.pop, key, None)
        found[schema, rules] = errors

    def __call__(self, schema: GraphQLSchema, document: DocumentNode,
                 rules: tuple[type[ASTValidationRule], ...]) -> list[GraphQLError]:
        errors = self.known(schema, document, rules)
        if errors is None:
            errors = self.compute(schema, document, rules)
            self.remember(schema, document, rules, errors)
        return errors


class FreshValidationCache(SchemaExtension):
    """Validation through `validate` (a `ValidationCache`), but each operation gets its
    own copies of the cached errors: they are formatted in place with that operation's
    traceId, never another request's. A document already refused (`DocumentBounds`) is
    not validated."""

    def __init__(self, validate: ValidationCache,
                 charge: Callable[[Any, float, int], None] | None = None,
                 analysed: Analyse | None = None) -> None:
        super().__init__()
        self.validate = validate
        self.charge = charge  # the seconds a validation took, to its caller's allowance
        self.analysed = analysed  # runs it (in a worker thread when the document is large)

    async def on_validate(self) -> AsyncIterator[None]:
        ec = self.execution_context
        document = ec.graphql_document
        if ec.pre_execution_errors is None and document is not None:
            schema, rules = internals.graphql_schema(ec.schema), ec.validation_rules
            errors = self.validate.known(schema, document, rules)
            if errors is None:
                size = document.loc.end if document.loc is not None else 0
                if self.analysed is not None:
                    errors, seconds = await self.analysed(self.validate.compute, size,
                                                          schema, document, rules)
                else:
                    started = time.perf_counter()
                    errors = self.validate.compute(schema, document, rules)
                    seconds = time.perf_counter() - started
                self.validate.remember(schema, document, rules, errors)
                if self.charge is not None:
                    self.charge(ec.context, seconds, size)
            ec.pre_execution_errors = [_clone(e) for e in errors] if errors else errors
        yield


def operation_of(document: DocumentNode,
                 operation_name: str | None) -> OperationDefinitionNode | None:
    """The operation a request runs, as the GraphQL spec's GetOperation chooses it: the
    named one, or the only one; None when there is none to choose (several and no name)."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == operation_name), None)


def requested_operation(ec: Any) -> str | None:
    """The operation name the client sent (see `accel.internals.provided_operation_name`)."""
    return internals.provided_operation_name(ec)


MANY_OPERATIONS = "Must provide operation name if query contains multiple operations."
SUBSCRIPTIONS_OVER_HTTP = ("Subscriptions are served over WebSocket (graphql-transport-ws)"
                           " at /graphql, as multipart HTTP there (Accept: multipart/mixed;"
                           "subscriptionSpec=\"1.0\") and as graphql-sse at /graphql/stream")


class ChooseOperation(SchemaExtension):
    """Refuses, as a request error (BAD_USER_INPUT, nothing run), a document of several
    operations without `operationName` (Strawberry would run the first) and a subscription
    over HTTP (it can only be served over a socket).

    From `on_validate`, after the validation cache (it would overwrite the errors set here):
    the errors then go out as any validation error does, over HTTP and over a socket.
    """

    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        document = ec.graphql_document
        if document is not None and not ec.pre_execution_errors:
            requested = requested_operation(ec)
            operation = operation_of(document, requested)
            message = None
            if operation is None and requested is None:
                message = MANY_OPERATIONS
            elif operation is not None and operation.operation.value == "subscription" \
                    and getattr(ec.context, "connection_params", None) is None:
                message = SUBSCRIPTIONS_OVER_HTTP
            if message is not None:
                ec.pre_execution_errors = [GraphQLError(message)]
        yield


def _nul_path(value: Any, path: str) -> str | None:
    """Where in a variable value a string holds U+0000, if anywhere."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _nul_path(item, f"{path}.{key}")
        if found:
            return found
    return None


class _FindNul(Visitor):
    """Stops at the first string literal holding U+0000 (written as a \\u escape)."""

    found = False

    def enter_string_value(self, node: StringValueNode, *_: Any) -> Any:
        if "\x00" in node.value:
            self.found = True
            return BREAK
        return None


def _nul_literal(document: DocumentNode | None) -> bool:
    finder = _FindNul()
    if document is not None:
        visit(document, finder)
    return finder.found


class RefuseNul(SchemaExtension):
    """PostgreSQL text can't hold U+0000: a string input with it is the client's error
    (BAD_USER_INPUT), not a failed statement."""

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        where = None
        for name, value in (ec.variables or {}).items():
            where = where or _nul_path(value, name)
        if where is None and "\\u" in (ec.query or "") and _nul_literal(ec.graphql_document):
            where = "query"
        if where is not None:
            refuse(self, BadInput({where: "must not contain the NUL character (U+0000)"}))
        yield


def refuse(extension: SchemaExtension, error: AppError) -> None:
    """Answer an operation with `error` instead of executing it (from `on_execute`).

    Raising there would skip the error formatting of every extension; a query or mutation
    gets a ready result instead, a subscription (whose runner formats it) gets the raise.
    """
    ec = extension.execution_context
    if ec.operation_type.value == "subscription":
        raise error
    ec.result = ExecutionResult(data=None, errors=[GraphQLError(error.message,
                                                                original_error=error)])
