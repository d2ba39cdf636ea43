"""Topics and the Event log: written in the mutation's transaction, published after commit."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, NamedTuple, TypedDict

from sqlalchemy import (
    ARRAY,
    BigInteger,
    String,
    Table,
    Text,
    bindparam,
    column,
    func,
    inspect,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from giftgraph.db import models as m
from giftgraph.db.session import EVENT_LOCK_KEY, PENDING_KEY, Prepared, Unit, execute_in
from giftgraph.ids import encode_id

FAMILY_TOPIC = "family"
LIST_ITEMS_TOPIC = "list-items:all"
# Never part of an event snapshot.
_SECRET_COLUMNS = frozenset({"password_hash"})

ENTITY_TYPES: dict[type[m.Base], str] = {
    m.Family: "Family",
    m.User: "User",
    m.Person: "Person",
    m.Occasion: "Occasion",
    m.GiftList: "GiftList",
    m.Gift: "Gift",
    m.ListItem: "ListItem",
    m.Comment: "Comment",
}
MODELS: dict[str, type[m.Base]] = {v: k for k, v in ENTITY_TYPES.items()}


def list_topic(list_id: uuid.UUID) -> str:
    return f"list:{encode_id('GiftList', list_id)}"


def person_topic(person_id: uuid.UUID) -> str:
    return f"person:{encode_id('Person', person_id)}"


def occasion_topic(occasion_id: uuid.UUID) -> str:
    return f"occasion:{encode_id('Occasion', occasion_id)}"


def comments_topic(target: m.CommentTarget, target_gid: str) -> str:
    return f"comments:{target.value}:{target_gid}"


def list_topics(gift_list: m.GiftList) -> list[str]:
    """Topics that hear about a list and everything on it."""
    return topics_of_list(gift_list.id, gift_list.person_id, gift_list.occasion_id)


def topics_of_list(list_id: uuid.UUID, person_id: uuid.UUID | None,
                   occasion_id: uuid.UUID | None) -> list[str]:
    """`list_topics` of a list with these keys."""
    topics = [list_topic(list_id)]
    if person_id:
        topics.append(person_topic(person_id))
    if occasion_id:
        topics.append(occasion_topic(occasion_id))
    return topics


_AS_IS = frozenset({str, int, bool, float})  # JSON as they are (not their subclasses)


def _jsonable(v: Any) -> Any:
    if v is None or type(v) in _AS_IS:
        return v
    if isinstance(v, uuid.UUID | Decimal):
        return str(v)
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, Enum):
        return v.value
    return v


def snapshot(obj: m.Base) -> dict[str, Any]:
    """The row's column values as JSON (secrets left out)."""
    return {key: _jsonable(getattr(obj, key)) for key in _snapshot_keys(type(obj))}


@functools.cache
def _snapshot_keys(model: type[m.Base]) -> tuple[str, ...]:
    """The attributes a snapshot of a `model` row holds, worked out once per model (asking
    the mapper for every event was ~1% of a mutation's CPU)."""
    return tuple(attr.key for attr in inspect(model).column_attrs
                 if attr.key not in _SECRET_COLUMNS)


def from_snapshot(entity_type: str, data: dict[str, Any]) -> m.Base | None:
    """A transient model instance rebuilt from a snapshot (no database round trip)."""
    model = MODELS.get(entity_type)
    if model is None:
        return None
    values: dict[str, Any] = {}
    for attr in inspect(model).column_attrs:
        if attr.key not in data:
            continue
        raw = data[attr.key]
        column = attr.columns[0]
        values[attr.key] = _parse(column.type.python_type, raw, column.type)
    return model(**values)


def _parse(py: type, raw: Any, sa_type: Any) -> Any:
    if raw is None:
        return None
    enum_class = getattr(sa_type, "enum_class", None)
    if enum_class is not None:
        return enum_class(raw)
    if py is uuid.UUID:
        return uuid.UUID(raw)
    if py is datetime:
        return datetime.fromisoformat(raw)
    if py is date:
        return date.fromisoformat(raw)
    if py is Decimal:
        return Decimal(raw)
    return raw


