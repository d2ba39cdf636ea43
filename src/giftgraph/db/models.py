"""SQLAlchemy 2 models; integrity rules live in the database itself."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, configure_mappers, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Role(enum.StrEnum):
    ADMIN = "ADMIN"
    MEMBER = "MEMBER"


class OccasionKind(enum.StrEnum):
    BIRTHDAY = "BIRTHDAY"
    HOLIDAY = "HOLIDAY"
    ANNIVERSARY = "ANNIVERSARY"
    OTHER = "OTHER"


class ListKind(enum.StrEnum):
    WISHLIST = "WISHLIST"
    IDEAS = "IDEAS"
    GIFT_PLAN = "GIFT_PLAN"


class ItemStatus(enum.StrEnum):
    IDEA = "IDEA"
    SELECTED = "SELECTED"
    PURCHASED = "PURCHASED"
    RECEIVED = "RECEIVED"


class CommentTarget(enum.StrEnum):
    LIST = "LIST"
    LIST_ITEM = "LIST_ITEM"
    GIFT = "GIFT"
    PERSON = "PERSON"
    OCCASION = "OCCASION"


class EventKind(enum.StrEnum):
    ADDED = "ADDED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"
    STATUS_CHANGED = "STATUS_CHANGED"
    ASSIGNED = "ASSIGNED"
    COMMENT_ADDED = "COMMENT_ADDED"


MONEY = Numeric(12, 2)


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, values_callable=lambda e: [m.value for m in e])


class Base(DeclarativeBase):
    pass


class Timestamped:
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Family(Timestamped, Base):
    __tablename__ = "families"
    __table_args__ = (CheckConstraint("currency ~ '^[A-Z]{3}$'", name="ck_families_currency"),)
    name: Mapped[str] = mapped_column(String(200))
    # ISO 4217: budgets are in it, and `spent` sums the items priced in it.
    currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")


class Owned(Timestamped, Base):
    """A row that belongs to exactly one family (the tenant).

    Abstract (no table of its own): a mapped base, not a bare mixin, so that a type
    bound to it (`type[M]`, M bound to Owned) is a mapped class to SQLAlchemy and mypy."""

    __abstract__ = True

    family_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("families.id", ondelete="CASCADE"), index=True
    )


class User(Owned, Base):
    __tablename__ = "users"
    __table_args__ = (Index("uq_users_email_lower", text("lower(email)"), unique=True),)
    email: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str] = mapped_column(String(100))
    role: Mapped[Role] = mapped_column(_enum(Role, "user_role"), default=Role.MEMBER)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    password_hash: Mapped[str] = mapped_column(Text)
    # Access tokens carry it; deactivation moves it on, so reactivation revives none of them.
    token_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # All tokens descended from one login share a chain; reuse of a rotated token revokes it.
    chain_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class KnownNetwork(Base):
    """A network a user has signed in from (login, signUp, refreshToken), as an HMAC of
    it (no address is stored): their logins from it go ahead in the hashing queue
    (giftgraph.db.networks, giftgraph.admission.throttle)."""

    __tablename__ = "known_networks"
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    network: Mapped[str] = mapped_column(String(32), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The last login from it (signUp and refreshToken leave it), if any.
    login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Person(Owned, Base):
    __tablename__ = "persons"
    __table_args__ = (Index("ix_persons_family_name", "family_id", "name", "id"),)
    name: Mapped[str] = mapped_column(String(200))
    relationship: Mapped[str | None] = mapped_column(String(100))
    birthday: Mapped[date | None] = mapped_column(Date)
    interests: Mapped[list[str]] = mapped_column(ARRAY(String(100)), default=list)
    notes: Mapped[str | None] = mapped_column(Text)


class Occasion(Owned, Base):
    __tablename__ = "occasions"
    __table_args__ = (
        Index("ix_occasions_family_date", "family_id", "date", "id"),
        Index("ix_occasions_family_kind_date", "family_id", "kind", "date"),
        CheckConstraint("budget IS NULL OR budget >= 0", name="ck_occasions_budget"),
    )
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[OccasionKind] = mapped_column(_enum(OccasionKind, "occasion_kind"))
    date: Mapped[date] = mapped_column(Date)
    description: Mapped[str | None] = mapped_column(Text)
    budget: Mapped[Decimal | None] = mapped_column(MONEY)


class GiftList(Owned, Base):
    __tablename__ = "gift_lists"
    __table_args__ = (
        Index("ix_gift_lists_family_created", "family_id", "created_at", "id"),
        Index("ix_gift_lists_family_kind", "family_id", "kind"),
        CheckConstraint("budget IS NULL OR budget >= 0", name="ck_gift_lists_budget"),
    )
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[ListKind] = mapped_column(_enum(ListKind, "list_kind"))
    # Deleting a person or occasion keeps its lists, unlinked.
    person_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("persons.id", ondelete="SET NULL"), index=True
    )
    occasion_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("occasions.id", ondelete="SET NULL"), index=True
    )
    # deleteUser hands the lists over first; the database refuses an orphaned owner.
    owner_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="RESTRICT"), index=True
    )
    budget: Mapped[Decimal | None] = mapped_column(MONEY)


class Gift(Owned, Base):
    __tablename__ = "gifts"
    __table_args__ = (
        Index("ix_gifts_family_created", "family_id", "created_at", "id"),
        CheckConstraint("price IS NULL OR price >= 0", name="ck_gifts_price"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="ck_gifts_currency"),
    )
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str | None] = mapped_column(String(2048))
    store: Mapped[str | None] = mapped_column(String(255))
    price: Mapped[Decimal | None] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    image_url: Mapped[str | None] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(Text)


class ListItem(Owned, Base):
    __tablename__ = "list_items"
    __table_args__ = (
        Index("ix_list_items_list_created", "list_id", "created_at", "id"),
        Index("ix_list_items_family_status", "family_id", "status", "updated_at"),
        CheckConstraint("quantity >= 1", name="ck_list_items_quantity"),
    )
    list_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("gift_lists.id", ondelete="CASCADE")
    )
    # A gift still on a list cannot be deleted (CONFLICT), so no item loses its gift.
    gift_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("gifts.id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[ItemStatus] = mapped_column(
        _enum(ItemStatus, "item_status"), default=ItemStatus.IDEA
    )
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    notes: Mapped[str | None] = mapped_column(Text)


class Comment(Owned, Base):
    __tablename__ = "comments"
    __table_args__ = (
        Index("ix_comments_target", "family_id", "target", "target_id", "created_at", "id"),
        CheckConstraint(
            "char_length(body) BETWEEN 1 AND 2000", name="ck_comments_body_length"
        ),
    )
    target: Mapped[CommentTarget] = mapped_column(_enum(CommentTarget, "comment_target"))
    target_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    author_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    body: Mapped[str] = mapped_column(Text)


class Event(Base):
    """The durable activity log: one row per affected topic, written with the change."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_family_topic_seq", "family_id", "topic", "seq"),
        UniqueConstraint("family_id", "seq", name="uq_events_family_seq"),
    )
    # The row's key; never shown (its numbers would measure every family's writes).
    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    # The family's own event counter, 1, 2, 3, … in commit order, with no gaps: numbered
    # by `events.record` under the family's event lock.
    seq: Mapped[int] = mapped_column(BigInteger)
    family_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("families.id", ondelete="CASCADE")
    )
    topic: Mapped[str] = mapped_column(String(200))
    kind: Mapped[EventKind] = mapped_column(_enum(EventKind, "event_kind"))
    entity_type: Mapped[str] = mapped_column(String(50))
    entity_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    actor_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The entity as it was right after the change (None after DELETED).
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Not a column: the seq of the previous event on this topic, set when the event is
    # written and carried by the live message (None on rows read back from the table).
    prev_seq = None  # type: int | None

    @classmethod
    def published(cls, *, seq: int, family_id: uuid.UUID, topic: str, kind: EventKind,
                  entity_type: str, entity_id: uuid.UUID, actor_id: uuid.UUID | None,
                  at: datetime, payload: dict[str, Any] | None,
                  prev_seq: int | None) -> Event:
        """A transient Event as written or received, for publishing only (never added to a
        session): its values go straight into the instance's dict, without the ORM's
        constructor and its attribute events (~5 µs against ~58; 5 per item change, and
        again on receipt)."""
        if not cls.__mapper__.configured:  # the constructor would have seen to it
            configure_mappers()
        event: Event = cls.__mapper__.class_manager.new_instance()
        event.__dict__.update(seq=seq, family_id=family_id, topic=topic, kind=kind,
                              entity_type=entity_type, entity_id=entity_id, actor_id=actor_id,
                              at=at, payload=payload, prev_seq=prev_seq)
        return event


class PersistedDocument(Base):
    """A GraphQL document registered through APQ, by its SHA-256 (giftgraph.persisted).
    Not a family's: a document is code, the same for every client that sends it."""

    __tablename__ = "persisted_documents"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    document: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 server_default=text("now()"))
