"""Read queries compiled to one SQL statement whose result is the response's JSON.

A nested read (lists, each with its person and a page of items, each with its gift and
assignee) resolves a few thousand fields. Executed field by field, the Python around each
of them costs more than the data: the DataLoaders, the objects built from rows, the
executor's per-field work and the serialization. Here, as PostGraphile and Hasura do, the
operation becomes one statement in which PostgreSQL builds the JSON (`json_build_object`
for an object, `json_agg` for a page of a connection, a correlated subquery for a
relation), and the server writes that JSON into the response as it is.

Only what the tables below describe compiles: the Relay connections over the family's
users, persons, occasions, gift lists, gifts and events, a list's items, the relations between
them, their plain fields, `me`, `family` and the `dashboard` (its lists, counts and sums as
resolvers/queries.py computes them; an event's `node`, a snapshot, is not compiled).
Anything else in the operation (another root field, an argument this file does not
translate, a field with its own resolver, a cursor that does not decode, page arguments
that are an error) leaves the whole operation to the executor (schema/execution.py),
which produces exactly what it always has, errors included. The compiled statement reads
what the resolvers read, scoped the same way: every table is read with `family_id` = the
caller's family, so a relation or a page can never reach another family's rows.

Values are written as the GraphQL layer serializes them (checked field by field against
the executor in tests/integration/test_compiled_reads.py): global IDs are
base64url("Type:uuid") without padding, DateTime is `datetime.isoformat()` in UTC, Date is
ISO, Decimal is its text, enums are their names (which equal the stored values), and
cursors are the executor's bytes (`Order.encode`).

The statement is text: table and column names come from the tables below, aliases are
generated, response keys are GraphQL names (checked), and every value from the operation
or the caller (family, user, page sizes, cursors, filters) is a bound parameter.
"""
# ruff: noqa: S608 - statements built from the tables' names, never from values (above)

from __future__ import annotations

import enum
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import orjson
from graphql import (
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    OperationType,
)
from graphql.execution.collect_fields import FieldDetailsList, collect_fields
from graphql.execution.values import get_argument_values
from sqlalchemy import TextClause, text
from starlette.websockets import WebSocket

from giftgraph.db import queries as q
from giftgraph.db.models import ItemStatus
from giftgraph.db.pagination import Order, PageArgs
from giftgraph.events import FAMILY_TOPIC
from giftgraph.resolvers import queries as q_dashboard

if TYPE_CHECKING:
    from giftgraph.schema.execution import ExecutionContext

# How a column becomes its JSON value (see `_scalar`).
ID, PLAIN, ENUM, MONEY, TIMESTAMP, DATE, ARRAY, TEXT, ENTITY_ID, EVENT_ID = (
    "id", "plain", "enum", "money", "timestamp", "date", "array", "text", "entity_id",
    "event_id")
# plain: JSON as it is; text: the column's text (an Event's seq); entity_id: the global ID
# of the row an event is about (its type is the event's `entity_type`); event_id: an
# Event's global ID, of its family and seq (`ids.event_id`)

Scalars = dict[str, tuple[str, str]]  # GraphQL field -> (column, kind)
_COMMON: Scalars = {"id": ("id", ID), "createdAt": ("created_at", TIMESTAMP),
                    "updatedAt": ("updated_at", TIMESTAMP)}


@dataclass(frozen=True)
class Connection:
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
    connections: dict[str, Connection] = field(default_factory=dict)
    family: str = "family_id"  # the column that scopes a row to a family


ITEMS = Connection("list_items", "ListItem", q.ITEMS, parent="list_id",
                   filters={"status": ("status", "=")})

