"""What the read compiler (accel/compiled.py) knows: the tables behind each GraphQL type and
connection, and the SQL that writes each kind of value as the GraphQL layer serializes it.
Table and column names come from here only; every value is a bound parameter."""


from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import orjson
from graphql import (
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
)

from giftgraph.db import queries as q
from giftgraph.db.models import ItemStatus
from giftgraph.db.pagination import Order
from giftgraph.events import FAMILY_TOPIC
from giftgraph.resolvers import queries as q_dashboard

# How a column becomes its JSON value (see `scalar`).
ID, PLAIN, ENUM, MONEY, TIMESTAMP, DATE, ARRAY, TEXT, ENTITY_ID, EVENT_ID = (
    "id", "plain", "enum", "money", "timestamp", "date", "array", "text", "entity_id",
    "event_id")
# plain: JSON as it is; text: the column's text (an Event's seq); entity_id: the global ID
# of the row an event is about (its type is the event's `entity_type`); event_id: an
# Event's global ID, of its family and seq (`ids.event_id`)

Scalars = dict[str, tuple[str, str]]  # GraphQL field -> (column, kind)
COMMON: Scalars = {"id": ("id", ID), "createdAt": ("created_at", TIMESTAMP),
                    "updatedAt": ("updated_at", TIMESTAMP)}


@dataclass(frozen=True)
class ConnectionTable:
    """A Relay connection over `table`, in `order`; nested under a parent row through the
    `parent` column (None at the root)."""

    table: str
    node: str
    order: Order
    parent: str | None = None
    # argument -> (column, SQL operator): a filter when the argument is given
    filters: dict[str, tuple[str, str]] = field(default_factory=dict)
    # arguments the statement does not translate: given (not null), the executor serves
    unsupported: frozenset[str] = frozenset()
    # filters that apply with this value when their argument is null or empty
    defaults: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Table:
    name: str
    scalars: Scalars
    relations: dict[str, tuple[str, str]] = field(default_factory=dict)  # -> (type, column)
    connections: dict[str, ConnectionTable] = field(default_factory=dict)
    family: str = "family_id"  # the column that scopes a row to a family
    # Int fields counted from another table: a statement with `{row}` (the row's alias) and
    # `{a}` (a fresh alias for the counted table), as the field's loader counts.
    counts: dict[str, str] = field(default_factory=dict)


ITEMS = ConnectionTable("list_items", "ListItem", q.ITEMS, parent="list_id",
                   filters={"status": ("status", "=")})

TABLES: dict[str, Table] = {
    "Family": Table("families", {**COMMON, "name": ("name", PLAIN),
                                 "currency": ("currency", PLAIN)}, family="id"),
    "User": Table("users", {**COMMON, "email": ("email", PLAIN),
                            "displayName": ("display_name", PLAIN), "role": ("role", ENUM),
                            "isActive": ("is_active", PLAIN)},
                  relations={"family": ("Family", "family_id")}),
    "Person": Table("persons", {**COMMON, "name": ("name", PLAIN),
                                "relationship": ("relationship", PLAIN),
                                "birthday": ("birthday", DATE),
                                "interests": ("interests", ARRAY), "notes": ("notes", PLAIN)}),
    "Occasion": Table("occasions", {**COMMON, "name": ("name", PLAIN), "kind": ("kind", ENUM),
                                    "date": ("date", DATE),
                                    "description": ("description", PLAIN),
                                    "budget": ("budget", MONEY)}),
    "Gift": Table("gifts", {**COMMON, "name": ("name", PLAIN), "url": ("url", PLAIN),
                            "store": ("store", PLAIN), "price": ("price", MONEY),
                            "currency": ("currency", PLAIN), "imageUrl": ("image_url", PLAIN),
                            "description": ("description", PLAIN)}),
    "GiftList": Table("gift_lists", {**COMMON, "name": ("name", PLAIN), "kind": ("kind", ENUM),
                                     "budget": ("budget", MONEY)},
                      relations={"person": ("Person", "person_id"),
                                 "occasion": ("Occasion", "occasion_id"),
                                 "owner": ("User", "owner_id")},
                      connections={"items": ITEMS}),
    "Event": Table("events", {"id": ("seq", EVENT_ID), "seq": ("seq", TEXT),
                              "topic": ("topic", PLAIN), "kind": ("kind", ENUM),
                              "entityType": ("entity_type", PLAIN),
                              "entityId": ("entity_id", ENTITY_ID),
                              "at": ("at", TIMESTAMP)},
                   relations={"actor": ("User", "actor_id")}),
    "ListItem": Table("list_items", {**COMMON, "status": ("status", ENUM),
                                     "quantity": ("quantity", PLAIN), "notes": ("notes", PLAIN)},
                      relations={"list": ("GiftList", "list_id"), "gift": ("Gift", "gift_id"),
                                 "assignee": ("User", "assignee_id")},
                      # `Loaders.comment_counts`: the family's comments about the item (the
                      # comments' target index: family, target, target_id)
                      counts={"commentCount": "SELECT count(*) FROM comments {a} WHERE "
                                              "{a}.family_id = :gg_family AND {a}.target = "
                                              "'LIST_ITEM' AND {a}.target_id = {row}.id"}),
}

