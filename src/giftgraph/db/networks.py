"""The networks each user has signed in from (`known_networks`).

A network (an IPv4 address, an IPv6 /64: giftgraph.admission.clients) is remembered for a
user when they sign up, log in or refresh their session from it, as an HMAC of it under
the JWT secret: the table holds no address. The time of the user's last login from it is
kept too (`login_at`): an account that logged in within the hour queues behind idle ones.
A login for that email from that network, the password not yet checked, is likely its
owner's, and goes ahead in the hashing queue (giftgraph.admission.throttle). A network is
forgotten when no sign-in has come from it for `refresh_token_ttl_seconds`.
"""

from __future__ import annotations

import hmac
import uuid
from datetime import timedelta

from sqlalchemy import ColumnElement, Select, delete, exists, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from giftgraph.config import Settings
from giftgraph.db import models as m


def digest(settings: Settings, network: str) -> str:
    return hmac.digest(settings.jwt_secret.encode(), network.encode(), "sha256").hex()[:32]


def _fresh(settings: Settings) -> ColumnElement[bool]:
    return m.KnownNetwork.seen_at > func.now() - timedelta(
        seconds=settings.refresh_token_ttl_seconds)


def known(settings: Settings, email: str, network: str,
          recent: float) -> Select[bool, bool]:
    """Whether the account of `email` (lower-cased) has signed in from `network`, and
    whether it logged in (from any network) within the last `recent` seconds, by the
    database's clock: the same statement whether or not there is such an account."""
    user = select(m.User.id).where(func.lower(m.User.email) == email).scalar_subquery()
    logged_in = exists().where(m.KnownNetwork.user_id == user,
                               m.KnownNetwork.login_at > func.now() - timedelta(seconds=recent))
    return select(exists().where(m.KnownNetwork.user_id == user,
                                 m.KnownNetwork.network == digest(settings, network),
                                 _fresh(settings)), logged_in)


async def remember(session: AsyncSession, settings: Settings, user_id: uuid.UUID,
                   network: str, login: bool = False) -> None:
    """`network` is the user's, seen now (in the sign-in's transaction; `login`: a login,
    whose time is kept too); the user's networks not seen for `refresh_token_ttl_seconds`
    are forgotten."""
    now = func.now()
    stmt = insert(m.KnownNetwork).values(user_id=user_id, network=digest(settings, network),
                                         seen_at=now, login_at=now if login else None)
    await session.execute(stmt.on_conflict_do_update(
        index_elements=[m.KnownNetwork.user_id, m.KnownNetwork.network],
        set_={"seen_at": now, **({"login_at": now} if login else {})}))
    await session.execute(delete(m.KnownNetwork).where(
        m.KnownNetwork.user_id == user_id, ~_fresh(settings)))
