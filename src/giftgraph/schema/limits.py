"""Query limits: tokens, depth, aliases (fragments included) and cost → QUERY_TOO_COMPLEX.

Cost is counted like GitHub's: every field costs 1, and a connection's subtree counts
once per node it may return (its `first`/`last`, or the default page size). Variables are
known here (execution time), so `first: $n` is priced by its value.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSyntaxError,
    InlineFragmentNode,
    IntValueNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
)
from strawberry.extensions import ParserCache, SchemaExtension

from giftgraph.errors import QueryTooComplex
from giftgraph.schema.extensions import operation_of, refuse


@dataclass
class Measure:
    depth: int = 0
    aliases: int = 0
    cost: int = 0


class Walker:
    def __init__(self, schema: Any, fragments: dict[str, FragmentDefinitionNode],
                 variables: dict[str, Any], default_page: int, max_page: int) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.default_page = default_page
        self.max_page = max_page
        self.measure = Measure()

    def _fields(self, sel: SelectionSetNode | None, seen: frozenset[str]) -> Iterator[FieldNode]:
        for node in sel.selections if sel else ():
            if isinstance(node, FieldNode):
                yield node
            elif isinstance(node, InlineFragmentNode):
                yield from self._fields(node.selection_set, seen)
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                fragment = self.fragments.get(name)
                if fragment is not None and name not in seen:  # cycles are a validation error
                    yield from self._fields(fragment.selection_set, seen | {name})

    def _page_size(self, field: FieldNode) -> int:
        size = self.default_page
        for arg in field.arguments or ():
            if arg.name.value not in ("first", "last"):
                continue
            value: Any = None
            if isinstance(arg.value, IntValueNode):
                value = int(arg.value.value)
            elif isinstance(arg.value, VariableNode):
                value = self.variables.get(arg.value.name.value)
            if isinstance(value, int):
                size = max(0, min(value, self.max_page))
        return size

    def walk(self, sel: SelectionSetNode | None, parent: Any, depth: int) -> int:
        """The cost of a selection set; records depth and aliases as it goes."""
        self.measure.depth = max(self.measure.depth, depth)
        cost = 0
        for field in self._fields(sel, frozenset()):
            name = field.name.value
            if name.startswith("__"):
                # Introspection is not data: GraphiQL's schema query is depth 15, and
                # production turns introspection off altogether.
                continue
            if field.alias is not None:
                self.measure.aliases += 1
            definition = parent.fields.get(name) if isinstance(parent, GraphQLObjectType) \
                or hasattr(parent, "fields") else None
            child_type = get_named_type(definition.type) if definition is not None else None
            if field.selection_set is None:
                cost += 1
                continue
            # Abstract types: price by the first possible type (fields are validated later).
            target = child_type
            if child_type is not None and not hasattr(child_type, "fields"):
                possible = self.schema.get_possible_types(child_type)
                target = possible[0] if possible else None
            sub = self.walk(field.selection_set, target, depth + 1)
            if child_type is not None and child_type.name.endswith("Connection"):
                sub *= max(1, self._page_size(field))
            cost += 1 + sub
        return cost


def measure(schema: Any, document: Any, operation_name: str | None,
            variables: dict[str, Any], default_page: int, max_page: int) -> Measure | None:
    op = operation_of(document, operation_name)
    if op is None:
        return None  # nothing runs: ChooseOperation or graphql-core refuses the request
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    root = {"query": schema.query_type, "mutation": schema.mutation_type,
            "subscription": schema.subscription_type}[op.operation.value]
    walker = Walker(schema, fragments, variables, default_page, max_page)
    walker.measure.cost = walker.walk(op.selection_set, root, 1)
    return walker.measure


class ParseWithTokenLimit(ParserCache):
    """ParserCache with the token limit: the parser stops at the limit's next token (an
    over-long document is never parsed whole), and the refusal is QUERY_TOO_COMPLEX like
    the other limits', not a syntax error. `actual` is where parsing stopped."""

    def __init__(self, max_tokens: int, maxsize: int) -> None:
        super().__init__(maxsize=maxsize)
        self.max_tokens = max_tokens

    def on_parse(self) -> Iterator[None]:
        ec = self.execution_context
        try:
            ec.graphql_document = self.cached_parse_document(ec.query,
                                                             max_tokens=self.max_tokens)
        except GraphQLSyntaxError as error:
            # graphql-core's own words for this one case (its parser and its lexer).
            if f"Document contains more than {self.max_tokens} tokens" not in error.message:
                raise
            limit = self.max_tokens
            raise GraphQLError(
                f"Query tokens exceed the limit of {limit}",
                original_error=QueryTooComplex(f"Query tokens exceed the limit of {limit}",
                                               limit=limit, actual=limit + 1,
                                               measure="tokens"),
            ) from None
        yield


class QueryLimits(SchemaExtension):
    """Refuses operations over the configured depth, aliases or cost."""

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        settings = ec.context.settings
        document = ec.graphql_document
        if document is not None:
            found = measure(ec.schema._schema, document, ec.operation_name,
                            ec.variables or {}, settings.default_page_size,
                            settings.max_page_size)
            if found is not None:
                for what, value, limit in (
                    ("depth", found.depth, settings.max_query_depth),
                    ("aliases", found.aliases, settings.max_aliases),
                    ("cost", found.cost, settings.max_query_cost),
                ):
                    if value > limit:
                        refuse(self, QueryTooComplex(
                            f"Query {what} {value} exceeds the limit of {limit}",
                            limit=limit, actual=value, measure=what))
                        break
        yield
