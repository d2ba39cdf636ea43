"""Sessions: signUp, login, token refresh and logout (callers without a session yet)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

import strawberry
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from giftgraph import auth
from giftgraph.admission.throttle import Threads
from giftgraph.context import Info
from giftgraph.db import models as m
from giftgraph.db import networks
from giftgraph.db.session import after_commit
from giftgraph.errors import Unauthenticated
from giftgraph.events import record
from giftgraph.resolvers.accounts import ensure_email_free, hashing_turn, unique_email
from giftgraph.schema.inputs import SignUpInput, provided
from giftgraph.schema.loaders import Loaders
from giftgraph.schema.types import AuthPayload, User
from giftgraph.validation import SignUpData, normalized_email, validate


@asynccontextmanager
async def _anonymous_unit(info: Info) -> AsyncIterator[AsyncSession]:
    async with info.context.db.write() as session:
        yield session


async def _payload(
    info: Info, session: AsyncSession, user: m.User, chain: uuid.UUID | None = None,
    device: bytes | None = None,
) -> AuthPayload:
    settings = info.context.settings
    refresh, chain = await auth.issue_refresh_token(session, settings, user, chain)
    operation = info.context.operation
    if operation.loaders is None:  # nested fields of the payload are the user's family's
        operation.loaders = Loaders(operation.db, user.family_id)
    return AuthPayload(
        access_token=auth.create_access_token(settings, user, chain),
        refresh_token=refresh,
        expires_in=settings.access_token_ttl_seconds,
        user=User.from_model(user),
        device_token=auth.create_device_token(settings, user, device),
    )


async def sign_up(info: Info, input: Annotated[SignUpInput, strawberry.argument(
        description="The new family and its first member.")]) -> AuthPayload:
    throttle = info.context.throttle
    if throttle is not None:  # before anything costs: one argon2 hash is 64 MiB
        await throttle.sign_up(info.context.client_network)
    data = validate(SignUpData, provided(input))
    password_hash = await auth.hash_password(info.context.settings, data.password,
                                             await hashing_turn(info))
    async with unique_email(), _anonymous_unit(info) as session:
        await ensure_email_free(session, data.email)
        family = m.Family(name=data.family_name, currency=data.currency)
        session.add(family)
        await session.flush()
        user = m.User(
            family_id=family.id,
            email=data.email,
            display_name=data.display_name,
            role=m.Role.ADMIN,
            password_hash=password_hash,
            token_epoch=0,
        )
        session.add(user)
        await record(
            session,
            family_id=family.id,
            actor_id=None,
            kind=m.EventKind.ADDED,
            entity=user,
            topics=(),
        )
        await networks.remember(session, info.context.settings, user.id,
                                info.context.client_network)
        payload = await _payload(info, session, user)
    return payload


INVALID_LOGIN = "Invalid email or password"


async def login(
    info: Info,
    email: Annotated[str, strawberry.argument(description="The member's email (any case).")],
    password: Annotated[str, strawberry.argument(description="Their password.")],
    device_token: Annotated[str | None, strawberry.argument(
        description="The deviceToken of an earlier AuthPayload of this member on this device, "
                    "if any: the login then goes ahead of others' login attempts, from any "
                    "network. Any other value is ignored.")] = None,
) -> AuthPayload:
    settings = info.context.settings
    throttle = info.context.throttle
    if throttle is not None:  # brute force: per IP, and per IP + email
        await throttle.login(info.context.client_network, email)
    lowered = (normalized_email(email) or email.strip()).lower()
    found = await info.context.db.scalar(
        select(m.User).where(func.lower(m.User.email) == lowered))
    # Its owner's, likely: from a network the account has signed in from, or a device it
    # has (its device token). The same read whether or not the account exists; a flood of
    # others' wrong passwords waits behind.
    [(known_here, recent)] = await info.context.db.rows(
        networks.known(settings, lowered, info.context.client_network, Threads.RECENT))
    known = bool(known_here)
    device = auth.device_of(settings, device_token, found)
    # The lane is spent by failures per network, or per device: a device token works from
    # any network, its failures are its own.
    network = info.context.client_network if device is None \
        else "device:" + device.hex()
    known = known or device is not None
    if known and throttle is not None:
        known = await throttle.known_login(network)
    # Weighed by user id (an email can change) and by the client's network: an account or
    # a network that logged in again and again lately queues later, and an account signed
    # up lately (in a flood, for one) behind every older one (Threads).
    established = found is not None and (datetime.now(UTC) - found.created_at) \
        .total_seconds() >= settings.login_established_seconds
    # and one that logged in within the hour (`recent`, from the database: any process's)
    # behind the idle ones
    gate = await hashing_turn(info, known, str(found.id) if found is not None else None,
                              established, bool(recent))
    if found is None:
        await auth.burn_password_check(settings, password, gate)
        raise Unauthenticated(INVALID_LOGIN)
    ok = await auth.verify_password(settings, found.password_hash, password, gate)
    if not ok or not found.is_active:
        if known and throttle is not None:
            await throttle.known_login_failed(network)
        raise Unauthenticated(INVALID_LOGIN)
    async with _anonymous_unit(info) as session:
        # Still the password just checked, and still active: a change committed meanwhile
        # is seen here, and one that commits later waits for this transaction and then
        # revokes the refresh token issued in it (FOR SHARE).
        user = await session.get(m.User, found.id, with_for_update={"read": True})
        if user is None or not user.is_active or user.password_hash != found.password_hash:
            raise Unauthenticated(INVALID_LOGIN)
        await networks.remember(session, settings, user.id, info.context.client_network,
                                login=True)
        payload = await _payload(info, session, user, device=device)
    if known and throttle is not None:  # its own logins ahead weigh on its next ones
        throttle.hashing.logged_in(str(found.id), info.context.client_network)
    return payload


def _close_chain_sockets_after_commit(info: Info, session: AsyncSession,
                                      chain: auth.Chain) -> None:
    """Sockets authenticated with the chain's access tokens close (4403) once it is
    revoked, on every instance; so do its access tokens over HTTP (`CHAIN_REVOKED`)."""
    live = info.context.live
    if live is not None:
        after_commit(session, lambda: live.hub.revoke_user(chain.user_id, chain.chain_id))


async def refresh_token(info: Info, refresh_token: Annotated[str, strawberry.argument(
        description="The refreshToken of the session's latest AuthPayload; each is good for "
                    "one use.")]) -> AuthPayload:
    settings = info.context.settings
    throttle = info.context.throttle
    if throttle is not None:
        await throttle.token(info.context.client_network)
    reuse: auth.RefreshReuse | None = None
    async with _anonymous_unit(info) as session:
        try:
            user, chain = await auth.consume_refresh_token(session, settings, refresh_token)
        except auth.RefreshReuse as exc:
            reuse = exc  # commit the chain's revocation, then refuse
            _close_chain_sockets_after_commit(info, session, exc.chain)
        else:
            await networks.remember(session, settings, user.id, info.context.client_network)
            payload = await _payload(info, session, user, chain)
    if reuse is not None:
        raise reuse
    return payload


async def logout(info: Info, refresh_token: Annotated[str, strawberry.argument(
        description="A refresh token of the session to end.")]) -> bool:
    throttle = info.context.throttle
    if throttle is not None:
        await throttle.token(info.context.client_network)
    async with _anonymous_unit(info) as session:
        chain = await auth.revoke_refresh_token(session, info.context.settings, refresh_token)
        if chain is not None:
            _close_chain_sockets_after_commit(info, session, chain)
    return chain is not None
