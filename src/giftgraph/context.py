"""The typed GraphQL context: who is asking, and the operation's database access."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.types import Info as StrawberryInfo

from giftgraph.config import Settings
from giftgraph.db.engine import Database
from giftgraph.db.models import Role, User
from giftgraph.db.session import OperationDb, Publisher
from giftgraph.errors import AppError, Forbidden, Unauthenticated

if TYPE_CHECKING:
    from giftgraph.schema.loaders import Loaders


@dataclass
class Context:
    settings: Settings
    database: Database
    request: Request | WebSocket
    response: Any = None
    authorization: str | None = None
    connection_params: dict[str, Any] | None = None
    trace_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Set per operation by the RequestScope extension.
    db: OperationDb = None  # type: ignore[assignment]
    loaders: Loaders = None  # type: ignore[assignment]
    user: User | None = None
    auth_error: AppError | None = None
    # Called with the events of each committed mutation (the live layer publishes them).
    publish: Publisher | None = None

    def require_user(self) -> User:
        if self.user is None:
            raise self.auth_error or Unauthenticated()
        return self.user

    def require_admin(self) -> User:
        user = self.require_user()
        if user.role != Role.ADMIN:
            raise Forbidden("Only an ADMIN can do this")
        return user

    @property
    def family_id(self) -> uuid.UUID:
        return self.require_user().family_id


Info = StrawberryInfo[Context, None]