ROOT_CONNECTIONS: dict[str, ConnectionTable] = {
    "users": ConnectionTable("users", "User", q.USERS),
    "persons": ConnectionTable("persons", "Person", q.PERSONS, unsupported=frozenset({"search"})),
    "occasions": ConnectionTable("occasions", "Occasion", q.OCCASIONS,
                            filters={"kind": ("kind", "="), "from": ("date", ">="),
                                     "to": ("date", "<=")}),
    "lists": ConnectionTable("gift_lists", "GiftList", q.LISTS, filters={"kind": ("kind", "=")},
                        unsupported=frozenset({"personId", "occasionId"})),
    "gifts": ConnectionTable("gifts", "Gift", q.GIFTS, unsupported=frozenset({"search"})),
    # the activity log: one topic's events, newest first (`family` by default)
    "events": ConnectionTable("events", "Event", q.EVENTS, filters={"topic": ("topic", "=")},
                         defaults={"topic": FAMILY_TOPIC}),
}
# Root objects: (type, the condition that picks the row)
ROOT_OBJECTS: dict[str, tuple[str, str]] = {"me": ("User", "id = :gg_user"),
                                            "family": ("Family", "id = :gg_family")}

MAX_KEYS = 50  # keys in one object (a statement's size is bounded too)
MAX_KEY_CHARS = 16 * 1024  # plans are kept for documents and variables up to this size
# A longer statement is not compiled. Statements are prepared (asyncpg keeps 50 per
# connection: db.engine) and PostgreSQL holds each in up to ~120 bytes of memory per
# character of SQL, while a few kilobytes of document (aliased fragments) can make
# hundreds of kilobytes of SQL. At this cap a connection's cached statements hold at most
# ~90 MB, whatever the documents. (JSON written as text is ~25% more SQL than
# `json_build_object` for the same statement and the same memory in PostgreSQL: the cap
# moved from 12 to 15 KiB with it.)
MAX_SQL_CHARS = 15 * 1024


# A relation that may not be null and finds no row (`Compiler.relation`): a character no
# JSON the statement writes holds (`to_json` escapes control characters, and the rest is
# base64url, digits, names and dates), so that finding it in a root field's text is exact.
MISSING = "chr(1)"


class NotCompiled(Exception):
    """The operation has something this compiler does not translate."""


def same_family(alias: str, column: str) -> str:
    """The tenant check on a row that a narrower key already picks (a primary key, a
    parent's id): the row must still be the caller's family's, but no index may serve the
    check. With `= :gg_family` the planner weighs the family's index against the key's,
    and on tables that were never analyzed it can pick the family's (every row of the
    family read and filtered, once per parent row). `IS NOT DISTINCT FROM` means the same
    here (neither side is null) and is never an index condition: the key's index is the
    only one the planner can use."""
    return f"{alias}.{column} IS NOT DISTINCT FROM :gg_family"


def lit(value: str) -> str:
    """A SQL string literal. `text()` reads `:name` as a parameter: colons are escaped."""
    return "'" + value.replace("'", "''").replace(":", "\\:") + "'"


