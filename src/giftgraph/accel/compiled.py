"""Read queries compiled to one SQL statement whose result is the response's JSON.

A nested read (lists, each with its person and a page of items, each with its gift and
assignee) resolves a few thousand fields. Executed field by field, the Python around each
of them costs more than the data: the DataLoaders, the objects built from rows, the
executor's per-field work and the serialization. Here, as PostGraphile and Hasura do, the
operation becomes one statement in which PostgreSQL writes the JSON (an object's text
concatenated, a page of a connection `array_to_string` of its rows' objects in order, or
`string_agg` where its pageInfo counts the rows past it, a correlated subquery for a
relation), and the server writes that JSON into the response as it is.

Only what the tables below describe compiles: the Relay connections over the family's
users, persons, occasions, gift lists, gifts and events, a list's items, the relations between
them, their plain fields, a list item's comment count, `me`, `family`, `node(id)` of those
types and the `dashboard` (its lists, counts and sums as
resolvers/queries.py computes them; an event's `node`, a snapshot, is not compiled).
Anything else in the operation (another root field, an argument this file does not
translate, a field with its own resolver, a cursor that does not decode, page arguments
that are an error) leaves the whole operation to the executor (accel/executor.py),
which produces exactly what it always has, errors included; so does a run whose root
object or relation that may not be null finds no row (the executor's NOT_FOUND). The
compiled statement reads what the resolvers read, scoped the same way: every table is
read with `family_id` = the caller's family, so a relation, a page or a sum can never
reach another family's rows (tests/integration/test_forged_rows.py). Where a
narrower key picks the rows (a relation's primary key, a nested page's parent), the family
is checked in a form no index serves (`sql.same_family`), so that the plan is the key's
index whether or not the tables have planner statistics.

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

import uuid
from collections.abc import Callable
from typing import Any

from graphql import (
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    OperationType,
)
from graphql.execution import Executor
from graphql.execution.collect_fields import FieldDetailsList, collect_fields
from graphql.execution.values import get_argument_values
from starlette.websockets import WebSocket

from giftgraph.accel.sql import (
    AMOUNT,
    DASHBOARD_LISTS,
    MISSING,
    ROOT_CONNECTIONS,
    ROOT_OBJECTS,
    SPENT,
    SPENT_ITEM,
    STATUSES,
    TABLES,
    UPCOMING_ITEMS,
    ConnectionTable,
    NotCompiled,
    bound_value,
    cursor_expr,
    items_of,
    json_array,
    json_object,
    json_rows,
    json_text,
    lit,
    object_type,
    quoted,
    same_family,
    scalar,
)
from giftgraph.db.pagination import PageArgs
from giftgraph.errors import AppError
from giftgraph.ids import parse_id

ExecutionContext = Executor[Any]  # graphql-core's (the lean executor's base)

class Compiler:
    """One operation's statement. Every value from the operation is a parameter."""

    def __init__(self, ec: ExecutionContext) -> None:
        self.ec = ec
        self.params: dict[str, Any] = {}
        self.aliases = 0
        self.required = 0  # relations that may not be null, written so far
        self.first = ""  # the first response key of the root
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
        root object or a relation that may not be null is missing (then the executor
        serves, and reports it)."""
        ec = self.ec
        root_type = ec.schema.get_root_type(OperationType.QUERY)
        if root_type is None:
            raise NotCompiled("no query type")
        grouped, defers, _ = collect_fields(ec.schema, ec.fragments, ec.variable_values,
                                            root_type, ec.operation, ec.hide_suggestions)
        if defers:
            raise NotCompiled("@defer")
        pairs: list[tuple[str, str]] = []
        columns: list[str] = []
        missing: list[str] = []
        for key, details in grouped.items():
            node = details[0].node
            name = node.name.value
            if name == "__typename":
                pairs.append((key, json_text(root_type.name)))
                continue
            required = self.required
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
                fields = self.fields(type_name, a, object_type(gfield.type), details)
                expr = (f"(SELECT {fields} FROM {table.name} {a} "
                        f"WHERE {a}.{condition} AND {same_family(a, table.family)})")
                if isinstance(gfield.type, GraphQLNonNull):
                    missing.append(f"r.c{len(columns)} IS NULL")
            elif name == "node":
                expr = self.node(gfield, details)
                missing.append(f"r.c{len(columns)} IS NULL")  # the executor's NOT_FOUND
            elif name == "dashboard":
                expr = self.dashboard(object_type(gfield.type), details)
            else:
                raise NotCompiled(name)
            if self.required > required:  # a required relation within: is one missing?
                missing.append(f"strpos(r.c{len(columns)}, {MISSING}) > 0")
            pairs.append((key, f"r.c{len(columns)}"))
            columns.append(f"{expr} AS c{len(columns)}")
        if not columns:  # `__typename` alone: nothing to read (the executor needs no query)
            raise NotCompiled("no table")
        self.first = pairs[0][0]
        # Each root field is computed once, in `r` (OFFSET 0: not merged into the outer
        # query, where the null check would compute it again); so is the data's JSON, in
        # `q`, which leaves PostgreSQL only within `max_response_bytes` (:gg_limit; else
        # its size alone: admission.answers), and as bytes (bytea, UTF-8 as the database
        # is): the driver hands them over and orjson writes them as they are; as text,
        # both converted it (52 KB with a few names outside ASCII: ~70 µs a read).
        inner = f"(SELECT {', '.join(columns)} OFFSET 0) AS r"
        data = (f"(SELECT {json_object(pairs)} AS j, {' OR '.join(missing) or 'false'} AS m "
                f"FROM {inner} OFFSET 0) AS q")
        return (f"SELECT CASE WHEN octet_length(q.j) <= :gg_limit "
                f"THEN convert_to(q.j, 'UTF8') END, q.m, octet_length(q.j) FROM {data}")

    def node(self, gfield: GraphQLField, details: FieldDetailsList) -> str:
        """`Query.node(id)` of a type the tables describe, as the node resolver loads it:
        the row by its key, in the caller's family. An Event's ID (a family and a seq), an
        ID that does not parse, or a row not found (the caller then gets `missing`) leave
        the operation to the executor, which reports them."""
        try:
            type_name, key = parse_id(self.arguments(gfield, details).get("id"))
        except AppError as exc:
            raise NotCompiled("node: not an ID") from exc
        otype = self.ec.schema.get_type(type_name)
        if type_name == "Event" or type_name not in TABLES or not isinstance(key, uuid.UUID) \
                or not isinstance(otype, GraphQLObjectType):
            raise NotCompiled(f"node: {type_name}")
        table, a = TABLES[type_name], self.alias()
        fields = self.fields(type_name, a, otype, details)
        return (f"(SELECT {fields} FROM {table.name} {a} "
                f"WHERE {a}.id = {self.param(key)} AND {same_family(a, table.family)})")

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
            pairs.append((key, json_text(otype.name) if name == "__typename"
                          else part(name, sub)))
        return json_object(pairs)

    def dashboard(self, dtype: GraphQLObjectType, details: FieldDetailsList) -> str:
        """`Query.dashboard`, as resolvers/queries.py computes each part (`:gg_today`: the
        UTC date when the statement runs)."""

        def part(name: str, sub: FieldDetailsList) -> str:
            if name in DASHBOARD_LISTS:
                type_name, where, order, limit = DASHBOARD_LISTS[name]
                table, a = TABLES[type_name], self.alias()
                item = object_type(dtype.fields[name].type.of_type.of_type)  # [X!]!
                fields = self.fields(type_name, a, item, sub)
                order_by = order.format(a=a)
                return json_rows(fields, (
                    f"(SELECT * FROM {table.name} {a} WHERE {a}.family_id = :gg_family "
                    f"AND {where.format(a=a)} ORDER BY {order_by} LIMIT {limit}) {a}"),
                    order_by)
            if name == "pipeline":
                a = self.alias()
                counts = self.pipeline(
                    object_type(dtype.fields[name].type), sub,
                    lambda status: f"count(*) FILTER (WHERE {a}.status = {lit(status)})")
                # HAVING: one row even when no count is selected (only `__typename`)
                return (f"(SELECT {counts} FROM list_items {a} "
                        f"WHERE {a}.family_id = :gg_family HAVING true)")
            if name == "people":
                return self.people(object_type(dtype.fields[name].type.of_type.of_type), sub)
            if name == "budget":
                return quoted("(SELECT sum(o.budget)::text FROM occasions o "
                              "WHERE o.family_id = :gg_family AND o.date >= :gg_today)")
            if name == "spent":
                return quoted(f"(SELECT round({SPENT}, 2)::text {UPCOMING_ITEMS})")
            if name == "spentByCurrency":
                return self.spent_by_currency(dtype.fields[name].type, sub, UPCOMING_ITEMS)
            raise NotCompiled(f"Dashboard.{name}")

        return self.object(dtype, details, part)

    def pipeline(self, ptype: GraphQLObjectType, details: FieldDetailsList,
                 count: Callable[[str], str]) -> str:
        """A Pipeline object; `count(status)` is the SQL of the count of that status."""

        def part(name: str, _: FieldDetailsList) -> str:
            if name not in STATUSES:
                raise NotCompiled(f"Pipeline.{name}")
            return f"({count(STATUSES[name])})::text"

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
                return quoted(f"{a}.amount::text")
            if name == "currency":
                return f"to_json({a}.currency)::text"
            raise NotCompiled(f"Money.{name}")

        money = self.object(object_type(gtype.of_type.of_type), details, part)
        by_code = f'{a}.currency COLLATE "C"'
        return (f"(SELECT {json_array(money, by_code)} "
                f"FROM (SELECT g.currency, round(sum({AMOUNT}), 2) AS amount {items} "
                f"AND {SPENT_ITEM} GROUP BY g.currency) {a})")

    def people(self, ptype: GraphQLObjectType, details: FieldDetailsList) -> str:
        """Every person with their items by status and money spent, by name: each
        person's counts and money in a grouped query, then its object."""
        p = self.alias()

        def part(name: str, sub: FieldDetailsList) -> str:
            if name == "person":
                return self.relation("Person", p, "id", ptype.fields[name].type, sub)
            if name == "pipeline":
                return self.pipeline(object_type(ptype.fields[name].type), sub,
                                     lambda status: f"{p}.gg_{status.lower()}")
            if name == "spent":
                return quoted(f"{p}.gg_spent::text")
            if name == "spentByCurrency":
                items = (f"FROM gift_lists gl {items_of('gl', SPENT_ITEM)} "
                         f"WHERE gl.person_id = {p}.id AND {same_family('gl', 'family_id')}")
                return self.spent_by_currency(ptype.fields[name].type, sub, items)
            raise NotCompiled(f"PersonProgress.{name}")

        progress = self.object(ptype, details, part)
        counts = ", ".join(f"count(i.id) FILTER (WHERE i.status = {lit(status)}) "
                           f"AS gg_{status.lower()}" for status in STATUSES.values())
        # Each person's counts and money in a LATERAL aggregate (one row per person), over
        # their lists by the person's index and the lists' items by `items_of`: no join or
        # grouping the planner could turn into reading every family's lists or persons.
        return json_rows(progress, (
            f"(SELECT {p}.id, {p}.name, x.* FROM persons {p} CROSS JOIN LATERAL "
            f"(SELECT {counts}, 0.00 + {SPENT} AS gg_spent FROM gift_lists gl "
            f"{items_of('gl')} WHERE gl.person_id = {p}.id "
            f"AND {same_family('gl', 'family_id')}) x "
            f"WHERE {p}.family_id = :gg_family) {p}"), f"{p}.name, {p}.id")

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
                return scalar(kind, f"{alias}.{column}", type_name)
            if name in table.relations:
                target, column = table.relations[name]
                return self.relation(target, alias, column, rtype.fields[name].type, sub)
            if name in table.connections:
                gfield = rtype.fields[name]
                return self.connection(table.connections[name], alias,
                                       self.arguments(gfield, sub), gfield.type, sub)
            if name in table.counts:
                return f"({table.counts[name].format(row=alias, a=self.alias())})::text"
            raise NotCompiled(f"{type_name}.{name}")

        return self.object(rtype, details, part)

    def relation(self, type_name: str, parent: str, column: str, gtype: GraphQLOutputType,
                 details: FieldDetailsList) -> str:
        """The related row's object, of the caller's family: null where there is none. A
        relation that may not be null (ListItem.gift...) and finds no row (a row of another
        family's, which the API never writes) is the executor's to report, as its NOT_FOUND:
        it is written as `MISSING`, which the statement's `missing` finds (`root`)."""
        table, a = TABLES[type_name], self.alias()
        fields = self.fields(type_name, a, object_type(gtype), details)
        found = (f"(SELECT {fields} FROM {table.name} {a} "
                 f"WHERE {a}.id = {parent}.{column} AND {same_family(a, table.family)})")
        if not isinstance(gtype, GraphQLNonNull):
            return found
        self.required += 1
        return f"coalesce({found}, {MISSING})"

    def connection(self, conn: ConnectionTable, parent: str | None, args: dict[str, Any],
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
        # Under a parent row, its id picks the rows (and the family is only checked)
        where = [f"{a}.{table.family} = :gg_family"] if parent is None \
            else [f"{a}.{conn.parent} = {parent}.id", same_family(a, table.family)]
        for name, (column, operator) in conn.filters.items():
            value = args.get(name)
            if name in conn.defaults and not value:
                value = conn.defaults[name]
            if value is not None:
                where.append(f"{a}.{column} {operator} {self.param(bound_value(value))}")
        counted = list(where)
        descending = order.desc != page.backward
        keys = [f"{a}.{k.key}" for k in order.keys]
        if cursor is not None:
            values = ", ".join(self.param(v) for v in cursor)
            where.append(f"({', '.join(keys)}) {'<' if descending else '>'} ({values})")
        order_by = ", ".join(f"{k} {'DESC' if descending else 'ASC'}" for k in keys)
        ctype = object_type(gtype)
        # With pageInfo: a grouped query over the page's rows numbered, and the row past
        # it (to tell whether more follow). Without: the page's rows alone, an array of
        # their objects in order (no numbering, no grouping, nothing sorted twice).
        grouped = any(sub[0].node.name.value == "pageInfo"
                      for sub in self.ec.collect_subfields(ctype, details)[0].values())
        limit = self.param(page.limit)
        if grouped:
            rows = (f"SELECT {a}.*, row_number() OVER (ORDER BY {order_by}) AS gg_rn "
                    f"FROM {table.name} {a} WHERE {' AND '.join(where)} "
                    f"ORDER BY {order_by} LIMIT {self.param(page.limit + 1)}")
        else:
            rows = (f"(SELECT {a}.* FROM {table.name} {a} WHERE {' AND '.join(where)} "
                    f"ORDER BY {order_by} LIMIT {limit}) AS {a}")
        in_order = ", ".join(f"{k} {'DESC' if order.desc else 'ASC'}" for k in keys)
        shown = f"FILTER (WHERE {a}.gg_rn <= {limit})"
        # The page is shown in the connection's order: for `last`/`before` the rows were
        # fetched backwards (row 1 is the last shown).
        shown_order = f"{a}.gg_rn {'DESC' if page.backward else 'ASC'}"
        reverse_order = f"{a}.gg_rn {'ASC' if page.backward else 'DESC'}"
        more = f"(count(*) > {limit})::text"
        has_cursor = "'true'" if cursor is not None else "'false'"

        def page_info(name: str, _: FieldDetailsList) -> str:
            if name == "hasNextPage":
                return has_cursor if page.backward else more
            if name == "hasPreviousPage":
                return more if page.backward else has_cursor
            if name in ("startCursor", "endCursor"):
                by = shown_order if name == "startCursor" else reverse_order
                return quoted(f"(array_agg({cursor_expr(order, a)} ORDER BY {by}) {shown})[1]")
            raise NotCompiled(f"PageInfo.{name}")

        def part(name: str, sub: FieldDetailsList) -> str:
            if name == "totalCount":
                return (f"(SELECT count(*) FROM {table.name} {a} "
                        f"WHERE {' AND '.join(counted)})::text")
            if name == "edges":
                edge = self.edge(conn, a, ctype.fields[name].type, sub)
                return json_array(edge, shown_order, shown) if grouped \
                    else json_rows(edge, rows, in_order)
            if name == "pageInfo":
                return self.object(object_type(ctype.fields[name].type), sub, page_info)
            raise NotCompiled(f"{ctype.name}.{name}")

        selected = self.object(ctype, details, part)
        if not grouped:
            return selected
        # HAVING: a grouped query, one row even for an empty page (and when no aggregate
        # is selected, e.g. only `totalCount`).
        return f"(SELECT {selected} FROM ({rows}) AS {a} HAVING true)"

    def edge(self, conn: ConnectionTable, alias: str, gtype: GraphQLOutputType,
             details: FieldDetailsList) -> str:
        if not isinstance(gtype, GraphQLNonNull) or not isinstance(gtype.of_type, GraphQLList):
            raise NotCompiled("edges")
        etype = object_type(gtype.of_type.of_type)

        def part(name: str, sub: FieldDetailsList) -> str:
            if name == "cursor":
                return quoted(cursor_expr(conn.order, alias))
            if name == "node":
                return self.fields(conn.node, alias, object_type(etype.fields[name].type), sub)
            raise NotCompiled(f"{etype.name}.{name}")

        return self.object(etype, details, part)
