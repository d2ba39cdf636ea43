"""What a live query is: its selection as a query document of its own, the variables it
uses, whether it depends on the caller beyond the family (`me`), and the entity types
its result is read from (the changes that may change it).

Everything is derived from graphql-core's view of the `live` field (its field nodes, the
document's fragments and variable definitions) with the schema, once per subscription.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionNode,
    SelectionSetNode,
    VariableDefinitionNode,
    VariableNode,
    ast_from_value,
    get_named_type,
    is_abstract_type,
    is_leaf_type,
    is_object_type,
    print_ast,
    type_from_ast,
    value_from_ast_untyped,
)
from graphql.language import Visitor, visit
from graphql.pyutils import Undefined

from giftgraph.admission.documents import measure

# The entity types an event names (`Event.entityType`, giftgraph.events.ENTITY_TYPES).
KINDS: frozenset[str] = frozenset({"Family", "User", "Person", "Occasion", "GiftList", "Gift",
                                   "ListItem", "Comment"})
# A GraphQL object type read from rows of one entity type.
TYPE_KINDS: dict[str, frozenset[str]] = {k: frozenset({k}) for k in KINDS}
# Types that hold no rows of their own: what they show comes with the field that returns
# them (a connection's nodes, a summary's figures), counted there.
NEUTRAL = frozenset({"PageInfo", "Pipeline", "Money", "PersonProgress", "OccasionSummary"})
# Fields whose value depends on more than the types they return: aggregates, filters and
# lookups by the ID of another entity (that entity deleted, the answer changes), logs.
# None: on every change.
FIELD_KINDS: dict[tuple[str, str], frozenset[str] | None] = {
    ("Query", "node"): None,
    ("Query", "events"): None,
    ("Query", "dashboard"): None,
    ("Query", "lists"): frozenset({"GiftList", "Person", "Occasion"}),
    ("Query", "comments"): frozenset({"Comment", "GiftList", "ListItem", "Gift", "Person",
                                      "Occasion"}),
    ("Person", "giftHistory"): frozenset({"ListItem", "GiftList", "Gift"}),
    ("ListItem", "commentCount"): frozenset({"Comment"}),
    ("Occasion", "summary"): frozenset({"Family", "Person", "Occasion", "GiftList", "Gift",
                                        "ListItem"}),
}
# Root fields answered from the caller, not only its family.
PER_USER = frozenset({("Query", "me")})


@dataclass(frozen=True, slots=True)
class LivePlan:
    """One live query: `document` (a query, printed) with `variables`, its result sent
    under `key`; `kinds` the entity types it reads (None: all), `per_user` whether it reads
    the caller itself."""

    document: str
    variables: dict[str, Any]
    key: str | None  # None: sent as the query's own result (`query @live`)
    kinds: frozenset[str] | None
    per_user: bool
    cost: int = 0  # the document's cost (giftgraph.admission.documents), pages as asked

    def identity(self) -> tuple[str, bytes]:
        """What makes two plans the same execution (with the family and the caller)."""
        return self.document, orjson.dumps(self.variables, option=orjson.OPT_SORT_KEYS)

    def reads(self, entity_type: str | None) -> bool:
        """Whether a change to a row of `entity_type` may change this query's result."""
        return self.kinds is None or entity_type is None or entity_type in self.kinds


def plan_of(raw: GraphQLResolveInfo[Any], default_page: int, max_page: int,
            unwrapped: bool = False) -> LivePlan:
    """The live query asked for by the `live` field resolving with `raw` (its cost measured
    with these page sizes); `unwrapped`: its results sent as the query's own."""
    selections = tuple(s for node in raw.field_nodes if node.selection_set is not None
                       for s in node.selection_set.selections)
    used = _reachable(selections, raw.fragments)
    fragments = [f for name, f in raw.fragments.items() if name in used]
    body = SelectionSetNode(selections=selections)
    names = _variables([body, *fragments])
    operation: OperationDefinitionNode = raw.operation
    definitions = tuple(d for d in operation.variable_definitions or ()
                        if d.variable.name.value in names)
    document = DocumentNode(definitions=(
        OperationDefinitionNode(operation=OperationType.QUERY, name=None,
                                variable_definitions=definitions, directives=(),
                                selection_set=body),
        *fragments))
    # As the client sent them (graphql-core keeps each variable's source): those left to
    # their default stay out, and the query's definitions give them the same default.
    values: Any = raw.variable_values
    sources = getattr(values, "sources", None)
    variables = {}
    for definition in definitions:
        name = definition.variable.name.value
        if sources is not None:
            source = sources.get(name)
            if source is not None and source.value is not Undefined:
                variables[name] = source.value
        elif name in values:  # only the coerced values: as the client would send them
            variables[name] = _as_sent(raw.schema, definition, values[name])
    kinds, per_user = Dependencies(raw.schema, raw.fragments).of(
        get_named_type(raw.return_type), selections)
    found = measure(raw.schema, document, None, variables, default_page, max_page)
    cost = found.running.cost if found.running is not None else found.worst.cost
    key = None if unwrapped else str(raw.path.key)
    return LivePlan(print_ast(document), variables, key, kinds, per_user, cost)


