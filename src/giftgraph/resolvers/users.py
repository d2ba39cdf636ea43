"""Auth and users: signUp, login, token refresh/logout, members, me."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import strawberry
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from giftgraph import auth
from giftgraph.context import Info
from giftgraph.db import models as m
from giftgraph.db import queries as q
from giftgraph.errors import BadInput, Conflict, Forbidden, Unauthenticated
from giftgraph.events import (
    LIST_ITEMS_TOPIC,
    Cascaded,
    after_commit,
    list_topics,
    record,
    record_many,
)
from giftgraph.resolvers.common import get_owned, list_connection, unit_of_work
from giftgraph.resolvers.crud import comment_topics
from giftgraph.schema.connection import Connection
from giftgraph.schema.inputs import (
    FamilyPatch,
    RegisterUserInput,
    SignUpInput,
    UpdateUserInput,
    provided,
)
from giftgraph.schema.loaders import Loaders
from giftgraph.schema.types import AuthPayload, Family, User
from giftgraph.validation import FamilyData, SignUpData, UserData, UserPatchData, validate

EMAIL_TAKEN = "an account with this email already exists"


@asynccontextmanager
async def _anonymous_unit(info: Info) -> AsyncIterator[AsyncSession]:
    async with info.context.db.write() as session:
        yield session


def _email_conflict() -> Conflict:
    return Conflict(EMAIL_TAKEN, fields={"email": EMAIL_TAKEN})


async def _ensure_email_free(
    session: AsyncSession, email: str, exclude: uuid.UUID | None = None
) -> None:
    stmt = select(m.User.id).where(func.lower(m.User.email) == email.lower())
    if exclude is not None:
        stmt = stmt.where(m.User.id != exclude)
    if (await session.scalar(stmt)) is not None:
        raise _email_conflict()


@asynccontextmanager
async def _unique_email() -> AsyncIterator[None]:
    """A concurrent writer that won the unique `lower(email)` index is a CONFLICT too."""
    try:
        yield
    except IntegrityError as exc:
        raise _email_conflict() from exc


async def _payload(
    info: Info, session: AsyncSession, user: m.User, chain: uuid.UUID | None = None
) -> AuthPayload:
    settings = info.context.settings
    refresh = await auth.issue_refresh_token(session, settings, user, chain)
    operation = info.context.operation
    if operation.loaders is None:  # nested fields of the payload are the user's family's
        operation.loaders = Loaders(operation.db, user.family_id)
    return AuthPayload(
        access_token=auth.create_access_token(settings, user),
        refresh_token=refresh,
        expires_in=settings.access_token_ttl_seconds,
        user=User.from_model(user),
    )


async def sign_up(info: Info, input: SignUpInput) -> AuthPayload:
    data = validate(SignUpData, provided(input))
    password_hash = await auth.hash_password(info.context.settings, data.password)
    async with _unique_email(), _anonymous_unit(info) as session:
        await _ensure_email_free(session, data.email)
        family = m.Family(name=data.family_name, currency=data.currency)
        session.add(family)
        await session.flush()
        user = m.User(
            family_id=family.id,
            email=data.email,
            display_name=data.display_name,
            role=m.Role.ADMIN,
            password_hash=password_hash,
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
        payload = await _payload(info, session, user)
    return payload


async def login(info: Info, email: str, password: str) -> AuthPayload:
    settings = info.context.settings
    if info.context.rate_limits is not None:  # brute force: per IP, and per IP + email
        await info.context.rate_limits.hit_login(info.context.client_ip, email)
    async with _anonymous_unit(info) as session:
        user = await session.scalar(
            select(m.User).where(func.lower(m.User.email) == email.strip().lower())
        )
        if user is None:
            await auth.burn_password_check(settings, password)
            raise Unauthenticated("Invalid email or password")
        ok = await auth.verify_password(settings, user.password_hash, password)
        if not ok or not user.is_active:
            raise Unauthenticated("Invalid email or password")
        return await _payload(info, session, user)


async def refresh_token(info: Info, refresh_token: str) -> AuthPayload:
    settings = info.context.settings
    reuse: auth.RefreshReuse | None = None
    async with _anonymous_unit(info) as session:
        try:
            user, chain = await auth.consume_refresh_token(session, settings, refresh_token)
        except auth.RefreshReuse as exc:
            reuse = exc  # commit the chain's revocation, then refuse
        else:
            payload = await _payload(info, session, user, chain)
    if reuse is not None:
        raise reuse
    return payload


async def logout(info: Info, refresh_token: str) -> bool:
    async with _anonymous_unit(info) as session:
        return await auth.revoke_refresh_token(session, info.context.settings, refresh_token)


async def me(info: Info) -> User:
    return User.from_model(info.context.require_user())


async def family(info: Info) -> Family:
    user = info.context.require_user()
    row = await info.context.loaders.family.load(user.family_id)
    assert row is not None  # the caller's own family
    return Family.from_model(row)


async def update_family(info: Info, input: FamilyPatch) -> Family:
    """An ADMIN changes the family's name or currency (omitted: unchanged; null refused,
    both being required). Every change of the family's data is an event on its topic,
    which also moves the family's version on (the result cache, live queries, the
    dashboard feed)."""
    admin = info.context.require_admin()
    patch = provided(input)
    for name in ("name", "currency"):  # explicit null: they are required
        if name in patch and patch[name] is None:
            raise BadInput({name: "cannot be null"})
    validate(FamilyData, {"name": "-", "currency": "USD", **patch})  # before the transaction
    async with unit_of_work(info) as session:
        family = await session.scalar(
            select(m.Family).where(m.Family.id == admin.family_id)
            .with_for_update(key_share=True))  # as _lock_family: FOR NO KEY UPDATE
        assert family is not None  # the caller's own family
        data = validate(FamilyData, {"name": family.name, "currency": family.currency,
                                     **patch})
        family.name, family.currency = data.name, data.currency
        await record(session, family_id=admin.family_id, actor_id=admin.id,
                     kind=m.EventKind.UPDATED, entity=family, topics=())
    return Family.from_model(family)


async def users(
    info: Info,
    first: int | None = None,
    after: str | None = None,
    last: int | None = None,
    before: str | None = None,
) -> Connection[User]:
    stmt = select(m.User).where(m.User.family_id == info.context.family_id)
    return await list_connection(info, stmt, q.USERS, User.from_model, first, after, last, before)


async def register_user(info: Info, input: RegisterUserInput) -> User:
    admin = info.context.require_admin()
    data = validate(UserData, provided(input))
    password_hash = await auth.hash_password(info.context.settings, data.password)
    async with _unique_email(), unit_of_work(info) as session:
        await _ensure_email_free(session, data.email)
        user = m.User(
            family_id=admin.family_id,
            email=data.email,
            display_name=data.display_name,
            role=data.role,
            password_hash=password_hash,
        )
        session.add(user)
        await record(
            session,
            family_id=admin.family_id,
            actor_id=admin.id,
            kind=m.EventKind.ADDED,
            entity=user,
            topics=(),
        )
    return User.from_model(user)


def _close_sockets_after_commit(info: Info, session: AsyncSession, user_id: uuid.UUID) -> None:
    live = info.context.live
    if live is not None:
        after_commit(session, lambda: live.hub.revoke_user(user_id))


async def _lock_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    """Serialise admin changes within a family (the last-ADMIN rule). NO KEY UPDATE: it
    still excludes other callers, but not the KEY SHARE lock that inserting an event (its
    foreign key to the family) takes after the family's event lock, which another mutation
    may hold while it waits for that key share: with FOR UPDATE the two could deadlock
    (found by reading PostgreSQL's lock table, not reproduced in a test)."""
    await session.execute(  # key_share: PostgreSQL's FOR NO KEY UPDATE
        select(m.Family.id).where(m.Family.id == family_id).with_for_update(key_share=True))


async def _other_active_admins(session: AsyncSession, user: m.User) -> int:
    return (
        await session.scalar(
            select(func.count()).where(
                m.User.family_id == user.family_id,
                m.User.role == m.Role.ADMIN,
                m.User.is_active.is_(True),
                m.User.id != user.id,
            )
        )
        or 0
    )


async def update_user(info: Info, id: strawberry.ID, input: UpdateUserInput) -> User:
    actor = info.context.require_user()
    patch = provided(input)
    async with _unique_email(), unit_of_work(info) as session:
        await _lock_family(session, actor.family_id)
        user = await get_owned(session, m.User, id, "User")
        is_admin = actor.role == m.Role.ADMIN
        if user.id != actor.id and not is_admin:
            raise Forbidden("Only an ADMIN can change another member")
        if not is_admin and ({"role", "is_active"} & patch.keys()):
            raise Forbidden("Only an ADMIN can change roles or deactivate members")
        data = validate(
            UserPatchData,
            {
                "email": user.email,
                "display_name": user.display_name,
                "role": user.role,
                "is_active": user.is_active,
                **patch,
            },
        )
        loses_admin = (
            user.role == m.Role.ADMIN
            and user.is_active
            and (data.role != m.Role.ADMIN or not data.is_active)
        )
        if loses_admin and await _other_active_admins(session, user) == 0:
            raise Conflict("The family must keep at least one active ADMIN")
        if data.email.lower() != user.email.lower():
            await _ensure_email_free(session, data.email, exclude=user.id)
        if data.password is not None:
            user.password_hash = await auth.hash_password(info.context.settings, data.password)
        deactivated = user.is_active and not data.is_active
        user.email, user.display_name = data.email, data.display_name
        user.role, user.is_active = data.role, data.is_active
        if deactivated or data.password is not None:
            # Refresh tokens revoked; access tokens end with the password's stamp, and so
            # do the sockets opened with them.
            await auth.revoke_user_tokens(session, user.id)
            _close_sockets_after_commit(info, session, user.id)
        await record(
            session,
            family_id=actor.family_id,
            actor_id=actor.id,
            kind=m.EventKind.UPDATED,
            entity=user,
            topics=(),
        )
    return User.from_model(user)


async def _release(
    session: AsyncSession, user_id: uuid.UUID, new_owner: uuid.UUID | None
) -> list[Cascaded]:
    """What a member's delete changes in other rows, a statement per kind (before the
    family's event lock, as every row lock), each row with the event a direct change of it
    would get: their lists pass to `new_owner` (UPDATED), their items are unassigned
    (ASSIGNED to nobody, as `assignListItem(userId: null)`; the foreign key's ON DELETE SET
    NULL, done first) and their comments lose their author (UPDATED; likewise)."""
    now = m.utcnow()
    options = {"synchronize_session": False, "populate_existing": True}
    lists = list(await session.scalars(
        update(m.GiftList).where(m.GiftList.owner_id == user_id)
        .values(owner_id=new_owner, updated_at=now)
        .returning(m.GiftList).execution_options(**options)))
    items = list(await session.scalars(
        update(m.ListItem).where(m.ListItem.assignee_id == user_id)
        .values(assignee_id=None, updated_at=now)
        .returning(m.ListItem).execution_options(**options)))
    comments = list(await session.scalars(
        update(m.Comment).where(m.Comment.author_id == user_id)
        .values(author_id=None, updated_at=now)
        .returning(m.Comment).execution_options(**options)))
    item_lists = {gl.id: gl for gl in lists}
    wanted = {item.list_id for item in items} - item_lists.keys()
    if wanted:
        item_lists.update((gl.id, gl) for gl in await session.scalars(
            select(m.GiftList).where(m.GiftList.id.in_(wanted))))
    return [
        *((m.EventKind.UPDATED, gl, list_topics(gl)) for gl in lists),
        *((m.EventKind.ASSIGNED, item, [*list_topics(item_lists[item.list_id]),
                                        LIST_ITEMS_TOPIC]) for item in items),
        *((m.EventKind.UPDATED, c, comment_topics(c)) for c in comments),
    ]


async def delete_user(info: Info, id: strawberry.ID) -> strawberry.ID:
    admin = info.context.require_admin()
    async with unit_of_work(info) as session:
        await _lock_family(session, admin.family_id)
        user = await get_owned(session, m.User, id, "User")
        if (
            user.role == m.Role.ADMIN
            and user.is_active
            and await _other_active_admins(session, user) == 0
        ):
            raise Conflict("The family must keep at least one active ADMIN")
        # Lists must keep an owner: they pass to the admin who deletes the member.
        new_owner = admin.id if admin.id != user.id else None
        if new_owner is None:
            new_owner = await session.scalar(
                select(m.User.id)
                .where(
                    m.User.family_id == admin.family_id,
                    m.User.role == m.Role.ADMIN,
                    m.User.is_active.is_(True),
                    m.User.id != user.id,
                )
                .limit(1)
            )
        cascaded = await _release(session, user.id, new_owner)
        await record_many(session, family_id=admin.family_id, actor_id=admin.id,
                          entries=cascaded)
        await record(
            session,
            family_id=admin.family_id,
            actor_id=admin.id,
            kind=m.EventKind.DELETED,
            entity=user,
            topics=(),
        )
        await session.delete(user)
        _close_sockets_after_commit(info, session, user.id)
    return id