TABLES: dict[str, Table] = {
    "Family": Table("families", {**_COMMON, "name": ("name", PLAIN),
                                 "currency": ("currency", PLAIN)}, family="id"),
    "User": Table("users", {**_COMMON, "email": ("email", PLAIN),
                            "displayName": ("display_name", PLAIN), "role": ("role", ENUM),
                            "isActive": ("is_active", PLAIN)},
                  relations={"family": ("Family", "family_id")}),
    "Person": Table("persons", {**_COMMON, "name": ("name", PLAIN),
                                "relationship": ("relationship", PLAIN),
                                "birthday": ("birthday", DATE),
                                "interests": ("interests", ARRAY), "notes": ("notes", PLAIN)}),
    "Occasion": Table("occasions", {**_COMMON, "name": ("name", PLAIN), "kind": ("kind", ENUM),
                                    "date": ("date", DATE),
                                    "description": ("description", PLAIN),
                                    "budget": ("budget", MONEY)}),
    "Gift": Table("gifts", {**_COMMON, "name": ("name", PLAIN), "url": ("url", PLAIN),
                            "store": ("store", PLAIN), "price": ("price", MONEY),
                            "currency": ("currency", PLAIN), "imageUrl": ("image_url", PLAIN),
                            "description": ("description", PLAIN)}),
    "GiftList": Table("gift_lists", {**_COMMON, "name": ("name", PLAIN), "kind": ("kind", ENUM),
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
    "ListItem": Table("list_items", {**_COMMON, "status": ("status", ENUM),
                                     "quantity": ("quantity", PLAIN), "notes": ("notes", PLAIN)},
                      relations={"list": ("GiftList", "list_id"), "gift": ("Gift", "gift_id"),
                                 "assignee": ("User", "assignee_id")}),
}

ROOT_CONNECTIONS: dict[str, Connection] = {
    "users": Connection("users", "User", q.USERS),
    "persons": Connection("persons", "Person", q.PERSONS, unsupported=frozenset({"search"})),
    "occasions": Connection("occasions", "Occasion", q.OCCASIONS,
                            filters={"kind": ("kind", "="), "from": ("date", ">="),
                                     "to": ("date", "<=")}),
    "lists": Connection("gift_lists", "GiftList", q.LISTS, filters={"kind": ("kind", "=")},
                        unsupported=frozenset({"personId", "occasionId"})),
    "gifts": Connection("gifts", "Gift", q.GIFTS, unsupported=frozenset({"search"})),
    # the activity log: one topic's events, newest first (`family` by default)
    "events": Connection("events", "Event", q.EVENTS, filters={"topic": ("topic", "=")},
                         defaults={"topic": FAMILY_TOPIC}),
}
# Root objects: (type, the condition that picks the row)
ROOT_OBJECTS: dict[str, tuple[str, str]] = {"me": ("User", "id = :gg_user"),
                                            "family": ("Family", "id = :gg_family")}

MAX_KEYS = 50  # json_build_object takes at most 100 arguments
MAX_KEY_CHARS = 16 * 1024  # plans are kept for documents and variables up to this size
# A longer statement is not compiled. Statements are prepared (SQLAlchemy keeps 100 per
# connection) and PostgreSQL holds each in ~80 bytes of memory per character of SQL (the
# benchmark's nested read: 1.3 KB of SQL, 130 KB), while a few kilobytes of document
# (aliased fragments) can make hundreds of kilobytes of SQL. At this cap a connection's
# cached statements hold at most ~100 MB, whatever the documents.
MAX_SQL_CHARS = 12 * 1024


class NotCompiled(Exception):
    """The operation has something this compiler does not translate."""


def lit(value: str) -> str:
    """A SQL string literal. `text()` reads `:name` as a parameter: colons are escaped."""
    return "'" + value.replace("'", "''").replace(":", "\\:") + "'"


def _base64url(expr: str) -> str:
    """base64url without padding, as ids.encode_id (PostgreSQL breaks lines at 76)."""
    return (f"rtrim(translate(encode(convert_to({expr}, 'UTF8'), 'base64'), "
            f"'+/' || chr(10), '-_'), '=')")


ISO_FORMAT = lit('YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')


def _iso(expr: str) -> str:
    """A timestamptz as Python's isoformat() of asyncpg's UTC datetime writes it (no
    fraction when the microseconds are zero)."""
    return f"replace(to_char({expr} AT TIME ZONE 'UTC', {ISO_FORMAT}), '.000000+', '+')"


def _date(expr: str) -> str:
    """A date as isoformat() writes it. asyncpg stores date.min and date.max as -infinity
    and infinity (and reads them back as such), where to_char() gives null."""
    return (f"CASE WHEN isfinite({expr}) THEN to_char({expr}, 'YYYY-MM-DD') "
            f"WHEN {expr} < 'epoch' THEN '0001-01-01' WHEN {expr} > 'epoch' THEN '9999-12-31' "
            f"END")


def _scalar(kind: str, expr: str, type_name: str) -> str:
    if kind == ID:
        return _base64url(f"{lit(type_name + ':')} || {expr}::text")
    if kind in (ENUM, MONEY, TEXT):
        return f"{expr}::text"
    if kind == ENTITY_ID:
        table = expr.rpartition(".")[0]
        return _base64url(f"{table}.entity_type || {lit(':')} || {expr}::text")
    if kind == EVENT_ID:
        table = expr.rpartition(".")[0]
        return _base64url(f"{lit('Event:')} || {table}.family_id::text || {lit(':')} "
                          f"|| {expr}::text")
    if kind == TIMESTAMP:
        return _iso(expr)
    if kind == DATE:
        return _date(expr)
    if kind == ARRAY:
        return f"coalesce(array_to_json({expr}), '[]'::json)"
    return expr


def _cursor(order: Order, alias: str) -> str:
    """`Order.encode` of the row: base64url of orjson's `[name, *keys]`."""
    parts = [lit(orjson.dumps(order.name).decode())]
    for key, python_type in zip(order.keys, order.types(), strict=True):
        column = f"{alias}.{key.key}"
        if python_type is datetime:
            parts.append(f"'\"' || {_iso(column)} || '\"'")
        elif python_type is date:
            parts.append(f"'\"' || {_date(column)} || '\"'")
        elif python_type is int:
            parts.append(f"{column}::text")
        elif python_type is str:
            parts.append(f"to_json({column})::text")
        else:  # uuid
            parts.append(f"'\"' || {column}::text || '\"'")
    return _base64url("'[' || " + " || ',' || ".join(parts) + " || ']'")


_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")


def _object(pairs: list[tuple[str, str]]) -> str:
    if len(pairs) > MAX_KEYS:
        raise NotCompiled("too many keys in one object")
    if not all(_NAME.fullmatch(key) for key, _ in pairs):  # GraphQL names, as parsed
        raise NotCompiled("not a name")
    return "json_build_object(" + ", ".join(f"{lit(k)}, {v}" for k, v in pairs) + ")"


def _object_type(gtype: GraphQLOutputType) -> GraphQLObjectType:
    if isinstance(gtype, GraphQLNonNull):
        gtype = gtype.of_type
    if not isinstance(gtype, GraphQLObjectType):
        raise NotCompiled("not an object type")
    return gtype


def _value(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


# The dashboard's lists: (type, condition, order, limit), as resolvers/queries.py
_DASHBOARD_LISTS: dict[str, tuple[str, str, str, int]] = {
    "nextOccasions": ("Occasion", "{a}.date >= :gg_today", "{a}.date, {a}.id",
                      q_dashboard.NEXT_OCCASIONS),
    "recentIdeas": ("ListItem", "{a}.status = 'IDEA'", "{a}.created_at DESC, {a}.id DESC",
                    q_dashboard.RECENT_IDEAS),
    "activity": ("Event", f"{{a}}.topic = {lit(FAMILY_TOPIC)}", "{a}.seq DESC",
                 q_dashboard.RECENT_ACTIVITY),
}
_STATUSES = {s.value.lower(): s.value for s in ItemStatus}  # Pipeline field -> status
# Money on the rows of list items `i` and gifts `g`, as resolvers/queries.py and
# queries.Spending: an item's amount; what counts as spent; `spent`, the sum of the items
# priced in the family's currency.
_AMOUNT = "coalesce(g.price, 0) * i.quantity"
_SPENT_ITEM = "i.status IN ('PURCHASED', 'RECEIVED')"
_FAMILY_CURRENCY = "(SELECT f.currency FROM families f WHERE f.id = :gg_family)"
_SPENT = (f"coalesce(sum(CASE WHEN {_SPENT_ITEM} AND g.currency = {_FAMILY_CURRENCY} "
          f"THEN {_AMOUNT} ELSE 0 END), 0)")
# The items of lists for upcoming occasions (the dashboard's money), joined to their gifts.
_UPCOMING_ITEMS = ("FROM list_items i JOIN gift_lists gl ON gl.id = i.list_id "
                   "JOIN occasions o ON o.id = gl.occasion_id JOIN gifts g ON g.id = i.gift_id "
                   "WHERE i.family_id = :gg_family AND o.date >= :gg_today")


class Compiler:
    """One operation's statement. Every value from the operation is a parameter."""

    def __init__(self, ec: ExecutionContext) -> None:
        self.ec = ec
        self.params: dict[str, Any] = {}
        self.aliases = 0
        settings = ec.context_value.settings
        self.default_page, self.max_page = settings.default_page_size, settings.max_page_size

    def param(self, value: Any) -> str:
        name = f"gg_{len(self.params)}"
        self.params[name] = value
        return ":" + name

    def alias(self) -> str:
        self.aliases += 1
        return f"t{self.aliases}"

    def root(self) -> str:
        """The statement: one row of the response's `data` as JSON text, and whether a
        root object that may not be null is missing (then the executor serves, and
        reports it)."""
        ec = self.ec
        root_type = ec.schema.get_root_type(OperationType.QUERY)
        if root_type is None:
            raise NotCompiled("no query type")
        grouped, defers, _ = collect_fields(ec.schema, ec.fragments, ec.variable_values,
                                            root_type, ec.operation, ec.hide_suggestions)
        if defers:
            raise NotCompiled("@defer")
        pairs, columns, missing = [], [], []
        for key, details in grouped.items():
            node = details[0].node
            name = node.name.value
            if name == "__typename":
                pairs.append((key, lit(root_type.name)))
                continue
            gfield = root_type.fields.get(name)
            if gfield is None:
                raise NotCompiled(name)
            if name in ROOT_CONNECTIONS:
                args = self.arguments(gfield, details)
                expr = self.connection(ROOT_CONNECTIONS[name], None, args, gfield.type, details)
            elif name in ROOT_OBJECTS:
                if name == "me" and isinstance(getattr(ec.context_value, "request", None),
                                               WebSocket):
                    # A socket's `me` is the user its connection_init authenticated, as the
                    # executor answers it, not the row as it is now.
                    raise NotCompiled("me on a socket")
                type_name, condition = ROOT_OBJECTS[name]
                table, a = TABLES[type_name], self.alias()
                fields = self.fields(type_name, a, _object_type(gfield.type), details)
                expr = (f"(SELECT {fields} FROM {table.name} {a} "
                        f"WHERE {a}.{condition} AND {a}.{table.family} = :gg_family)")
                if isinstance(gfield.type, GraphQLNonNull):
                    missing.append(f"r.c{len(columns)} IS NULL")
            elif name == "dashboard":
                expr = self.dashboard(_object_type(gfield.type), details)
            else:
                raise NotCompiled(name)
            pairs.append((key, f"r.c{len(columns)}"))
            columns.append(f"{expr} AS c{len(columns)}")
        # Each root field is computed once, in `r` (OFFSET 0: not merged into the outer
        # query, where the null check would compute it again).
        inner = f"(SELECT {', '.join(columns)} OFFSET 0) AS r" if columns else "(SELECT) AS r"
        return (f"SELECT {_object(pairs)}::text, {' OR '.join(missing) or 'false'} "
                f"FROM {inner}")

    def object(self, otype: GraphQLObjectType, details: FieldDetailsList,
               part: Callable[[str, FieldDetailsList], str]) -> str:
        """The JSON object of the fields selected on `otype`: `__typename` is the type's
        name, any other field's SQL is `part(name, its details)`, which raises NotCompiled
        for a field it does not translate."""
        grouped, defers, _ = self.ec.collect_subfields(otype, details)
        if defers:
            raise NotCompiled("@defer")
        pairs = []
        for key, sub in grouped.items():
            name = sub[0].node.name.value
            pairs.append((key, lit(otype.name) if name == "__typename" else part(name, sub)))
        return _object(pairs)

    def dashboard(self, dtype: GraphQLObjectType, details: FieldDetailsList) -> str:
        """`Query.dashboard`, as resolvers/queries.py computes each part (`:gg_today`: the
        UTC date when the statement runs)."""

        def part(name: str, sub: FieldDetailsList) -> str:
            if name in _DASHBOARD_LISTS:
                type_name, where, order, limit = _DASHBOARD_LISTS[name]
                table, a = TABLES[type_name], self.alias()
                item = _object_type(dtype.fields[name].type.of_type.of_type)  # [X!]!
                fields = self.fields(type_name, a, item, sub)
                order_by = order.format(a=a)
                return (f"coalesce((SELECT json_agg({fields} ORDER BY {order_by}) FROM "
                        f"(SELECT * FROM {table.name} {a} WHERE {a}.family_id = :gg_family "
                        f"AND {where.format(a=a)} ORDER BY {order_by} LIMIT {limit}) {a}), "
                        f"'[]'::json)")
            if name == "pipeline":
                a = self.alias()
                counts = self.pipeline(
                    _object_type(dtype.fields[name].type), sub,
                    lambda status: f"count(*) FILTER (WHERE {a}.status = {lit(status)})")
                # HAVING: one row even when no count is selected (only `__typename`)
                return (f"(SELECT {counts} FROM list_items {a} "
                        f"WHERE {a}.family_id = :gg_family HAVING true)")
            if name == "people":
                return self.people(_object_type(dtype.fields[name].type.of_type.of_type), sub)
            if name == "budget":
                return ("(SELECT sum(o.budget)::text FROM occasions o "
                        "WHERE o.family_id = :gg_family AND o.date >= :gg_today)")
            if name == "spent":
                return f"(SELECT round({_SPENT}, 2)::text {_UPCOMING_ITEMS})"
            if name == "spentByCurrency":
                return self.spent_by_currency(dtype.fields[name].type, sub, _UPCOMING_ITEMS)
            raise NotCompiled(f"Dashboard.{name}")

        return self.object(dtype, details, part)

    def pipeline(self, ptype: GraphQLObjectType, details: FieldDetailsList,
                 count: Callable[[str], str]) -> str:
        """A Pipeline object; `count(status)` is the SQL of the count of that status."""

        def part(name: str, _: FieldDetailsList) -> str:
            if name not in _STATUSES:
                raise NotCompiled(f"Pipeline.{name}")
            return count(_STATUSES[name])

        return self.object(ptype, details, part)

    def spent_by_currency(self, gtype: GraphQLOutputType, details: FieldDetailsList,
                          items: str) -> str:
        """`[Money!]!` of the PURCHASED and RECEIVED items among `items` (a FROM ... WHERE
        over list items `i` and their gifts `g`): per currency, sorted by its code (codes
        are [A-Z]{3}: "C" orders them as Python's `sorted`)."""
        if not isinstance(gtype, GraphQLNonNull) or not isinstance(gtype.of_type, GraphQLList):
            raise NotCompiled("spentByCurrency")
        a = self.alias()

        def part(name: str, _: FieldDetailsList) -> str:
            if name == "amount":
                return f"{a}.amount::text"
            if name == "currency":
                return f"{a}.currency"
            raise NotCompiled(f"Money.{name}")

        money = self.object(_object_type(gtype.of_type.of_type), details, part)
        return (f"coalesce((SELECT json_agg({money} ORDER BY {a}.currency COLLATE \"C\") "
                f"FROM (SELECT g.currency, round(sum({_AMOUNT}), 2) AS amount {items} "
                f"AND {_SPENT_ITEM} GROUP BY g.currency) {a}), '[]'::json)")

    def people(self, ptype: GraphQLObjectType, details: FieldDetailsList) -> str:
        """Every person with their items by status and money spent, by name: each
        person's counts and money in a grouped query, then its object."""
        p = self.alias()

        def part(name: str, sub: FieldDetailsList) -> str:
            if name == "person":
                return self.relation("Person", p, "id", _object_type(ptype.fields[name].type),
                                     sub)
            if name == "pipeline":
                return self.pipeline(_object_type(ptype.fields[name].type), sub,
                                     lambda status: f"{p}.gg_{status.lower()}")
            if name == "spent":
                return f"{p}.gg_spent::text"
            if name == "spentByCurrency":
                items = ("FROM gift_lists gl JOIN list_items i ON i.list_id = gl.id "
                         "JOIN gifts g ON g.id = i.gift_id "
                         f"WHERE gl.person_id = {p}.id AND gl.family_id = :gg_family "
                         "AND i.family_id = :gg_family")
                return self.spent_by_currency(ptype.fields[name].type, sub, items)
            raise NotCompiled(f"PersonProgress.{name}")

        progress = self.object(ptype, details, part)
        counts = ", ".join(f"count(i.id) FILTER (WHERE i.status = {lit(status)}) "
                           f"AS gg_{status.lower()}" for status in _STATUSES.values())
        return (f"coalesce((SELECT json_agg({progress} ORDER BY {p}.name, {p}.id) FROM "
                f"(SELECT {p}.id, {p}.name, {counts}, 0.00 + {_SPENT} AS gg_spent "
                f"FROM persons {p} LEFT JOIN gift_lists gl ON gl.person_id = {p}.id "
                "LEFT JOIN list_items i ON i.list_id = gl.id "
                "LEFT JOIN gifts g ON g.id = i.gift_id "
                f"WHERE {p}.family_id = :gg_family GROUP BY {p}.id) {p}), '[]'::json)")

    def arguments(self, gfield: GraphQLField, details: FieldDetailsList) -> dict[str, Any]:
        node = details[0].node
        if not (gfield.args or node.arguments):
            return {}
        return get_argument_values(gfield, node, self.ec.variable_values,
                                   details[0].fragment_variable_values,
                                   self.ec.hide_suggestions)

    def fields(self, type_name: str, alias: str, rtype: GraphQLObjectType,
               details: FieldDetailsList) -> str:
        """The JSON object of the row `alias` (of `type_name`) with the selected fields."""
        if rtype.name != type_name:
            raise NotCompiled(rtype.name)
        table = TABLES[type_name]

        def part(name: str, sub: FieldDetailsList) -> str:
            if name in table.scalars:
                column, kind = table.scalars[name]
                return _scalar(kind, f"{alias}.{column}", type_name)
            if name in table.relations:
                target, column = table.relations[name]
                return self.relation(target, alias, column,
                                     _object_type(rtype.fields[name].type), sub)
            if name in table.connections:
                gfield = rtype.fields[name]
                return self.connection(table.connections[name], alias,
                                       self.arguments(gfield, sub), gfield.type, sub)
            raise NotCompiled(f"{type_name}.{name}")

        return self.object(rtype, details, part)

    def relation(self, type_name: str, parent: str, column: str, rtype: GraphQLObjectType,
                 details: FieldDetailsList) -> str:
        table, a = TABLES[type_name], self.alias()
        fields = self.fields(type_name, a, rtype, details)
        return (f"(SELECT {fields} FROM {table.name} {a} "
                f"WHERE {a}.id = {parent}.{column} AND {a}.{table.family} = :gg_family)")

    def connection(self, conn: Connection, parent: str | None, args: dict[str, Any],
                   gtype: GraphQLOutputType, details: FieldDetailsList) -> str:
        for name in conn.unsupported:
            if args.get(name) is not None:
                raise NotCompiled(name)
        page = PageArgs.parse(args.get("first"), args.get("after"), args.get("last"),
                              args.get("before"), default=self.default_page,
                              maximum=self.max_page)  # BadInput: the executor reports it
        order = conn.order
        cursor = None if page.cursor is None \
            else order.decode(page.cursor, "before" if page.backward else "after")
        a = self.alias()
        table = TABLES[conn.node]
        where = [f"{a}.{table.family} = :gg_family"]
        if parent is not None:
            where.append(f"{a}.{conn.parent} = {parent}.id")
        for name, (column, operator) in conn.filters.items():
            value = args.get(name)
            if name in conn.defaults and not value:
                value = conn.defaults[name]
            if value is not None:
                where.append(f"{a}.{column} {operator} {self.param(_value(value))}")
        counted = list(where)
        descending = order.desc != page.backward
        keys = [f"{a}.{k.key}" for k in order.keys]
        if cursor is not None:
            values = ", ".join(self.param(v) for v in cursor)
            where.append(f"({', '.join(keys)}) {'<' if descending else '>'} ({values})")
        order_by = ", ".join(f"{k} {'DESC' if descending else 'ASC'}" for k in keys)
        limit = self.param(page.limit)
        rows = (f"SELECT {a}.*, row_number() OVER (ORDER BY {order_by}) AS gg_rn "
                f"FROM {table.name} {a} WHERE {' AND '.join(where)} "
                f"ORDER BY {order_by} LIMIT {self.param(page.limit + 1)}")
        shown = f"FILTER (WHERE {a}.gg_rn <= {limit})"
        # The page is shown in the connection's order: for `last`/`before` the rows were
        # fetched backwards (row 1 is the last shown).
        shown_order = f"{a}.gg_rn {'DESC' if page.backward else 'ASC'}"
        reverse_order = f"{a}.gg_rn {'ASC' if page.backward else 'DESC'}"
        more = f"(count(*) > {limit})"
        has_cursor = "true" if cursor is not None else "false"
        ctype = _object_type(gtype)

        def page_info(name: str, _: FieldDetailsList) -> str:
            if name == "hasNextPage":
                return has_cursor if page.backward else more
            if name == "hasPreviousPage":
                return more if page.backward else has_cursor
            if name in ("startCursor", "endCursor"):
                by = shown_order if name == "startCursor" else reverse_order
                return f"(array_agg({_cursor(order, a)} ORDER BY {by}) {shown})[1]"
            raise NotCompiled(f"PageInfo.{name}")

        def part(name: str, sub: FieldDetailsList) -> str:
            if name == "totalCount":
                return f"(SELECT count(*) FROM {table.name} {a} WHERE {' AND '.join(counted)})"
            if name == "edges":
                edge = self.edge(conn, a, ctype.fields[name].type, sub)
                return f"coalesce(json_agg({edge} ORDER BY {shown_order}) {shown}, '[]'::json)"
            if name == "pageInfo":
                return self.object(_object_type(ctype.fields[name].type), sub, page_info)
            raise NotCompiled(f"{ctype.name}.{name}")

        # HAVING: a grouped query, one row even for an empty page (and when no aggregate
        # is selected, e.g. only `totalCount`).
        return f"(SELECT {self.object(ctype, details, part)} FROM ({rows}) AS {a} HAVING true)"

    def edge(self, conn: Connection, alias: str, gtype: GraphQLOutputType,
             details: FieldDetailsList) -> str:
        if not isinstance(gtype, GraphQLNonNull) or not isinstance(gtype.of_type, GraphQLList):
            raise NotCompiled("edges")
        etype = _object_type(gtype.of_type.of_type)

        def part(name: str, sub: FieldDetailsList) -> str:
            if name == "cursor":
                return _cursor(conn.order, alias)
            if name == "node":
                return self.fields(conn.node, alias, _object_type(etype.fields[name].type), sub)
            raise NotCompiled(f"{etype.name}.{name}")

        return self.object(etype, details, part)


@dataclass(frozen=True)
class Plan:
    statement: TextClause
    params: dict[str, Any]

    async def run(self, ec: ExecutionContext) -> orjson.Fragment | None:
        """The result's `data` as the JSON PostgreSQL wrote (`orjson.Fragment`: the
        transports write it into the response as it is, as they do a cached result), or
        None where the executor must serve (a root object that may not be null is
        missing: it reports the error)."""
        ctx = ec.context_value
        user = ctx.user
        params = {**self.params, "gg_family": user.family_id, "gg_user": user.id,
                  "gg_today": datetime.now(UTC).date()}
        ((body, missing),) = await ctx.db.rows(self.statement, params)
        return None if missing else orjson.Fragment(body)


class Plans:
    """Compiled statements by document, operation, variables and page sizes (least
    recently used evicted): compiling walks the whole selection, a repeated read only
    looks it up. A plan holds no family or user: those are parameters of each run."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.plans: OrderedDict[Any, Plan | None] = OrderedDict()

    def get(self, ec: ExecutionContext) -> Plan | None:
        """The operation's plan, or None: it does not compile (or is not a query by a
        signed-in user, whose family scopes the statement)."""
        ctx = ec.context_value
        if getattr(ctx, "user", None) is None or ec.operation.operation is not OperationType.QUERY:
            return None
        loc = ec.operation.loc
        settings = ctx.settings
        try:
            key = None if loc is None else (
                loc.source.body, loc.start, settings.default_page_size, settings.max_page_size,
                orjson.dumps(ec.variable_values, option=orjson.OPT_SORT_KEYS, default=str),
            )
        except TypeError:
            key = None
        if key is not None and len(key[0]) + len(key[4]) > MAX_KEY_CHARS:
            key = None  # a huge document or variables: compiled each time, never held
        if key is not None and key in self.plans:
            self.plans.move_to_end(key)
            return self.plans[key]
        plan = compile_plan(ec)
        if key is not None:
            self.plans[key] = plan
            if len(self.plans) > self.size:
                self.plans.popitem(last=False)
        return plan


def compile_plan(ec: ExecutionContext) -> Plan | None:
    compiler = Compiler(ec)
    try:
        sql = compiler.root()
    except Exception:  # NotCompiled, or an argument that is an error: the executor's
        return None
    if len(sql) > MAX_SQL_CHARS:
        return None
    return Plan(text(sql), compiler.params)


PLANS = Plans()
