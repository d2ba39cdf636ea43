"""Lean resolvers and the plain fields: which fields only read an attribute (the lean
executor's scalar fast path serves them), and plain resolver methods called without
Strawberry's wrapper (`install_lean_resolvers`). `lean_resolvers_ok` checks the Strawberry
internals used here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
)
from strawberry.types.field import StrawberryField

from giftgraph.accel import internals

if TYPE_CHECKING:
    import strawberry


log = logging.getLogger("giftgraph.execution")
DEFINITION = "strawberry-definition"


# For each object type, its plain scalar fields: name -> (attribute, type, nullable).
Plain = dict[str, dict[str, tuple[str, GraphQLScalarType | GraphQLEnumType, bool]]]
_plain_fields: WeakKeyDictionary[GraphQLSchema, Plain] = WeakKeyDictionary()


def attribute_of(field: GraphQLField) -> str | None:
    """The attribute a field reads, when that is all it does: Strawberry's default
    resolver (`getattr`), no arguments, no field extensions."""
    definition = (field.extensions or {}).get(DEFINITION)
    resolve = field.resolve
    if definition is None or field.args or resolve is None \
            or not getattr(resolve, "_is_default", False) \
            or not definition.is_basic_field \
            or definition.default_resolver is not getattr:
        return None
    return definition.python_name  # type: ignore[no-any-return]


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
            attribute = attribute_of(field)
            if attribute is None:
                continue
            nullable = not isinstance(field.type, GraphQLNonNull)
            leaf = field.type if nullable else field.type.of_type
            if isinstance(leaf, GraphQLScalarType | GraphQLEnumType):
                fields[name] = (attribute, leaf, nullable)
        if fields:
            plain[type_name] = fields
    _plain_fields[schema] = plain
    return plain


def lean_resolvers_ok() -> bool:
    """Whether Strawberry still has what `install_lean_resolvers` uses (its Info's private
    fields, the converter's exception handlers, the default resolver's marker)."""
    from strawberry.schema.schema_converter import GraphQLCoreConverter

    missing = [f for f in (internals.RAW_INFO, "_field") if f not in internals.info_fields()]
    if not callable(getattr(GraphQLCoreConverter, "_get_field_exception_handlers", None)):
        missing.append("GraphQLCoreConverter._get_field_exception_handlers")
    if missing:
        log.warning("accel: Strawberry changed shape (missing %s); lean resolvers are off",
                    ", ".join(missing))
        return False
    return True


def install_lean_resolvers(schema: strawberry.Schema) -> int:
    """Call plain resolvers directly; returns how many fields now do.

    A field with a resolver method, such as a relation (`ListItem.gift(self, info)`), goes
    through Strawberry's generic wrapper on every call: argument conversion, the field
    extension chain (a `reduce` of partials), three nested calls, then the method. For a
    resolver that has none of what the wrapper is for (no arguments, no field extensions
    or permission classes, no exception handlers, not async) the result is exactly
    `method(source, Info(...))`, which is what this installs as the field's `resolve`
    (with `root`/`parent` and `info` passed as the resolver asks for them). Hundreds of
    such fields resolve in a nested read, each paying for the wrapper.
    """
    converter = schema.schema_converter
    info_class = schema.config.info_class
    installed = 0
    for type_name, gtype in internals.graphql_schema(schema).type_map.items():
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
    func: Any = resolver.wrapped_func
    with_self = resolver.self_parameter is not None
    parameters: list[Any] = [resolver.parent_parameter, resolver.root_parameter]
    by_name = [p.name for p in parameters if p]
    info_parameter: Any = resolver.info_parameter
    info_name = info_parameter.name if info_parameter else None

    if with_self and not by_name and info_name is not None:  # `def field(self, info)`
        def resolve_with_info(source: Any, info: Any) -> Any:
            return func(source, **{info_name: info_class(_raw_info=info, _field=definition)})

        resolve_with_info.lean_call = (func, info_name, definition, info_class)  # type: ignore[attr-defined]
        return resolve_with_info

    def resolve(source: Any, info: Any) -> Any:
        kwargs = dict.fromkeys(by_name, source)
        if info_name is not None:
            kwargs[info_name] = info_class(_raw_info=info, _field=definition)
        return func(source, **kwargs) if with_self else func(**kwargs)

    return resolve
