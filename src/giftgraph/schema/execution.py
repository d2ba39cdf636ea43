"""Execution with a fast path for plain scalar fields, and lean resolvers.

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

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
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
from strawberry.types.field import StrawberryField

if TYPE_CHECKING:
    import strawberry

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


def install_lean_resolvers(schema: strawberry.Schema) -> int:
    """Call plain resolvers directly; returns how many fields now do.

    A field with a resolver method, such as a relation (`ListItem.gift(self, info)`), goes
    through Strawberry's generic wrapper on every call: argument conversion, the field
    extension chain (a `reduce` of partials), three nested calls, then the method. For a
    resolver that has none of what the wrapper is for (no arguments, no field extensions
    or permission classes, no exception handlers, not async) the result is exactly
    `method(source, Info(...))`, which is what this installs as the field's `resolve`
    (with `root`/`parent` and `info` passed as the resolver asks for them). Hundreds of
    such fields resolve in a nested read; ~15% of its CPU was this wrapper.
    """
    converter = schema.schema_converter
    info_class = schema.config.info_class
    installed = 0
    for type_name, gtype in schema._schema.type_map.items():
        if not isinstance(gtype, GraphQLObjectType) or type_name.startswith("__"):
            continue
        for field in gtype.fields.values():
            definition = (field.extensions or {}).get(DEFINITION)
            if not isinstance(definition, StrawberryField) or field.args \
                    or definition.base_resolver is None or definition.arguments \
                    or definition.extensions or definition.is_async \
                    or definition.is_subscription \
                    or converter._get_field_exception_handlers(definition):
                continue
            field.resolve = _lean(definition, info_class)
            installed += 1
    return installed


def _lean(definition: StrawberryField, info_class: type) -> Callable[..., Any]:
    resolver = definition.base_resolver
    assert resolver is not None
    func = resolver.wrapped_func
    with_self = resolver.self_parameter is not None
    by_name = [p.name for p in (resolver.parent_parameter, resolver.root_parameter) if p]
    info_name = resolver.info_parameter.name if resolver.info_parameter else None

    if with_self and not by_name and info_name is not None:  # `def field(self, info)`
        def resolve_with_info(source: Any, info: Any) -> Any:
            return func(source, **{info_name: info_class(_raw_info=info, _field=definition)})

        return resolve_with_info

    def resolve(source: Any, info: Any) -> Any:
        kwargs = dict.fromkeys(by_name, source)
        if info_name is not None:
            kwargs[info_name] = info_class(_raw_info=info, _field=definition)
        return func(source, **kwargs) if with_self else func(**kwargs)

    return resolve
