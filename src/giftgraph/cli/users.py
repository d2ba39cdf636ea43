"""`giftgraph user create | reset-password`: an operator's way in, without the API.

They do what `signUp`, `registerUser` and a password change in `updateUser` do: the same
validation (giftgraph.validation), hashing and token revocation (giftgraph.auth), the same
`Event` rows in the same transaction, published after COMMIT through the configured
broadcaster, so that running instances hear of them as of any change.

A password is never an argument (arguments are visible to every user of the machine in
`ps` and stay in shell history): it is typed at a terminal (twice), or read from standard
input with `--password-stdin` (one line), as `docker login` does.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from giftgraph import auth
from giftgraph.cli.common import (
    USAGE_ERROR,
    CommandError,
    database,
    load_settings,
    migrated,
)
from giftgraph.config import Settings
from giftgraph.db import models as m
from giftgraph.db.session import after_commit
from giftgraph.errors import BadInput, NotFound
from giftgraph.events import record
from giftgraph.ids import decode_id, encode_id, parse_uuid
from giftgraph.validation import PasswordData, SignUpData, UserData, normalized_email, validate

if TYPE_CHECKING:
    from giftgraph.db.session import OperationDb
    from giftgraph.live.hub import Hub

EMAIL_TAKEN = "an account with this email already exists"
NOT_REACHED = ("sockets already open on a running server close when their access token "
               "expires (GIFTGRAPH_BROADCAST_URL is memory://, which reaches no other "
               "process; postgres:// or redis:// closes them at once)")


def read_password(args: argparse.Namespace) -> str:
    """From standard input (`--password-stdin`: its first line), else typed twice."""
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise CommandError("no password on standard input", code=USAGE_ERROR)
        return line
    if not sys.stdin.isatty():
        raise CommandError("no terminal to type the password at: pass it on standard input "
                           "with --password-stdin", code=USAGE_ERROR)
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise CommandError("the two passwords differ", code=USAGE_ERROR)
    return first


def checked(model: Any, data: dict[str, Any]) -> Any:
    """`validate`, its BAD_USER_INPUT said as lines naming the options."""
    try:
        return validate(model, data)
    except BadInput as exc:
        options = {"email": "EMAIL", "displayName": "--name", "familyName": "--new-family",
                   "password": "password", "currency": "--currency"}
        raise CommandError(*(f"{options.get(k, k)}: {v}" for k, v in exc.fields.items()),
                           code=USAGE_ERROR) from None


@asynccontextmanager
async def operation_db(settings: Settings,
                       url: str) -> AsyncIterator[tuple[OperationDb, Hub | None]]:
    """A unit of work as the API's (`OperationDb.write`), whose events and after-commit
    hooks go to the configured broadcaster, if it reaches other processes."""
    from giftgraph.db.engine import create_database
    from giftgraph.db.session import OperationDb

    db = create_database(url, settings)
    hub = None
    if urlsplit(settings.broadcast_url).scheme != "memory":
        from giftgraph.live.hub import Hub

        hub = Hub(settings.broadcast_url, url)
        await hub.connect()
    try:
        async def publish(events: list[m.Event]) -> None:
            if hub is not None:
                await hub.publish(events)

        operation = OperationDb(db, publish)
        try:
            yield operation, hub
        finally:
            await operation.close()
    finally:
        if hub is not None:
            await hub.disconnect()
        await db.dispose()


@dataclass(frozen=True)
class Created:
    user_id: uuid.UUID
    family_id: uuid.UUID
    family_name: str
    role: m.Role
    new_family: bool


async def find_family(session: AsyncSession, family: str) -> m.Family:
    """A family by its ID (global or UUID) or by its exact name (which must be unique)."""
    key = parse_uuid(family)
    if key is None:
        try:
            key = decode_id(family, "Family")
        except NotFound:
            key = None
    if key is not None:
        found = await session.get(m.Family, key)
        if found is not None:
            return found
    named = list((await session.scalars(
        select(m.Family).where(m.Family.name == family).order_by(m.Family.created_at))).all())
    if not named:
        raise CommandError(f"--family: no family has the ID or name {family!r}")
    if len(named) > 1:
        ids = ", ".join(encode_id("Family", f.id) for f in named)
        raise CommandError(f"--family: {len(named)} families are named {family!r}; name one "
                           f"by its ID: {ids}")
    return named[0]


async def create_user(settings: Settings, url: str, *, email: str, display_name: str,
                      password: str, new_family: str | None = None, family: str | None = None,
                      role: m.Role = m.Role.MEMBER, currency: str = "USD") -> Created:
    """A new family with `email` as its ADMIN (as signUp), or a member of `family` (as
    registerUser)."""
    if new_family is not None:
        data = checked(SignUpData, {"family_name": new_family, "email": email,
                                    "password": password, "display_name": display_name,
                                    "currency": currency})
        role = m.Role.ADMIN
    else:
        data = checked(UserData, {"email": email, "password": password,
                                  "display_name": display_name, "role": role})
    password_hash = await auth.hash_password(settings, data.password)
    async with operation_db(settings, url) as (db, _):
        try:
            async with db.write() as session:
                taken = await session.scalar(select(m.User.id).where(
                    func.lower(m.User.email) == data.email.lower()))
                if taken is not None:
                    raise CommandError(f"{data.email}: {EMAIL_TAKEN}")
                if new_family is not None:
                    home = m.Family(name=data.family_name, currency=data.currency)
                    session.add(home)
                    await session.flush()
                else:
                    assert family is not None
                    home = await find_family(session, family)
                user = m.User(family_id=home.id, email=data.email,
                              display_name=data.display_name, role=role,
                              password_hash=password_hash, token_epoch=0)
                session.add(user)
                await record(session, family_id=home.id, actor_id=None,
                             kind=m.EventKind.ADDED, entity=user, topics=())
                created = Created(user.id, home.id, home.name, role, new_family is not None)
        except IntegrityError:  # a concurrent writer won the unique lower(email) index
            raise CommandError(f"{data.email}: {EMAIL_TAKEN}") from None
    return created


@dataclass(frozen=True)
class Reset:
    user_id: uuid.UUID
    email: str
    revoked: int  # refresh tokens that were still valid
    sockets_closed: bool  # through the broadcaster, on every instance


async def reset_password(settings: Settings, url: str, *, email: str, password: str) -> Reset:
    """As a new password set through `updateUser`: every token issued before ends (its
    refresh tokens revoked, its `token_epoch` moved on) and its open sockets close."""
    checked(PasswordData, {"password": password})
    address = normalized_email(email) or email.strip()
    password_hash = await auth.hash_password(settings, password)
    async with operation_db(settings, url) as (db, hub), db.write() as session:
        user = await session.scalar(
            select(m.User).where(func.lower(m.User.email) == address.lower())
            .with_for_update())
        if user is None:
            raise CommandError(f"{address}: no user has this email")
        revoked = await session.scalar(select(func.count()).where(
            m.RefreshToken.user_id == user.id, m.RefreshToken.revoked_at.is_(None),
            m.RefreshToken.used_at.is_(None),
            m.RefreshToken.expires_at > func.now())) or 0
        user.password_hash = password_hash
        await auth.end_sessions(session, user)
        if hub is not None:
            user_id = user.id
            after_commit(session, lambda: hub.revoke_user(user_id))
        await record(session, family_id=user.family_id, actor_id=None,
                     kind=m.EventKind.UPDATED, entity=user, topics=())
        result = Reset(user.id, user.email, revoked, hub is not None)
    return result


def cmd_user_create(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.new_family is not None and args.role is not None and args.role != "ADMIN":
        raise CommandError("--role: the first member of a new family is its ADMIN",
                           code=USAGE_ERROR)
    password = read_password(args)
    with database(settings) as url:
        migrated(settings, url)
        created = asyncio.run(create_user(
            settings, url, email=args.email, display_name=args.name, password=password,
            new_family=args.new_family, family=args.family,
            role=m.Role(args.role or "MEMBER"), currency=args.currency))
    where = "the new family" if created.new_family else "the family"
    print(f"created {created.role.value} {args.email.strip()} in {where} "
          f"{created.family_name!r} (family ID {encode_id('Family', created.family_id)}, "
          f"user ID {encode_id('User', created.user_id)})")
    return 0


def cmd_user_reset_password(args: argparse.Namespace) -> int:
    settings = load_settings()
    password = read_password(args)
    with database(settings) as url:
        migrated(settings, url)
        reset = asyncio.run(reset_password(settings, url, email=args.email, password=password))
    print(f"password reset for {reset.email}: {reset.revoked} refresh token(s) revoked, "
          "every access token issued before stops working")
    if not reset.sockets_closed:
        print(f"note: {NOT_REACHED}")
    return 0
