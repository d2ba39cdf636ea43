"""The typed GraphQL context: who is asking, and the operation's database access."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.types import Info as StrawberryInfo

from giftgraph.admission.clients import client_network
from giftgraph.config import Settings
from giftgraph.db.engine import Database
from giftgraph.db.models import Role, User
from giftgraph.db.session import OperationDb, Publisher
from giftgraph.errors import AppError, Forbidden, Unauthenticated
from giftgraph.tracing import current_trace_id

if TYPE_CHECKING:
    from giftgraph.admission.throttle import Throttle
    from giftgraph.observability import Metrics
    from giftgraph.ratelimit import RateLimits
    from giftgraph.schema.loaders import Loaders


@dataclass
class OperationState:
    """What one GraphQL operation (or one subscription event) resolves with."""

    db: OperationDb
    loaders: Loaders | None = None
    # The caller's family's version (schema/cache.py), when authentication read it with
    # the caller's row: (version,), version None before the family's first change.
    family_version: tuple[int | None] | None = None
    # Admission bounds that refused this operation, counted once: a query's resolver that
    # refuses runs again when graphql-core reruns the query after the lean executor.
    refused: set[str] | None = None

    def release(self) -> None:
        """At the operation's end: free what the loaders hold now (see `Loaders.close`)."""
        loaders, self.loaders = self.loaders, None
        if loaders is not None:
            loaders.close()


# Strawberry shares one Context per WebSocket across concurrent operations, each run in
# its own task; a ContextVar keeps every operation's session and loaders apart.
_OPERATION: ContextVar[OperationState | None] = ContextVar("giftgraph_operation", default=None)


def begin_operation(state: OperationState) -> object:
    return _OPERATION.set(state)


def end_operation(token: object) -> None:
    """The operation before `begin_operation`'s current again; nothing to restore when the
    block ends in another context than it began in (an async generator left unfinished,
    closed by the event loop's finalizer in a task of its own once its socket was cut):
    the reset raised there, and what followed it in a `finally` (a shared scope's count of
    its users, so that it was never let go) did not run."""
    with contextlib.suppress(ValueError):  # "created in a different Context": it is gone
        _OPERATION.reset(token)  # type: ignore[arg-type]


@asynccontextmanager
async def operation_scope(database: Database,
                          publish: Publisher | None = None) -> AsyncIterator[OperationState]:
    """One operation's scope, current for the block: its own session (opened when first
    used), DataLoaders and refusals; the session closed and the loaders let go when the
    block ends, however it ends. Every operation's scope is made here: an HTTP or socket
    operation's (`RequestScope`), a socket's `connection_init` and re-authentication
    (web/view.py, web/reauth.py); the shared scope of an event's subscribers
    (live/streams.py `SharedScopes`) is one held open across its subscribers' turns."""
    state = OperationState(OperationDb(database, publish=publish))
    token = begin_operation(state)
    try:
        yield state
    finally:
        try:
            await state.db.end()
        finally:  # even when the close is cancelled
            state.release()
            end_operation(token)


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller (of a request, or of a socket at connect): the user row's
    values, read as plain columns, not an ORM instance (whose SQLAlchemy state, ~1 KB, and
    password hash would otherwise live as long as a socket, and whose loading costs more).
    Read like the row: `id`, `family_id`, `role`, …"""

    id: uuid.UUID
    family_id: uuid.UUID
    email: str
    display_name: str
    role: Role
    is_active: bool
    created_at: datetime
    updated_at: datetime


# The users columns a `Caller` is made of, in its fields' order: `Caller(*row)`.
CALLER_COLUMNS = tuple(getattr(User, f.name) for f in fields(Caller))


@dataclass
class Context:
    settings: Settings
    database: Database
    # A WebSocket's headers are let go once it is authenticated (accel/wire.py,
    # release_handshake): read them in get_context or on_ws_connect.
    request: Request | WebSocket
    response: Any = None
    authorization: str | None = None
    connection_params: dict[str, Any] | None = None
    # The trace's id while tracing is on (giftgraph.tracing), else a fresh one.
    trace_id: str = field(default_factory=lambda: current_trace_id() or uuid.uuid4().hex)
    # Per request (HTTP) or per connection (WebSocket, from connection_init).
    user: Caller | None = None
    auth_error: AppError | None = None
    # Called with the events of each committed mutation (the live layer publishes them).
    publish: Publisher | None = None
    # The live layer (`giftgraph.live.layer.Live`; typed: `Live.of(ctx)`);
    # None outside the app's lifespan.
    live: Any = None
    metrics: Metrics | None = None
    rate_limits: RateLimits | None = None
    # The anonymous mutations' per-IP budgets and the bound on concurrent password hashing.
    throttle: Throttle | None = None
    # Whether the app's fast paths are on (giftgraph.accel): look-ahead then reads
    # graphql-core's field nodes directly.
    fast: bool = False
    # Charges the caller's answer bytes and values (giftgraph.admission.answers) for what
    # was built but not written: a compiled read refused by its statement, the values of a
    # result its errors nulled.
    charge_answer: Callable[[int, int], None] | None = None
    # A socket's: takes one of its caller's operations in flight for a query or mutation
    # (admission.requests.InFlight) and returns its release; RateLimited past the wait.
    operation_turn: Callable[[str], Awaitable[Callable[[], None]]] | None = None

    @property
    def operation(self) -> OperationState:
        state = _OPERATION.get()
        assert state is not None, "no operation is running"
        return state

    @property
    def db(self) -> OperationDb:
        return self.operation.db

    async def recover_reads(self) -> None:
        """Before the lean executor's query runs again in graphql-core (see
        accel/executor.py): a read that failed in the first run must not fail the second."""
        state = _OPERATION.get()
        if state is not None:
            await state.db.recover()

    @property
    def loaders(self) -> Loaders:
        loaders = self.operation.loaders
        if loaders is None:
            from giftgraph.schema.loaders import Loaders

            loaders = self.operation.loaders = Loaders(self.db, self.family_id)
        return loaders

    def count_refusal(self, bound: str) -> None:
        """One refusal by the admission bound `bound`, once per operation."""
        state = _OPERATION.get()
        if state is not None:
            if state.refused is None:
                state.refused = set()
            elif bound in state.refused:
                return
            state.refused.add(bound)
        if self.metrics is not None:
            self.metrics.refusals.count(bound)

    @property
    def client_network(self) -> str:
        """The client's address, or its IPv6 network (`ipv6_prefix_length`): what every
        per-IP bound spends (giftgraph.admission.clients)."""
        client = getattr(self.request, "client", None)
        return client_network(client.host if client is not None else None,
                              self.settings.ipv6_prefix_length)

    def require_user(self) -> Caller:
        if self.user is None:
            raise self.auth_error or Unauthenticated()
        return self.user

    def require_admin(self) -> Caller:
        user = self.require_user()
        if user.role != Role.ADMIN:
            raise Forbidden("Only an ADMIN can do this")
        return user

    @property
    def family_id(self) -> uuid.UUID:
        return self.require_user().family_id


Info = StrawberryInfo[Context, None]