async def record(
    session: Unit,
    *,
    family_id: uuid.UUID,
    actor_id: uuid.UUID | None,
    kind: m.EventKind,
    entity: m.Base,
    topics: Iterable[str],
    changes: dict[str, Any] | None = None,
) -> list[m.Event]:
    """Write one Event per topic (plus `family`) in the current transaction.

    A per-family advisory lock, held until COMMIT, makes `seq` order equal commit
    order within a family, so a subscriber resuming `since` a seq never skips an
    event that committed late with a smaller seq. Under it each transaction numbers its
    events after the family's last committed one: `seq` counts 1, 2, 3, … per family,
    with no gap, not even for a transaction that rolled back.

    `changes` (attribute -> new value), for a row loaded and locked already: they are
    written by one UPDATE that also takes the lock (its RETURNING), one round trip where
    an ORM flush and the lock were two; the entity then holds them as committed values.
    Not when a foreign key is among them: PostgreSQL checks it (a KEY SHARE lock on the
    referenced row) at the end of the statement, after the RETURNING, and every mutation
    must take row locks before the family's lock (else `updateGift`, which holds the gift
    and waits for the family, and an item moving to that gift, which holds the family and
    waits for the gift, deadlock); the lock is then a statement of its own, after it.
    """
    await session.flush()
    if changes and await _update(session, entity, changes, family_id):
        session.info[EVENT_LOCK_KEY] = True
    else:
        await _lock_family_events(session, family_id)
    payload = None if kind == m.EventKind.DELETED else snapshot(entity)
    entity_type = ENTITY_TYPES[type(entity)]
    entity_id = entity.id  # type: ignore[attr-defined]
    unique_topics = list(dict.fromkeys([*topics, FAMILY_TOPIC]))
    at = m.utcnow()
    # Each event names the previous event on its topic (under the lock: exact), so a
    # subscriber that receives events out of order (two instances publishing through one
    # broker) sees the gap and fetches what it lacks from this table instead of losing it.
    inserted = await execute_in(session, INSERT_EVENTS, {
        "topics": unique_topics, "family_id": family_id, "kind": kind,
        "entity_type": entity_type, "entity_id": entity_id, "actor_id": actor_id, "at": at,
        "payload": payload,
    })
    rows = []
    for seq, topic, prev in inserted:
        rows.append(m.Event.published(
            seq=seq, family_id=family_id, topic=topic, kind=kind, entity_type=entity_type,
            entity_id=entity_id, actor_id=actor_id, at=at, payload=payload, prev_seq=prev or 0))
    session.info.setdefault(PENDING_KEY, []).extend(rows)
    return rows


async def _lock_family_events(session: Unit, family_id: uuid.UUID) -> None:
    """The family's event lock (see `record`), once per transaction."""
    if not session.info.get(EVENT_LOCK_KEY):
        await execute_in(session, LOCK_FAMILY_EVENTS, {"f": str(family_id)})
        session.info[EVENT_LOCK_KEY] = True


LOCK_FAMILY_EVENTS = Prepared(text("SELECT pg_advisory_xact_lock(hashtextextended(:f, 0))")
                              .bindparams(bindparam("f", type_=Text())))


class Cascaded(NamedTuple):
    """A row a change cascaded to, and the event `record_many` writes for it."""

    kind: m.EventKind
    entity: m.Base
    topics: Iterable[str]


class _BatchEntry(TypedDict):
    """One event of `record_many`'s batch, as the JSON that INSERT_MANY_EVENTS reads."""

    kind: str
    entity_type: str
    entity_id: str
    payload: dict[str, Any] | None
    topics: list[str]