def _as_sent(schema: GraphQLSchema, definition: VariableDefinitionNode, value: Any) -> Any:
    """A coerced variable's value as JSON (a live query's variables are scalars, enums
    and lists of them: Query's arguments take no input objects)."""
    gtype = type_from_ast(schema, definition.type)
    node = ast_from_value(value, gtype) if gtype is not None else None  # type: ignore[arg-type]
    return None if node is None else value_from_ast_untyped(node)


def _reachable(selections: Iterable[SelectionNode],
               fragments: dict[str, FragmentDefinitionNode]) -> set[str]:
    """The fragments these selections spread, directly or through other fragments."""
    found: set[str] = set()
    todo = list(selections)
    while todo:
        node = todo.pop()
        if isinstance(node, FragmentSpreadNode):
            name = node.name.value
            if name not in found and name in fragments:
                found.add(name)
                todo.extend(fragments[name].selection_set.selections)
        elif isinstance(node, FieldNode | InlineFragmentNode) and node.selection_set:
            todo.extend(node.selection_set.selections)
    return found


class _Variables(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.names.add(node.name.value)


def _variables(nodes: Iterable[Any]) -> set[str]:
    visitor = _Variables()
    for node in nodes:
        visit(node, visitor)
    return visitor.names


class Dependencies:
    """Walks a selection with the schema: the entity types it reads (None: any change may
    change it, for a field or type this does not know) and whether it reads the caller."""

    def __init__(self, schema: GraphQLSchema,
                 fragments: dict[str, FragmentDefinitionNode]) -> None:
        self.schema = schema
        self.fragments = fragments

    def of(self, root: GraphQLNamedType,
           selections: Iterable[SelectionNode]) -> tuple[frozenset[str] | None, bool]:
        kinds: set[str] = set()
        per_user = False
        everything = False
        for parent, field, named in self._fields(root, selections, ()):
            coordinate = (parent.name, field.name.value)
            per_user = per_user or coordinate in PER_USER
            found = FIELD_KINDS[coordinate] if coordinate in FIELD_KINDS \
                else self.type_kinds(named)
            if found is None:
                everything = True
            else:
                kinds |= found
        return (None if everything else frozenset(kinds)), per_user

    def type_kinds(self, named: GraphQLNamedType, depth: int = 0) -> frozenset[str] | None:
        """The entity types a value of `named` is read from (None: unknown, all)."""
        if is_leaf_type(named) or named.name in NEUTRAL:
            return frozenset()
        if named.name in TYPE_KINDS:
            return TYPE_KINDS[named.name]
        if is_abstract_type(named):
            kinds: set[str] = set()
            for possible in self.schema.get_possible_types(named):
                found = self.type_kinds(possible, depth + 1)
                if found is None:
                    return None
                kinds |= found
            return frozenset(kinds)
        node = _connection_node(named)
        if node is not None and depth < 3:  # a connection or an edge: its nodes' types
            return self.type_kinds(node, depth + 1)
        return None

    def _fields(self, parent: GraphQLNamedType, selections: Iterable[SelectionNode],
                seen: tuple[str, ...]) -> Iterator[tuple[GraphQLNamedType, FieldNode,
                                                           GraphQLNamedType]]:
        for node in selections:
            if isinstance(node, FieldNode):
                name = node.name.value
                if name.startswith("__"):
                    continue
                fields = getattr(parent, "fields", {})
                field = fields.get(name)
                if field is None:
                    continue  # validation refused it already
                named = get_named_type(field.type)
                yield parent, node, named
                if node.selection_set is not None:
                    yield from self._fields(named, node.selection_set.selections, seen)
            elif isinstance(node, InlineFragmentNode):
                inner = parent if node.type_condition is None \
                    else self.schema.get_type(node.type_condition.name.value) or parent
                yield from self._fields(inner, node.selection_set.selections, seen)
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in seen:
                    continue
                inner = self.schema.get_type(fragment.type_condition.name.value) or parent
                yield from self._fields(inner, fragment.selection_set.selections,
                                        (*seen, name))


def _connection_node(named: GraphQLNamedType) -> GraphQLNamedType | None:
    """The node type of a connection (`edges { node }`) or an edge (`node`)."""
    if not is_object_type(named):
        return None
    assert isinstance(named, GraphQLObjectType)
    fields = named.fields
    if "edges" in fields:
        edge = get_named_type(fields["edges"].type)
        if isinstance(edge, GraphQLObjectType) and "node" in edge.fields:
            return _named(edge.fields["node"].type)
    if "node" in fields and "cursor" in fields:
        return _named(fields["node"].type)
    return None


def _named(gtype: Any) -> GraphQLNamedType:
    named: GraphQLNamedType = get_named_type(gtype)
    return named
