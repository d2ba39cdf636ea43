"""Execution with a fast path for plain scalar fields.

Most fields of a read are scalars read straight off an object (`name`, `status`,
`price`...). Strawberry already gives them a bare `getattr` resolver, but graphql-core still
builds a `ResolveInfo`, calls the resolver through Strawberry's wrapper, and dispatches
`complete_value` for each of them: ~2,000 such fields in the nested list query. For a field
that is exactly that (Strawberry's default resolver, no arguments, no field extensions, a
scalar or enum type, no graphql-core middleware) the value is read and serialized here
directly; whenever the result is not an ordinary value (missing, null where null is not
allowed, a serializer error), the field goes through graphql-core's own path, which produces
the standard result or error.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from graphql import (
    GraphQLEnumType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    Undefined,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

DEFINITION = "strawberry-definition"
_MISSING = object()

# For each object type, its plain scalar fields: name -> (attribute, type, nullable).
Plain = dict[str, dict[str, tuple[str, GraphQLScalarType | GraphQLEnumType, bool]]]
_plain_fields: WeakKeyDictionary[GraphQLSchema, Plain] = WeakKeyDictionary()


def plain_fields(schema: GraphQLSchema) -> Plain:
    """The fields of `schema` the fast path may serve (computed once per schema)."""
    found = _plain_fields.get(schema)
    if found is not None:
        return found
    plain: Plain = {}
    for type_name, gtype in schema.type_map.items():
        if not isinstance(gtype, GraphQLObjectType) or type_name.startswith("__"):
            continue
        fields = {}
        for name, field in gtype.fields.items():
            definition = (field.extensions or {}).get(DEFINITION)
            resolve = field.resolve
            if definition is None or field.args or resolve is None \
                    or not getattr(resolve, "_is_default", False) \
                    or not definition.is_basic_field \
                    or definition.default_resolver is not getattr:
                continue
            nullable = not isinstance(field.type, GraphQLNonNull)
            leaf = field.type if nullable else field.type.of_type
            if isinstance(leaf, GraphQLScalarType | GraphQLEnumType):
                fields[name] = (definition.python_name, leaf, nullable)
        if fields:
            plain[type_name] = fields
    _plain_fields[schema] = plain
    return plain


class ExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, plus the plain-scalar fast path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager  # Strawberry passes one, empty unless an
        wrapped = manager is not None and bool(manager.middlewares)  # extension resolves
        self.plain = {} if wrapped else plain_fields(self.schema)

    def execute_field(self, parent_type: GraphQLObjectType, source: Any,
                      field_details_list: Any, path: Any, position_context: Any) -> Any:
        fields = self.plain.get(parent_type.name)
        if fields is not None:
            spec = fields.get(field_details_list[0].node.name.value)
            if spec is not None:
                attribute, leaf, nullable = spec
                try:
                    value = getattr(source, attribute, _MISSING)
                except Exception:  # a property that raised: graphql-core's path reports it
                    value = _MISSING
                if value is None:
                    if nullable:
                        return None
                elif value is not _MISSING:
                    try:
                        serialized = leaf.serialize(value)
                    except Exception:  # graphql-core's own path reports it
                        serialized = None
                    if serialized is not None and serialized is not Undefined:
                        return serialized
        return super().execute_field(parent_type, source, field_details_list, path,
                                     position_context)
