"""Members and their family: me, family, users, registerUser, updateUser, deleteUser,
updateFamily. (signUp, login, refreshToken and logout are in resolvers/sessions.py.)"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

import strawberry
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from giftgraph import auth
from giftgraph.context import Caller, Info
from giftgraph.db import models as m
from giftgraph.db import orders
from giftgraph.db.session import after_commit
from giftgraph.errors import BadInput, Conflict, Forbidden
from giftgraph.events import (
    LIST_ITEMS_TOPIC,
    Cascaded,
    list_topics,
    record,
    record_many,
)
from giftgraph.ids import decode_id
from giftgraph.resolvers import sessions
from giftgraph.resolvers.accounts import ensure_email_free, hashing_turn, unique_email
from giftgraph.resolvers.common import get_owned, list_connection, unit_of_work
from giftgraph.resolvers.crud import comment_topics
from giftgraph.schema.arguments import After, Before, First, Last
from giftgraph.schema.connection import Connection
from giftgraph.schema.inputs import (
    FamilyPatch,
    RegisterUserInput,
    UpdateUserInput,
    provided,
)
from giftgraph.schema.types import Family, User
from giftgraph.validation import (
    FamilyData,
    PasswordData,
    UserData,
    UserPatchData,
    validate,
)


async def me(info: Info) -> User:
    return User.from_model(info.context.require_user())


async def family(info: Info) -> Family:
    user = info.context.require_user()
    row = await info.context.loaders.family.load(user.family_id)
    assert row is not None  # the caller's own family
    return Family.from_model(row)


async def update_family(info: Info, input: Annotated[FamilyPatch, strawberry.argument(
        description="The settings to change.")]) -> Family:
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
    first: First = None,
    after: After = None,
    last: Last = None,
    before: Before = None,
) -> Connection[User]:
    stmt = select(m.User).where(m.User.family_id == info.context.family_id)
    return await list_connection(info, stmt, orders.USERS, User.from_model,
                                 first, after, last, before)


async def register_user(info: Info, input: Annotated[RegisterUserInput, strawberry.argument(
        description="The new member.")]) -> User:
    admin = info.context.require_admin()
    data = validate(UserData, provided(input))
    password_hash = await auth.hash_password(info.context.settings, data.password,
                                             await hashing_turn(info))
    async with unique_email(), unit_of_work(info) as session:
        await ensure_email_free(session, data.email)
        user = m.User(
            family_id=admin.family_id,
            email=data.email,
            display_name=data.display_name,
            role=data.role,
            password_hash=password_hash,
            token_epoch=0,
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


NEEDS_CURRENT = "required to change your own password"
NOT_CURRENT = "is not your current password"


@dataclass(frozen=True, slots=True)
class NewPassword:
    """A new password, hashed before the unit of work (no locks held while argon2 runs);
    for one's own, the hash that `currentPassword` was checked against."""

    hash: str
    checked_against: str | None


async def _new_password(info: Info, actor: Caller, user_id: uuid.UUID, password: str,
                        current: str | None) -> NewPassword | None:
    """The new password's hash, computed before the transaction; None when the change
    will be refused anyway (another member's, by a MEMBER: FORBIDDEN in the transaction).
    One's own password needs the current one (BAD_USER_INPUT `currentPassword`)."""
    if user_id != actor.id and actor.role != m.Role.ADMIN:
        return None
    validate(PasswordData, {"password": password})
    settings = info.context.settings
    checked = None
    if user_id == actor.id:
        if not current:
            raise BadInput({"currentPassword": NEEDS_CURRENT})
        throttle = info.context.throttle
        if throttle is not None:  # a guess of the password, as a login is
            await throttle.login(info.context.client_network, actor.email)
        checked = await info.context.db.scalar(
            select(m.User.password_hash).where(m.User.id == actor.id))
        gate = await hashing_turn(info)
        if checked is None or not await auth.verify_password(settings, checked, current, gate):
            raise BadInput({"currentPassword": NOT_CURRENT})
    new_hash = await auth.hash_password(settings, password, await hashing_turn(info))
    return NewPassword(new_hash, checked)