async def record_many(
    session: AsyncSession,
    *,
    family_id: uuid.UUID,
    actor_id: uuid.UUID | None,
    entries: Iterable[Cascaded],
) -> list[m.Event]:
    """`record` for many rows at once (those a change cascaded to: lists unlinked from a
    deleted person, items deleted with their list, …): each (kind, row, topics) gets its
    events, on its topics plus `family`, as `record` would write them, and all of them in
    one statement. The rows were changed already (and so locked: row locks come before the
    family's lock)."""
    batch: list[_BatchEntry] = []
    for kind, entity, topics in entries:
        batch.append({
            "kind": kind.value, "entity_type": ENTITY_TYPES[type(entity)],
            "entity_id": str(entity.id),  # type: ignore[attr-defined]
            "payload": None if kind == m.EventKind.DELETED else snapshot(entity),
            "topics": list(dict.fromkeys([*topics, FAMILY_TOPIC])),
        })
    if not batch:
        return []
    await session.flush()
    await _lock_family_events(session, family_id)
    at = m.utcnow()
    inserted = await execute_in(session, INSERT_MANY_EVENTS, {
        "batch": batch, "family_id": family_id, "actor_id": actor_id, "at": at})
    order = [entry for entry in batch for _ in entry["topics"]]  # seq order
    rows = []
    for (seq, topic, prev), entry in zip(inserted, order, strict=True):
        rows.append(m.Event.published(
            seq=seq, family_id=family_id, topic=topic, kind=m.EventKind(entry["kind"]),
            entity_type=entry["entity_type"], entity_id=uuid.UUID(entry["entity_id"]),
            actor_id=actor_id, at=at, payload=entry["payload"], prev_seq=prev or 0))
    session.info.setdefault(PENDING_KEY, []).extend(rows)
    return rows


async def _update(session: Unit, entity: m.Base, changes: dict[str, Any],
                  family_id: uuid.UUID) -> bool:
    """Write `changes` to the entity's row; True when the family's lock came with it."""
    model = type(entity)
    stamped, pk_key = _update_shape(model)
    values = dict(changes)
    if stamped:
        values["updated_at"] = m.utcnow()
    stmt, with_lock = _update_statement(model, tuple(values))
    params = {f"v_{key}": value for key, value in values.items()}
    params["pk"] = getattr(entity, pk_key)
    params["family"] = str(family_id)
    if len(await execute_in(session, stmt, params)) != 1:  # no row, no lock: never go on
        raise RuntimeError(f"{model.__name__} row to update not found")
    for key, value in values.items():
        set_committed_value(entity, key, value)
    return with_lock


@functools.cache
def _update_shape(model: type[m.Base]) -> tuple[bool, str]:
    """Whether `model` has an `updated_at` the UPDATE sets, and its primary key's attribute."""
    mapper = inspect(model)
    pk = mapper.primary_key[0]
    return "updated_at" in mapper.column_attrs, mapper.get_property_by_column(pk).key


@functools.cache
def _update_statement(model: type[m.Base], keys: tuple[str, ...]) -> tuple[Prepared, bool]:
    """The UPDATE of these attributes of one row, built once per model and set of keys
    (building and keying it per call was ~3% of a mutation's CPU), and whether its
    RETURNING takes the family's lock (not when a foreign key is among them)."""
    mapper = inspect(model)
    columns = {key: mapper.column_attrs[key].columns[0] for key in keys}
    with_lock = not any(col.foreign_keys for col in columns.values())
    pk = mapper.primary_key[0]
    table = mapper.local_table
    if not isinstance(table, Table):  # every mapped class here maps one plain table
        raise TypeError(f"{model.__name__} is not mapped to a table")
    stmt = (update(table)
            .where(pk == bindparam("pk", type_=pk.type))
            .values({col.name: bindparam(f"v_{key}", type_=col.type)
                     for key, col in columns.items()})
            .returning(func.pg_advisory_xact_lock(func.hashtextextended(
                bindparam("family", type_=Text()), 0)) if with_lock else pk))
    return Prepared(stmt), with_lock