def base64url(expr: str) -> str:
    """base64url without padding, as ids.encode_id (PostgreSQL breaks lines at 76)."""
    return (f"rtrim(translate(encode(convert_to({expr}, 'UTF8'), 'base64'), "
            f"'+/' || chr(10), '-_'), '=')")


ISO_FORMAT = lit('YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')


def iso(expr: str) -> str:
    """A timestamptz as Python's isoformat() of asyncpg's UTC datetime writes it (no
    fraction when the microseconds are zero)."""
    return f"replace(to_char({expr} AT TIME ZONE 'UTC', {ISO_FORMAT}), '.000000+', '+')"


def date_text(expr: str) -> str:
    """A date as isoformat() writes it. asyncpg stores date.min and date.max as -infinity
    and infinity (and reads them back as such), where to_char() gives null."""
    return (f"CASE WHEN isfinite({expr}) THEN to_char({expr}, 'YYYY-MM-DD') "
            f"WHEN {expr} < 'epoch' THEN '0001-01-01' WHEN {expr} > 'epoch' THEN '9999-12-31' "
            f"END")


def scalar(kind: str, expr: str, type_name: str) -> str:
    """The column as its JSON text (null where the column is null: see `json_object`)."""
    if kind == ID:
        return quoted(base64url(f"{lit(type_name + ':')} || {expr}::text"))
    if kind in (ENUM, MONEY, TEXT):  # names, numbers' text and digits: nothing to escape
        return quoted(f"{expr}::text")
    if kind == ENTITY_ID:
        table = expr.rpartition(".")[0]
        return quoted(base64url(f"{table}.entity_type || {lit(':')} || {expr}::text"))
    if kind == EVENT_ID:
        table = expr.rpartition(".")[0]
        return quoted(base64url(f"{lit('Event:')} || {table}.family_id::text || {lit(':')} "
                                f"|| {expr}::text"))
    if kind == TIMESTAMP:
        return quoted(iso(expr))
    if kind == DATE:
        return quoted(date_text(expr))
    if kind == ARRAY:
        return f"coalesce(array_to_json({expr})::text, '[]')"
    return f"to_json({expr})::text"


def quoted(expr: str) -> str:
    """A JSON string of text that needs no escaping (base64url, digits, names, ISO dates)."""
    return f"('\"' || {expr} || '\"')"


def json_text(value: str) -> str:
    """The JSON string of a constant."""
    return lit(orjson.dumps(value).decode())


def cursor_expr(order: Order, alias: str) -> str:
    """`Order.encode` of the row: base64url of orjson's `[name, *keys]`."""
    parts = [lit(orjson.dumps(order.name).decode())]
    for key, python_type in zip(order.keys, order.types(), strict=True):
        column = f"{alias}.{key.key}"
        if python_type is datetime:
            parts.append(f"'\"' || {iso(column)} || '\"'")
        elif python_type is date:
            parts.append(f"'\"' || {date_text(column)} || '\"'")
        elif python_type is int:
            parts.append(f"{column}::text")
        elif python_type is str:
            parts.append(f"to_json({column})::text")
        else:  # uuid
            parts.append(f"'\"' || {column}::text || '\"'")
    return base64url("'[' || " + " || ',' || ".join(parts) + " || ']'")


NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")


def json_object(pairs: list[tuple[str, str]]) -> str:
    """The JSON object of (key, JSON text) pairs, written by concatenation: a value that
    is null (a relation's missing row, a null column) is JSON null. Text, where
    `json_build_object` copied each value into each enclosing object (13-25% of a nested
    read's time in PostgreSQL: bench/NOTES.md)."""
    if len(pairs) > MAX_KEYS:
        raise NotCompiled("too many keys in one object")
    if not all(NAME.fullmatch(key) for key, _ in pairs):  # GraphQL names, as parsed
        raise NotCompiled("not a name")
    if not pairs:
        return "'{}'"
    parts = [f"{lit(('{' if i == 0 else ',') + orjson.dumps(k).decode() + ':')} || "
             f"coalesce({v}, 'null')" for i, (k, v) in enumerate(pairs)]
    return "(" + " || ".join(parts) + " || '}')"