async def update_user(
    info: Info,
    id: Annotated[strawberry.ID, strawberry.argument(
        description="The member to change: yourself, or for an ADMIN any member.")],
    input: Annotated[UpdateUserInput, strawberry.argument(description="The changes.")],
) -> User:
    actor = info.context.require_user()
    patch = provided(input)
    current = patch.pop("current_password", None)
    new_password = None
    if patch.get("password") is not None:
        new_password = await _new_password(info, actor, decode_id(id, "User"),
                                           patch["password"], current)
    async with unique_email(), unit_of_work(info) as session:
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
            await ensure_email_free(session, data.email, exclude=user.id)
        if data.password is not None:
            assert new_password is not None  # hashed above for whoever may change it
            if new_password.checked_against not in (None, user.password_hash):
                # Changed since `currentPassword` was checked (the row is locked now).
                raise BadInput({"currentPassword": NOT_CURRENT})
            user.password_hash = new_password.hash
        deactivated = user.is_active and not data.is_active
        user.email, user.display_name = data.email, data.display_name
        user.role, user.is_active = data.role, data.is_active
        if deactivated or data.password is not None:
            # Every token issued before ends, and the sockets opened with them close.
            await auth.end_sessions(session, user)
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
    session: AsyncSession, user: m.User, new_owner: uuid.UUID | None
) -> list[Cascaded]:
    """What a member's delete changes in other rows, a statement per kind (before the
    family's event lock, as every row lock), each row with the event a direct change of it
    would get: their lists pass to `new_owner` (UPDATED), their items are unassigned
    (ASSIGNED to nobody, as `assignListItem(userId: null)`; the foreign key's ON DELETE SET
    NULL, done first) and their comments lose their author (UPDATED; likewise). Rows of the
    member's family only: another family's row pointing at the member (never written by
    the API) is left to the foreign key, and never recorded in this family's log."""
    now = m.utcnow()
    options = {"synchronize_session": False, "populate_existing": True}
    family = user.family_id
    lists = list(await session.scalars(
        update(m.GiftList).where(m.GiftList.owner_id == user.id, m.GiftList.family_id == family)
        .values(owner_id=new_owner, updated_at=now)
        .returning(m.GiftList).execution_options(**options)))
    items = list(await session.scalars(
        update(m.ListItem)
        .where(m.ListItem.assignee_id == user.id, m.ListItem.family_id == family)
        .values(assignee_id=None, updated_at=now)
        .returning(m.ListItem).execution_options(**options)))
    comments = list(await session.scalars(
        update(m.Comment).where(m.Comment.author_id == user.id, m.Comment.family_id == family)
        .values(author_id=None, updated_at=now)
        .returning(m.Comment).execution_options(**options)))
    item_lists = {gl.id: gl for gl in lists}
    wanted = {item.list_id for item in items} - item_lists.keys()
    if wanted:
        item_lists.update((gl.id, gl) for gl in await session.scalars(
            select(m.GiftList).where(m.GiftList.id.in_(wanted), m.GiftList.family_id == family)))
    return [
        *(Cascaded(m.EventKind.UPDATED, gl, list_topics(gl)) for gl in lists),
        # (an item on another family's list, never written by the API: no list's topics)
        *(Cascaded(m.EventKind.ASSIGNED, item, [
            *(list_topics(item_lists[item.list_id]) if item.list_id in item_lists else ()),
            LIST_ITEMS_TOPIC]) for item in items),
        *(Cascaded(m.EventKind.UPDATED, c, comment_topics(c)) for c in comments),
    ]


async def delete_user(info: Info, id: Annotated[strawberry.ID, strawberry.argument(
        description="The member to delete (yourself too, if another active ADMIN "
                    "remains).")]) -> strawberry.ID:
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
        cascaded = await _release(session, user, new_owner)
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


# schema/schema.py resolves the session mutations as r_users.*: they stay reachable here
# until it takes them from resolvers/sessions.py.
sign_up = sessions.sign_up
login = sessions.login
refresh_token = sessions.refresh_token
logout = sessions.logout