_EVENT = m.Event.__table__.c
# One row per topic, in the topics' order, numbered after the family's last event (`seq`
# is the family's own counter: under the family's lock this statement's snapshot holds
# every committed event of the family, and a rolled-back transaction's numbers are used
# again by the next, so there is no gap), and with each the seq of the previous event
# on its topic (the sub-statements of one statement share its snapshot, so neither
# `last` nor `prev` can see the rows being inserted). One round trip, no ORM unit of
# work: it ran as a SELECT of the previous seqs plus an ORM flush of the new rows.
INSERT_EVENTS = Prepared(text("""
    WITH t AS (
        SELECT u.topic, u.ord FROM unnest(:topics) WITH ORDINALITY AS u(topic, ord)
    ), last AS (
        SELECT coalesce(max(seq), 0) AS seq FROM events WHERE family_id = :family_id
    ), ins AS (
        INSERT INTO events (family_id, seq, topic, kind, entity_type, entity_id, actor_id,
                            at, payload)
        SELECT :family_id, last.seq + t.ord, t.topic, :kind, :entity_type, :entity_id,
               :actor_id, :at, :payload
        FROM t CROSS JOIN last ORDER BY t.ord
        RETURNING seq, topic
    )
    SELECT ins.seq, ins.topic,
           (SELECT max(e.seq) FROM events e
            WHERE e.family_id = :family_id AND e.topic = ins.topic) AS prev
    FROM ins ORDER BY ins.seq
""").bindparams(
    # text[], not varchar(200)[]: an explicit cast would silently cut a longer topic, while
    # the INSERT's assignment to the column rejects it.
    bindparam("topics", type_=ARRAY(Text())),
    bindparam("family_id", type_=_EVENT.family_id.type),
    bindparam("kind", type_=_EVENT.kind.type),
    bindparam("entity_type", type_=_EVENT.entity_type.type),
    bindparam("entity_id", type_=_EVENT.entity_id.type),
    bindparam("actor_id", type_=_EVENT.actor_id.type),
    bindparam("at", type_=_EVENT.at.type),
    bindparam("payload", type_=_EVENT.payload.type),
).columns(column("seq", BigInteger), column("topic", String), column("prev", BigInteger)))


# INSERT_EVENTS for many rows: `batch` is a JSON array of {kind, entity_type, entity_id,
# payload, topics}; one event per row and topic, in that order (seq order). `prev` is the
# previous event on the topic: one written earlier by this statement (lag), else the stored
# one.
INSERT_MANY_EVENTS = Prepared(text("""
    WITH t AS (
        SELECT b.entry, b.n, u.topic, u.ord
        FROM jsonb_array_elements(:batch) WITH ORDINALITY AS b(entry, n)
        CROSS JOIN LATERAL jsonb_array_elements_text(b.entry -> 'topics')
            WITH ORDINALITY AS u(topic, ord)
    ), last AS (
        SELECT coalesce(max(seq), 0) AS seq FROM events WHERE family_id = :family_id
    ), ins AS (
        INSERT INTO events (family_id, seq, topic, kind, entity_type, entity_id, actor_id,
                            at, payload)
        SELECT :family_id, last.seq + row_number() OVER (ORDER BY t.n, t.ord), t.topic,
               (t.entry ->> 'kind')::event_kind, t.entry ->> 'entity_type',
               (t.entry ->> 'entity_id')::uuid, :actor_id, :at,
               nullif(t.entry -> 'payload', 'null'::jsonb)
        FROM t CROSS JOIN last ORDER BY t.n, t.ord
        RETURNING seq, topic
    )
    SELECT ins.seq, ins.topic,
           coalesce(lag(ins.seq) OVER (PARTITION BY ins.topic ORDER BY ins.seq),
                    (SELECT max(e.seq) FROM events e
                     WHERE e.family_id = :family_id AND e.topic = ins.topic)) AS prev
    FROM ins ORDER BY ins.seq
""").bindparams(
    bindparam("batch", type_=_EVENT.payload.type),
    bindparam("family_id", type_=_EVENT.family_id.type),
    bindparam("actor_id", type_=_EVENT.actor_id.type),
    bindparam("at", type_=_EVENT.at.type),
).columns(column("seq", BigInteger), column("topic", String), column("prev", BigInteger)))
