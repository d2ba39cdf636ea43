"""Tokens, password hashing, and authentication of HTTP requests and sockets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple, Protocol, TypeVar

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from giftgraph.config import Settings
from giftgraph.db.models import RefreshToken, User
from giftgraph.errors import Unauthenticated

ACCESS = "access"
REFRESH = "refresh"
T = TypeVar("T")


class Gate(Protocol):
    """What runs a hash: the admission layer's `Hashing`, or one caller's `Turn` of it
    (giftgraph.admission.throttle)."""

    async def run(self, work: Callable[[], T]) -> T: ...


@lru_cache(maxsize=8)
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


def hasher(settings: Settings) -> PasswordHasher:
    return _hasher(settings.argon2_time_cost, settings.argon2_memory_kib,
                   settings.argon2_parallelism)


async def _run(gate: Gate | None, work: Callable[[], T]) -> T:
    """`work` off the event loop: through the app's bounded `Hashing` (a caller's turn of
    it) when given (every request), else a plain worker thread (the CLI's demo data)."""
    if gate is not None:
        return await gate.run(work)
    return await asyncio.to_thread(work)


async def hash_password(settings: Settings, password: str, gate: Gate | None = None) -> str:
    """argon2id hash, computed off the event loop."""
    return await _run(gate, lambda: hasher(settings).hash(password))


def _verify(settings: Settings, password_hash: str, password: str) -> bool:
    try:
        return hasher(settings).verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(settings: Settings, password_hash: str, password: str,
                          gate: Gate | None = None) -> bool:
    return await _run(gate, lambda: _verify(settings, password_hash, password))


# A fixed hash to verify against when the email is unknown, so login takes as long
# either way and does not reveal which emails exist.
_DUMMY_PASSWORD = "giftgraph-timing-equaliser"  # noqa: S105 - not a credential


@lru_cache(maxsize=8)
def _dummy_hash(time_cost: int, memory_kib: int, parallelism: int) -> str:
    return _hasher(time_cost, memory_kib, parallelism).hash(_DUMMY_PASSWORD)


async def burn_password_check(settings: Settings, password: str,
                              gate: Gate | None = None) -> None:
    def burn() -> None:  # the dummy hash too is made in the thread, the first time
        dummy = _dummy_hash(settings.argon2_time_cost, settings.argon2_memory_kib,
                            settings.argon2_parallelism)
        _verify(settings, dummy, password)

    await _run(gate, burn)


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    family_id: uuid.UUID
    role: str
    stamp: str  # the user's `password_stamp` when the token was issued
    # The user's `token_epoch` when the token was issued (claim `tep`; 0 when absent, as
    # every epoch was before it existed): deactivation and a new password move it on,
    # ending the token.
    epoch: int = 0
    # The refresh chain the token was issued with (claim `sid`: its `chain_id`); None for
    # a token from before the claim. `logout` and reuse detection end it, and the sockets
    # authenticated with it.
    chain: uuid.UUID | None = None
    expires: int = 0  # `exp`, seconds since the epoch


def password_stamp(settings: Settings, password_digest: str) -> str:
    """What an access token carries of its user's password (claim `pst`): a new password
    changes it, so every access token issued before stops working at once, as the user row
    is read on every request anyway (`schema.extensions.authenticate`). Made of the hash's
    MD5 (`password_digest`), which the database computes: the hash itself is not read for
    authentication. Keyed: the token tells nothing about the password or its hash."""
    return _stamp(settings.jwt_secret, password_digest)


def password_digest(password_hash: str) -> str:
    """PostgreSQL's `md5(users.password_hash)`, computed here."""
    return hashlib.md5(password_hash.encode(), usedforsecurity=False).hexdigest()


@lru_cache(maxsize=4096)
def _stamp(secret: str, password_digest: str) -> str:
    digest = hmac.digest(secret.encode(), password_digest.encode(), "sha256")
    return base64.urlsafe_b64encode(digest[:12]).decode()


def stamp_matches(settings: Settings, claims: AccessClaims, password_digest: str) -> bool:
    return hmac.compare_digest(claims.stamp, password_stamp(settings, password_digest))


def _encode(settings: Settings, claims: dict[str, object], ttl: int) -> str:
    now = datetime.now(UTC)
    payload = {**claims, "iat": now, "exp": now + timedelta(seconds=ttl)}
    return jwt.encode(payload, settings.jwt_secret, algorithm=settings.jwt_algorithm)


def _decode(settings: Settings, token: str, expected_type: str) -> dict[str, object]:
    return _decode_with(settings.jwt_secret, settings.jwt_algorithm, token, expected_type)


def _decode_with(secret: str, algorithm: str, token: str,
                 expected_type: str) -> dict[str, object]:
    try:
        claims: dict[str, object] = jwt.decode(
            token,
            secret,
            algorithms=[algorithm],  # a fixed list: `alg: none` never passes
            options={"require": ["exp", "iat", "sub", "typ"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("Token has expired") from exc
    except jwt.PyJWTError as exc:
        raise Unauthenticated("Invalid token") from exc
    if claims.get("typ") != expected_type:
        raise Unauthenticated("Invalid token type")
    return claims


# A device token: OWASP's "device cookie". Issued with every AuthPayload, presented at
# `login` (`deviceToken`): a login for the account it was issued to goes ahead of the
# hashing queue from any network, as one from a network the account has signed in from
# does (giftgraph.db.networks). Made of the user's id, the device's id, when it was issued
# and the user's `token_epoch` (not carried: a new password or a deactivation ends every
# device token), keyed by the JWT secret. It proves a past sign-in on that device, never
# the password, which each login still checks.
_DEVICE = b"giftgraph-device-v1"
_DEVICE_SIZE = 16 + 12 + 8 + 16  # user id, device id, issued (seconds), MAC


def create_device_token(settings: Settings, user: User, device: bytes | None = None) -> str:
    """A device token of `user` for `device` (a new device's id when None)."""
    device = device if device is not None else secrets.token_bytes(12)
    body = user.id.bytes + device + int(time.time()).to_bytes(8, "big")
    return base64.urlsafe_b64encode(body + _device_mac(settings, body, user.token_epoch)
                                    ).decode().rstrip("=")


def device_of(settings: Settings, token: str | None, user: User | None) -> bytes | None:
    """The device id of a device token issued to `user` (at its current `token_epoch`,
    within `refresh_token_ttl_seconds`), else None: forged, another user's, too old, or no
    user."""
    if not token or user is None or len(token) > 2 * _DEVICE_SIZE:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, TypeError):
        return None
    if len(raw) != _DEVICE_SIZE:
        return None
    body, mac = raw[:-16], raw[-16:]
    if not hmac.compare_digest(mac, _device_mac(settings, body, user.token_epoch)) \
            or body[:16] != user.id.bytes:
        return None
    issued = int.from_bytes(body[28:36], "big")
    if time.time() - issued > settings.refresh_token_ttl_seconds:
        return None
    return body[16:28]


def _device_mac(settings: Settings, body: bytes, epoch: int) -> bytes:
    message = _DEVICE + body + epoch.to_bytes(8, "big", signed=True)
    return hmac.digest(settings.jwt_secret.encode(), message, "sha256")[:16]


def create_access_token(settings: Settings, user: User, chain: uuid.UUID) -> str:
    """An access token of `user`, issued with the refresh chain `chain`."""
    return _encode(
        settings,
        {"sub": str(user.id), "fam": str(user.family_id), "role": user.role.value, "typ": ACCESS,
         "pst": password_stamp(settings, password_digest(user.password_hash)),
         "tep": user.token_epoch, "sid": str(chain)},
        settings.access_token_ttl_seconds,
    )


def decode_access_token(settings: Settings, token: str) -> AccessClaims:
    """The claims of a valid access token. Its signature is verified (and its claims read)
    once per process, as a client sends the same token with every request: later uses only
    check that it has not expired since."""
    claims = _verified_access(settings.jwt_secret, settings.jwt_algorithm, token)
    if claims.expires <= time.time():  # as PyJWT decides it (no leeway)
        raise Unauthenticated("Token has expired")
    return claims


@lru_cache(maxsize=4096)
def _verified_access(secret: str, algorithm: str, token: str) -> AccessClaims:
    """A pure function of its arguments (failures raise, and are not remembered)."""
    claims = _decode_with(secret, algorithm, token, ACCESS)
    try:
        sid = claims.get("sid")
        return AccessClaims(
            user_id=uuid.UUID(str(claims["sub"])),
            family_id=uuid.UUID(str(claims["fam"])),
            role=str(claims["role"]),
            stamp=_text(claims["pst"]),
            epoch=_epoch(claims),
            chain=None if sid is None else uuid.UUID(_text(sid)),
            expires=int(claims["exp"]),  # type: ignore[call-overload]  # as PyJWT compares it
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise Unauthenticated("Invalid token") from exc


def _epoch(claims: dict[str, object]) -> int:
    """A token's `tep` claim: 0 when absent (issued before the claim existed)."""
    value = claims.get("tep", 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an integer")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (None when absent)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be 'Bearer <token>'")
    return token.strip()


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Chain(NamedTuple):
    """A refresh chain (every token descended from one login) and its user."""

    user_id: uuid.UUID
    chain_id: uuid.UUID


class IssuedRefresh(NamedTuple):
    token: str
    chain_id: uuid.UUID


async def issue_refresh_token(
    session: AsyncSession, settings: Settings, user: User, chain_id: uuid.UUID | None = None
) -> IssuedRefresh:
    """A new refresh token for `user`, stored hashed (never in clear), and its chain: a new
    one unless `chain_id` is given. A new chain's first row takes the chain's id as its own,
    so whether a chain has been revoked is one primary-key lookup (`CHAIN_REVOKED`): every
    row of a revoked chain is. The token carries its user's `token_epoch` (claim `tep`)."""
    chain = chain_id or uuid.uuid4()
    token = _encode(
        settings,
        {"sub": str(user.id), "typ": REFRESH, "jti": secrets.token_urlsafe(24),
         "tep": user.token_epoch},
        settings.refresh_token_ttl_seconds,
    )
    session.add(
        RefreshToken(
            id=uuid.uuid4() if chain_id else chain,
            user_id=user.id,
            chain_id=chain,
            token_hash=_hash_token(token),
            expires_at=datetime.now(UTC) + timedelta(seconds=settings.refresh_token_ttl_seconds),
        )
    )
    return IssuedRefresh(token, chain)


# Whether the chain `chain_id` has been revoked (logout, reuse, deactivation, a new
# password): its first row's `revoked_at`, by primary key. NULL (no such row) for a chain
# begun before first rows took the chain's id: those can't be told revoked here.
CHAIN_REVOKED = (
    select(RefreshToken.revoked_at.is_not(None))
    .where(RefreshToken.id == bindparam("chain_id", type_=RefreshToken.id.type))
    .scalar_subquery()
)


class RefreshReuse(Unauthenticated):
    """A rotated refresh token was presented again: its whole chain has been revoked."""

    def __init__(self, chain: Chain) -> None:
        super().__init__("Refresh token was already used; please log in again")
        self.chain = chain


class Refreshed(NamedTuple):
    """A refresh token's user, and the chain the token it is exchanged for continues."""

    user: User
    chain_id: uuid.UUID


async def consume_refresh_token(
    session: AsyncSession, settings: Settings, token: str
) -> Refreshed:
    """Validate and mark a refresh token used; return its user and chain.

    Reusing an already rotated token revokes every token of its chain (theft detection).
    The row is locked so two concurrent refreshes cannot both succeed. A token of a revoked
    chain is refused even if its own row escaped the revocation (a refresh that committed
    while `logout` ran), and so is one issued before its user's `token_epoch` moved on (a
    refresh that crossed a deactivation or a password change).
    """
    claims = _decode(settings, token, REFRESH)
    try:
        epoch = _epoch(claims)
    except TypeError as exc:
        raise Unauthenticated("Invalid refresh token") from exc
    row = await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == _hash_token(token)).with_for_update()
    )
    if row is None:
        raise Unauthenticated("Invalid refresh token")
    now = datetime.now(UTC)
    if row.used_at is not None or row.revoked_at is not None:
        await revoke_chain(session, row.chain_id)
        raise RefreshReuse(Chain(row.user_id, row.chain_id))
    if row.expires_at <= now:
        raise Unauthenticated("Refresh token has expired")
    if row.id != row.chain_id and await session.scalar(
            select(CHAIN_REVOKED), {"chain_id": row.chain_id}):
        raise Unauthenticated("Invalid refresh token")
    row.used_at = now
    user = await session.get(User, row.user_id)
    if user is None or not user.is_active or user.token_epoch != epoch:
        raise Unauthenticated("Invalid refresh token")
    return Refreshed(user, row.chain_id)


async def revoke_chain(session: AsyncSession, chain_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.chain_id == chain_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )


async def end_sessions(session: AsyncSession, user: User) -> None:
    """End every token issued to `user` so far: its refresh tokens are revoked, and access
    tokens (and refresh tokens a concurrent refresh issued) carry the old `token_epoch`.
    The caller closes the user's open sockets after commit."""
    user.token_epoch += 1
    await revoke_user_tokens(session, user.id)


async def revoke_user_tokens(session: AsyncSession, user_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )


async def revoke_refresh_token(session: AsyncSession, settings: Settings,
                               token: str) -> Chain | None:
    """Logout: revoke the chain of this token; the chain, or None when the token is
    unknown."""
    try:
        _decode(settings, token, REFRESH)
    except Unauthenticated:
        return None
    row = await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == _hash_token(token))
    )
    if row is None:
        return None
    await revoke_chain(session, row.chain_id)
    return Chain(row.user_id, row.chain_id)
