"""Socket admission: what one user and one socket may take.

- Sockets per user (`sockets_per_user`, close 4429): a slot is taken when the socket is
  authenticated and given back exactly once when its handler ends (`SocketSlot`), so the
  count is the sockets open now, never ones waiting for the garbage collector.
- Subscriptions per socket (`subscriptions_per_socket`) are refused where Strawberry's
  handler starts operations (`app.TransportWSHandler.handle_subscribe`).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from giftgraph.admission import Refusals
    from giftgraph.live.hub import Hub


class SocketSlot:
    """One open socket's place in its user's count (and in the hub's registry, where
    revocation finds it): taken by `admit`, given back by `release`, exactly once."""

    __slots__ = ("hub", "user_id", "ws")

    def __init__(self, hub: Hub, user_id: uuid.UUID, ws: WebSocket) -> None:
        self.hub: Hub | None = hub
        self.user_id = user_id
        self.ws = ws

    def release(self) -> None:
        """Leave the registry (no-op the second time)."""
        hub, self.hub = self.hub, None
        if hub is not None:
            hub.unregister_socket(self.user_id, self.ws)


def admit(hub: Hub, user_id: uuid.UUID, ws: WebSocket, limit: int,
          refusals: Refusals | None = None) -> SocketSlot | None:
    """A slot for this authenticated socket, or None (counted) when its user has `limit`
    open. Checked and taken in one step: no await between them."""
    if hub.open_sockets(user_id) >= limit:
        if refusals is not None:
            refusals.count("sockets_per_user")
        return None
    hub.register_socket(user_id, ws)
    return SocketSlot(hub, user_id, ws)
