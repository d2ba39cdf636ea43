"""What an open socket is authenticated with, and for how long.

A socket authenticates once, in `connection_init`, with an access token, and is then held
to that token: when it expires the socket is closed with 4401 "Token expired"
(graphql-transport-ws' Unauthorized: authenticate again), unless the client has
re-authenticated on the open socket first. To do so it sends a `ping` whose payload is
`{"authorization": "Bearer <access token>"}` (or `{"token": "<access token>"}`): a valid
token of the same user moves the socket's deadline to that token's expiry, ties the
socket to the token's refresh chain and refreshes its caller (role, name); the `pong`
carries `{"expiresAt": <its exp, seconds since the epoch>}`. Each user may do so
`socket_reauth_rate` times (30 a minute), over all of its sockets; past that the `pong`
carries `{"code": "RATE_LIMITED", "retryAfter": <seconds>}` and nothing is renewed. A
token that is not valid (expired, revoked, malformed) or is another user's closes the
socket with 4403. A `ping` without those keys is answered as before, and changes nothing.

Revocation closes sockets with 4403 on every instance, through the hub (`Hub.revoke_user`):
all of a user's when it is deactivated, deleted or given a new password, and those whose
token came from one refresh chain when `logout` or reuse detection revokes that chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from typing import Any

from starlette.websockets import WebSocket

from giftgraph import auth

log = logging.getLogger("giftgraph.live")

KEY = "giftgraph.credentials"  # where a socket's `Credentials` are kept, in its scope
EXPIRED = (4401, "Token expired")
FORBIDDEN = (4403, "Forbidden")


class Credentials:
    """A socket's refresh chain and the timer that closes it when its token expires."""

    __slots__ = ("chain", "timer")

    def __init__(self) -> None:
        self.chain: uuid.UUID | None = None
        self.timer: asyncio.TimerHandle | None = None


_closing: set[asyncio.Task[None]] = set()  # closes under way (a task must be referenced)


async def close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):  # the socket may be closing already
        await ws.close(code=code, reason=reason)


def _expire(ref: weakref.ref[WebSocket]) -> None:
    ws = ref()
    if ws is not None:
        task = asyncio.get_running_loop().create_task(close(ws, *EXPIRED))
        _closing.add(task)
        task.add_done_callback(_closing.discard)


def hold(ws: WebSocket, claims: auth.AccessClaims) -> None:
    """Hold an authenticated socket to its token: it closes (4401) when the token expires,
    and with the token's refresh chain (4403)."""
    credentials = ws.scope.get(KEY)
    if credentials is None:
        credentials = ws.scope[KEY] = Credentials()
    if credentials.timer is not None:
        credentials.timer.cancel()
    credentials.chain = claims.chain
    credentials.timer = asyncio.get_running_loop().call_later(
        max(0.0, claims.expires - time.time()), _expire, weakref.ref(ws))


def chain_of(ws: WebSocket) -> uuid.UUID | None:
    """The refresh chain of the token `ws` is authenticated with (None: not known)."""
    credentials = ws.scope.get(KEY)
    return credentials.chain if credentials is not None else None


def release(ws: Any) -> None:
    """The socket has closed: its timer is cancelled (it would hold the socket until then)."""
    scope = getattr(ws, "scope", None)
    credentials = scope.get(KEY) if isinstance(scope, dict) else None
    if credentials is not None and credentials.timer is not None:
        credentials.timer.cancel()
        credentials.timer = None