def json_array(element: str, order_by: str, shown: str = "") -> str:
    """The JSON array of an aggregate's `element`s (JSON text) in `order_by`; `shown`: a
    FILTER clause. An empty array where no row is shown."""
    return (f"coalesce('[' || string_agg({element}, ',' ORDER BY {order_by}) {shown} "
            "|| ']', '[]')")


def json_rows(element: str, source: str, order_by: str) -> str:
    """The JSON array of `element` (JSON text, never null) over the rows of `source` (a
    FROM clause with its WHERE, LIMIT), in `order_by`. `ARRAY(SELECT ...)` keeps the
    subquery's order, so nothing is sorted again, where `string_agg(... ORDER BY)` sorts
    each page inside the aggregate (bench/NOTES.md, "W1's statement")."""
    return (f"('[' || array_to_string(ARRAY(SELECT {element} FROM {source} "  # noqa: S608
            f"ORDER BY {order_by}), ',') || ']')")  # (the compiler's parts, never values)


def object_type(gtype: GraphQLOutputType) -> GraphQLObjectType:
    if isinstance(gtype, GraphQLNonNull):
        gtype = gtype.of_type
    if not isinstance(gtype, GraphQLObjectType):
        raise NotCompiled("not an object type")
    return gtype


def bound_value(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


# The dashboard's lists: (type, condition, order, limit), as resolvers/queries.py
DASHBOARD_LISTS: dict[str, tuple[str, str, str, int]] = {
    "nextOccasions": ("Occasion", "{a}.date >= :gg_today", "{a}.date, {a}.id",
                      q_dashboard.NEXT_OCCASIONS),
    "recentIdeas": ("ListItem", "{a}.status = 'IDEA'", "{a}.created_at DESC, {a}.id DESC",
                    q_dashboard.RECENT_IDEAS),
    "activity": ("Event", f"{{a}}.topic = {lit(FAMILY_TOPIC)}", "{a}.seq DESC",
                 q_dashboard.RECENT_ACTIVITY),
}
STATUSES = {s.value.lower(): s.value for s in ItemStatus}  # Pipeline field -> status
# Money on the rows of list items `i` and gifts `g`, as resolvers/queries.py and
# queries.Spending: an item's amount; what counts as spent; `spent`, the sum of the items
# priced in the family's currency.
AMOUNT = "coalesce(g.price, 0) * i.quantity"
SPENT_ITEM = "i.status IN ('PURCHASED', 'RECEIVED')"
FAMILY_CURRENCY = "(SELECT f.currency FROM families f WHERE f.id = :gg_family)"
SPENT = (f"coalesce(sum(CASE WHEN {SPENT_ITEM} AND g.currency = {FAMILY_CURRENCY} "
          f"THEN {AMOUNT} ELSE 0 END), 0)")


def items_of(lists: str, where: str = "") -> str:
    """Joins for the items `i` of each list of the alias `lists`, each with its gift `g`
    (price, currency), as db.progress.items_of: by the list's index and the gift's key,
    LATERAL and OFFSET 0 so that the planner keeps them lookups per row, and of the
    caller's family only (`same_family`: an item of another family on the list, or an item
    whose gift is another family's, is left out). `where`: a condition on the item `i`,
    checked before its gift is read."""
    condition = f" AND {where}" if where else ""
    return ("CROSS JOIN LATERAL (SELECT i.id, i.status, i.quantity, i.family_id, "  # noqa: S608
            f"i.gift_id FROM list_items i WHERE i.list_id = {lists}.id AND "
            f"{same_family('i', 'family_id')}{condition} OFFSET 0) i "
            "CROSS JOIN LATERAL (SELECT g.price, g.currency FROM gifts g "
            f"WHERE g.id = i.gift_id AND {same_family('g', 'family_id')} OFFSET 0) g")


# The PURCHASED and RECEIVED items of the family's lists for upcoming occasions (the
# dashboard's money), with their gifts: each list's occasion by its key (of the family).
UPCOMING_ITEMS = (f"FROM gift_lists gl {items_of('gl', SPENT_ITEM)} "  # noqa: S608
                  "WHERE gl.family_id = :gg_family AND i.family_id = :gg_family "
                  "AND (SELECT o.date FROM occasions o WHERE o.id = gl.occasion_id "
                  f"AND {same_family('o', 'family_id')}) >= :gg_today")


