"""Execution: compiled reads, a lean executor for queries, a fast path for plain scalar
fields, and lean resolvers.

A query the SQL compiler translates (schema/compiled.py) runs as one statement that
returns the response's JSON; everything below is for the queries it does not translate
(and for a compiled statement that failed).

Most fields of a read are scalars read straight off an object (`name`, `status`,
`price`...). Strawberry already gives them a bare `getattr` resolver, but graphql-core still
builds a `ResolveInfo`, calls the resolver through Strawberry's wrapper, and dispatches
`complete_value` for each of them: ~2,000 such fields in the nested list query. For a field
that is exactly that (Strawberry's default resolver, no arguments, no field extensions, a
scalar or enum type, no graphql-core middleware) the value is read and serialized here
directly; whenever the result is not an ordinary value (missing, null where null is not
allowed, a serializer error), the field goes through graphql-core's own path, which produces
the standard result or error.

A query is first run by a lean executor (`ExecutionContext.execute_operation`): the same
field collection, resolvers, argument coercion and serialization as graphql-core's, without
its per-field machinery (a `Path` and a coroutine per field, error handling, incremental
delivery). Awaitable results are taken in waves: every awaitable a wave uncovers (all the
`items` pages of a page of lists, then all their gifts...) is awaited together, which is
also what lets DataLoaders batch them. Interfaces and unions resolve their runtime type as
graphql-core does. It serves only the ordinary case: on any error, null in a non-null
position, iterable other than a list or tuple (it may be readable only once), coroutine in a
list or other exception to the rule it declines, and graphql-core runs the query from the
start and produces the standard result and errors. A query changes nothing, so running it
again is safe; its DataLoaders already hold what the first attempt loaded, and a read that
failed is first cleared from the operation's transaction (`before_rerun`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar
from weakref import WeakKeyDictionary

from graphql import (
    FieldNode,
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLField,
    GraphQLID,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLResolveInfoHelpers,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLString,
    GraphQLUnionType,
    OperationType,
    Undefined,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet, collect_fields
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.field import StrawberryField

from giftgraph.schema.compiled import PLANS, Plan

if TYPE_CHECKING:
    import strawberry

log = logging.getLogger("giftgraph.execution")
DEFINITION = "strawberry-definition"
_MISSING = object()
_SUBFIELDS = "_relevant_sub_fields"  # graphql-core's collect_subfields memo (its private name)

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


class Decline(Exception):
    """The lean executor leaves this query to graphql-core."""


# An awaitable result waiting for its wave: (awaitable, field type, field details, info,
# path, container, key).
Later = tuple[Awaitable[Any], GraphQLOutputType, FieldDetailsList,
              GraphQLResolveInfo | None, Path, Any, Any]


class ExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, plus the lean query executor and the plain-scalar
    fast path."""

    # False (`quiet`): no error of the variables' coercion or of execution suggests a
    # name (graphql-core's `hide_suggestions`, which Strawberry never passes).
    suggest: ClassVar[bool] = True

    @classmethod
    def build(cls, *args: Any, hide_suggestions: bool = False, **kwargs: Any) -> Any:
        return super().build(*args, hide_suggestions=hide_suggestions or not cls.suggest,
                             **kwargs)

    @classmethod
    def quiet(cls) -> type[ExecutionContext]:
        """This class, suggesting nothing (production)."""
        return type("QuietExecutionContext", (cls,), {"suggest": False})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager  # Strawberry passes one, empty unless an
        wrapped = manager is not None and bool(manager.middlewares)  # extension resolves
        self.plain = {} if wrapped else plain_fields(self.schema)
        self.lean = not wrapped
        # Per operation. graphql-core's per-event executors of a subscription are shallow
        # copies of this context (sharing this dict), but they never run the lean path
        # (queries only).
        self.lean_plans: dict[tuple[GraphQLObjectType, int], Any] = {}

    # graphql-core keeps `GraphQLResolveInfoHelpers` of the executor's own bound methods on
    # the executor: a reference cycle, so every operation's executor, and with it its
    # context, the request and all they hold (~70 objects a mutation), was garbage only the
    # cyclic collector could free, and it ran that much more often. Made on each read
    # instead (once per resolve info); nothing refers back. Shallow copies (sub-executors)
    # share the state these methods use, so binding them to the copy changes nothing.
    @property
    def async_helpers(self) -> GraphQLResolveInfoHelpers:  # type: ignore[override]
        return GraphQLResolveInfoHelpers(gather=self.gather_async_work,
                                         track=self.track_async_work)

    @async_helpers.setter
    def async_helpers(self, _: GraphQLResolveInfoHelpers) -> None:
        """The base `__init__`'s assignment: not kept (see above)."""

    # graphql-core memoizes `collect_subfields` in a dict keyed by the id of each field
    # list, and keeps the list (so the id stays unique). A subscription's per-event
    # executors are shallow copies sharing that dict, and every event brings new lists: it
    # grew by an entry (~1 KB) per event for as long as the subscription, or a shared
    # render's plan (live/render.py, the process's life), lived. Each event gets its own.
    def build_per_event_executor(self, payload: Any) -> Any:
        executor = super().build_per_event_executor(payload)
        if isinstance(getattr(executor, _SUBFIELDS, None), dict):  # graphql-core 3.3
            setattr(executor, _SUBFIELDS, {})
        return executor

    # ------------------------------------------------------------ the lean executor

    def execute_operation(self, serially: bool | None = None) -> Any:
        if not self.lean or self.operation.operation is not OperationType.QUERY \
                or serially or self.abort_signal is not None:
            return super().execute_operation(serially)
        settings = getattr(self.context_value, "settings", None)
        if settings is not None and settings.compile_reads:
            plan = PLANS.get(self)
            if plan is not None:
                return self.run_compiled(plan, serially)
            self.count_compiled("executor")
        return self.lean_operation(serially)

    async def run_compiled(self, plan: Plan, serially: bool | None) -> Any:
        """The query as one statement (schema/compiled.py). If the statement fails (the
        database, a timeout) or a required root object is missing, the lean executor runs
        it from the start and reports what it finds."""
        try:
            data = await plan.run(self)
        except Exception:
            # Logged, never sent: the executor's answer is the client's.
            log.warning("compiled read failed, the executor serves it (traceId=%s)",
                        getattr(self.context_value, "trace_id", None), exc_info=True)
            data = None
        if data is not None:
            self.count_compiled("compiled")
            return self.finish(self.build_response(data))
        self.count_compiled("fallback")
        await self.before_rerun()
        result = self.lean_operation(serially)
        return await result if self.is_awaitable(result) else result

    def count_compiled(self, outcome: str) -> None:
        metrics = getattr(self.context_value, "metrics", None)
        if metrics is not None:
            metrics.compiled_reads.labels(outcome).inc()

    def lean_operation(self, serially: bool | None) -> Any:
        later: list[Later] = []
        try:
            data = self.lean_root(later)
        except Exception:  # Decline, or any error: graphql-core's run reports it
            _discard(later)
            self.lean_plans.clear()
            return super().execute_operation(serially)
        if not later:
            self.lean_plans.clear()
            return self.finish(self.build_response(data))
        return self.lean_waves(data, later, serially)

    async def lean_waves(self, data: dict[str, Any], later: list[Later],
                         serially: bool | None) -> Any:
        try:
            return await self._lean_waves(data, later, serially)
        finally:
            # The plans hold resolve infos, which refer back to this executor: dropped
            # here, the executor is freed by reference counting, not the cyclic GC.
            self.lean_plans.clear()

    async def _lean_waves(self, data: dict[str, Any], later: list[Later],
                          serially: bool | None) -> Any:
        while later:
            wave, later = later, []
            values = await asyncio.gather(*(entry[0] for entry in wave), return_exceptions=True)
            try:
                for entry, value in zip(wave, values, strict=True):
                    if isinstance(value, BaseException):
                        if not isinstance(value, Exception):
                            raise value  # cancellation: not ours to handle
                        raise Decline from value
                    _, rtype, details, info, path, container, key = entry
                    container[key] = self.lean_value(rtype, details, info, path, value, later)
            except Exception:  # Decline, or any error: graphql-core's run reports it
                _discard(later)
                await self.before_rerun()
                result = super().execute_operation(serially)
                return await result if self.is_awaitable(result) else result
        return self.finish(self.build_response(data))

    async def before_rerun(self) -> None:
        """A read that failed in the lean run may have aborted the operation's transaction:
        the context ends it (`recover_reads`), so that graphql-core's run of the query reads
        as it would have on its own. DataLoaders keep their failed loads: those fail again
        without a statement."""
        recover = getattr(self.context_value, "recover_reads", None)
        if recover is not None:
            await recover()

    def lean_root(self, later: list[Later]) -> dict[str, Any]:
        root_type = self.schema.get_root_type(OperationType.QUERY)
        if root_type is None:
            raise Decline
        try:
            grouped, defers, _ = collect_fields(self.schema, self.fragments,
                                                self.variable_values, root_type,
                                                self.operation, self.hide_suggestions)
        except RecursionError:
            grouped, defers = None, None
        if grouped is None or defers:
            raise Decline
        return self.lean_fields(root_type, self.root_value, None, grouped, later)

    def lean_fields(self, parent: GraphQLObjectType, source: Any, path: Path | None,
                    grouped: GroupedFieldSet, later: list[Later]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        plan = self.lean_plans.get((parent, id(grouped)))
        if plan is None:
            plan = self.lean_plan(parent, grouped)
        for key, spec, field, details, nodes, args, attribute, shared in plan[1]:
            if spec is not None:  # a plain scalar
                python_name, leaf, nullable = spec
                value = getattr(source, python_name, _MISSING)
                if value is None:
                    if not nullable:
                        raise Decline
                    result[key] = None
                    continue
                if value is _MISSING:
                    raise Decline
                kind = type(value)
                result[key] = value if (leaf, kind) in _AS_IS else _leaf(leaf, value)
                continue
            field_path = Path(path, key, parent.name)
            if attribute is not None:  # an object or list read off the source (`edges`,
                value = getattr(source, attribute, _MISSING)  # `node`): no resolver to call
                if value is _MISSING:
                    raise Decline
                result[key] = self.lean_value(field.type, details, None, field_path, value,
                                              later)
                continue
            info = shared[0]
            if info is None:  # the first object: the step's info, for every object after it
                info = self.lean_info(shared, field, nodes, parent, field_path)
            call = shared[1]
            value = call(source, **shared[2]) if call is not None \
                else (field.resolve or self.field_resolver)(source, info, **args)
            if self.is_awaitable(value):
                result[key] = None
                later.append((value, field.type, details, info, field_path, result, key))
            else:
                result[key] = self.lean_value(field.type, details, info, field_path, value,
                                              later)
        return result

    def lean_plan(self, parent: GraphQLObjectType, grouped: GroupedFieldSet) -> Any:
        """What lean_fields does for each field of `grouped` on `parent`, worked out once
        per operation: the plain scalar's spec, or the field and its coerced arguments
        (the same for every object: they depend only on the node and the variables)."""
        plain = self.plain.get(parent.name) or {}
        steps = []
        for key, details in grouped.items():
            node = details[0].node
            name = node.name.value
            spec = plain.get(name)
            if spec is not None:
                steps.append((key, spec, None, details, None, None, None, None))
                continue
            field = self.schema.get_field(parent, name)
            if field is None:
                continue  # graphql-core leaves an unknown field out, as here
            args = get_argument_values(field, node, self.variable_values,
                                       details[0].fragment_variable_values,
                                       self.hide_suggestions) \
                if field.args or node.arguments else {}
            steps.append((key, None, field, details, [d.node for d in details], args,
                          attribute_of(field), [None, None, None]))
        plan = (grouped, steps)  # holds `grouped`, so that its id() is not reused
        self.lean_plans[parent, id(grouped)] = plan
        return plan

    def lean_info(self, shared: list[Any], field: GraphQLField, nodes: list[FieldNode],
                  parent: GraphQLObjectType, path: Path) -> GraphQLResolveInfo:
        """A resolver step's info, built at its first object and passed to every object
        after it: the field, its nodes, the parent type, the operation, the variables and
        the context are the same for all of them; only `path` (the first object's) is not,
        and no resolver reads it (an error declines, and graphql-core's run has the real
        paths). A plain resolver (`def relation(self, info)`, see `install_lean_resolvers`)
        is then called with the step's one Strawberry Info, without its wrapper."""
        info = shared[0] = self.build_resolve_info(field, nodes, parent, path)
        lean = getattr(field.resolve, "lean_call", None)
        if lean is not None:
            func, info_name, definition, info_class = lean
            shared[1] = func
            shared[2] = {info_name: info_class(_raw_info=info, _field=definition)}
        return info

    def lean_value(self, rtype: GraphQLOutputType, details: FieldDetailsList,
                   info: GraphQLResolveInfo | None, path: Path, value: Any,
                   later: list[Later]) -> Any:
        """`value` completed as `rtype`. `info` is None for a field read off its source:
        Strawberry's `is_type_of` does not look at it (and any that does fails here, which
        declines to graphql-core)."""
        if isinstance(rtype, GraphQLNonNull):
            if value is None or value is Undefined:
                raise Decline
            rtype = rtype.of_type
        elif value is None or value is Undefined:
            return None
        if isinstance(value, Exception):
            raise Decline
        if isinstance(rtype, GraphQLScalarType | GraphQLEnumType):
            return value if (rtype, type(value)) in _AS_IS else _leaf(rtype, value)
        if isinstance(rtype, GraphQLList):
            if not isinstance(value, list | tuple):
                raise Decline  # graphql-core's run reads it (it may be readable only once)
            item_type = rtype.of_type
            items: list[Any] = []
            for index, item in enumerate(value):
                item_path = path.add_key(index)
                if asyncio.iscoroutine(item):
                    raise Decline  # awaitable once: left for graphql-core's run, unawaited
                if self.is_awaitable(item):  # a future: completed in the next wave, in place
                    items.append(None)
                    later.append((item, item_type, details, info, item_path, items, index))
                else:
                    items.append(self.lean_value(item_type, details, info, item_path, item,
                                                 later))
            return items
        if isinstance(rtype, GraphQLObjectType):
            if rtype.is_type_of is not None:
                matches = rtype.is_type_of(value, info)
                if matches is not True:
                    _close(matches)
                    raise Decline
            grouped, defers, _ = self.collect_subfields(rtype, details)
            if defers:
                raise Decline
            return self.lean_fields(rtype, value, path, grouped, later)
        if isinstance(rtype, GraphQLInterfaceType | GraphQLUnionType) and info is not None:
            # graphql-core's own resolution of the runtime type (an invalid one raises)
            name = (rtype.resolve_type or self.type_resolver)(value, info, rtype)
            if self.is_awaitable(name):
                _close(name)
                raise Decline
            runtime = self.ensure_valid_runtime_type(name, rtype, details, info, value)
            return self.lean_value(runtime, details, info, path, value, later)
        raise Decline

    # ------------------------------------------------------------ graphql-core's path

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
                elif value is not _MISSING and not isinstance(value, Exception):
                    try:
                        serialized = leaf.serialize(value)
                    except Exception:  # graphql-core's own path reports it
                        serialized = None
                    if serialized is not None and serialized is not Undefined:
                        return serialized
        return super().execute_field(parent_type, source, field_details_list, path,
                                     position_context)


# Values graphql-core's built-in scalars return as they are (Int and Float check more).
_AS_IS = {(GraphQLString, str), (GraphQLID, str), (GraphQLBoolean, bool)}


# Each enum type's names of the members met so far (Strawberry's enum serializer scans
# every value of the type on each call).
_enum_names: WeakKeyDictionary[GraphQLEnumType, dict[enum.Enum, Any]] = WeakKeyDictionary()


def _leaf(leaf: GraphQLScalarType | GraphQLEnumType, value: Any) -> Any:
    """The serialized value, or Decline where graphql-core would report an error."""
    if isinstance(value, enum.Enum) and isinstance(leaf, GraphQLEnumType):
        names = _enum_names.get(leaf)
        if names is None:
            names = _enum_names[leaf] = {}
        name = names.get(value)
        if name is None:
            name = names[value] = _coerce(leaf, value)
        return name
    return _coerce(leaf, value)


def _coerce(leaf: GraphQLScalarType | GraphQLEnumType, value: Any) -> Any:
    if isinstance(value, Exception):  # graphql-core raises it as the field's error
        raise Decline
    try:
        serialized = leaf.coerce_output_value(value)
    except Exception as exc:
        raise Decline from exc
    if serialized is None or serialized is Undefined:
        raise Decline
    return serialized


def _discard(later: list[Any]) -> None:
    """Awaitables the lean executor will not await: close the coroutines resolvers returned
    (graphql-core's run calls the resolvers again), and mark futures' exceptions as seen
    (graphql-core's run loads them again from the same DataLoaders). List items (futures)
    are left alone: the list may be an attribute that graphql-core's run reads again."""
    for entry in later:
        if not isinstance(entry[5], list):
            _close(entry[0])


def _close(awaitable: Any) -> None:
    """Leave an awaitable unawaited without a warning or an unseen exception."""
    if asyncio.iscoroutine(awaitable):
        awaitable.close()
    elif isinstance(awaitable, asyncio.Future):
        awaitable.add_done_callback(_seen)


def _seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


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

        resolve_with_info.lean_call = (func, info_name, definition, info_class)  # type: ignore[attr-defined]
        return resolve_with_info

    def resolve(source: Any, info: Any) -> Any:
        kwargs = dict.fromkeys(by_name, source)
        if info_name is not None:
            kwargs[info_name] = info_class(_raw_info=info, _field=definition)
        return func(source, **kwargs) if with_self else func(**kwargs)

    return resolve
