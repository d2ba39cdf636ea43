"""A socket's re-authentication by `ping` (see giftgraph.live.credentials for the rules):
the payload's token is checked as connection_init's was, and the socket's deadline moves to
its expiry."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.websockets import WebSocket

from giftgraph import auth
from giftgraph.context import Context, operation_scope
from giftgraph.db.session import log_outage, unavailable
from giftgraph.errors import AppError, RateLimited, Unauthenticated
from giftgraph.live import credentials
from giftgraph.schema.extensions import caller_of

log = logging.getLogger("giftgraph.live")


def _authorization(payload: Any) -> str | None:
    """The bearer credentials a ping's payload carries, or None for a plain ping."""
    if not isinstance(payload, dict):
        return None
    raw = payload.get("authorization", payload.get("Authorization"))
    token = payload.get("token")
    if raw is None and isinstance(token, str):
        raw = f"Bearer {token}"
    if raw is None and "token" not in payload:
        return None
    return raw if isinstance(raw, str) else ""  # present but not a string: not valid


async def renew(context: Context, payload: Any) -> bool | dict[str, Any]:
    """A `ping` on an authenticated socket: its re-authentication, if its payload carries
    a token. What to answer: True, a plain `pong`; a dict, a `pong` with that payload;
    False, nothing: the socket has been closed (4403)."""
    ws = context.request
    raw = _authorization(payload)
    if raw is None or context.user is None or not isinstance(ws, WebSocket):
        return True
    if context.throttle is not None:
        # Before the token is read: a client may send pings as fast as it likes.
        try:
            await context.throttle.reauth(str(context.user.id))
        except RateLimited as exc:
            return {"code": exc.code, **exc.extensions}
    try:
        async with operation_scope(context.database):
            token = auth.bearer_token(raw)
            if token is None:
                raise Unauthenticated()
            claims = auth.decode_access_token(context.settings, token)
            user, _ = await caller_of(context, claims)
            if user.id != context.user.id:
                raise Unauthenticated("Another user's token")
    except AppError as exc:
        log.info("socket of user %s closed: re-authentication refused (%s)",
                 context.user.id, exc.message)
        await credentials.close(ws, *credentials.FORBIDDEN)
        return False
    except (SQLAlchemyError, OSError) as exc:
        # The database is down: nothing renewed (the `pong` says no new expiry); the
        # socket keeps its current deadline.
        if unavailable(exc):
            log_outage(log, "socket re-authentication", exc)
        else:
            log.warning("socket re-authentication failed", exc_info=exc)
        return True
    context.user = user
    credentials.hold(ws, claims)
    return {"expiresAt": claims.expires}
