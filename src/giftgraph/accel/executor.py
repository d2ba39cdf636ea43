"""The fast execution paths: compiled reads, a lean executor for queries and a fast path for
plain scalar fields (lean resolvers: accel/resolvers.py; the executor's records and leaf
serialization: accel/values.py). `shape_ok` checks the graphql-core internals they use
before `accel.switch.install` turns them on.

A query the SQL compiler translates (accel/compiled.py) runs as one statement that
returns the response's JSON; everything below is for the queries it does not translate
(and for a compiled statement that failed).

Most fields of a read are scalars read straight off an object (`name`, `status`...), and a
nested read has thousands. For a field that is exactly that (Strawberry's default
resolver, no arguments, no field extensions, a scalar or enum type, no middleware) the value
is read and serialized here, without graphql-core's `ResolveInfo`, Strawberry's resolver
wrapper and `complete_value`; whenever the result is not an ordinary value (missing, null
where not allowed, a serializer error), the field goes through graphql-core's own path.

A query is first run by a lean executor (`execute_operation`): graphql-core's field
collection, resolvers, argument coercion and serialization without its per-field machinery
(a `Path` and a coroutine per field, error handling, incremental delivery). Awaitables are
taken in waves (all a wave uncovers, awaited together, which lets DataLoaders batch them).
It serves only the ordinary case: on any error, null in a non-null position, an iterable
other than a list or tuple, a coroutine in a list or other exception it declines, and
graphql-core runs the query from the start (a query changes nothing; its DataLoaders keep
what they loaded; a failed read is first cleared from the transaction: `before_rerun`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any

from graphql import (
    ExecutionResult,
    FieldNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLResolveInfoHelpers,
    GraphQLScalarType,
    GraphQLUnionType,
    OperationType,
    Undefined,
)
from graphql.execution import Executor as GraphQLCoreExecutionContext
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet, collect_fields
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path

from giftgraph.accel.plans import PLANS, CompiledRead
from giftgraph.accel.resolvers import attribute_of, plain_fields
from giftgraph.accel.source import source_of
from giftgraph.accel.values import (
    AS_IS,
    Decline,
    Later,
    LeanPlan,
    Step,
    StepInfo,
    close_unawaited,
    discard,
    leaf_value,
)
from giftgraph.admission.answers import Refused, refusal
from giftgraph.db.session import timed_out
from giftgraph.errors import AppError, QueryTooComplex
from giftgraph.schema.execution import ExecutionContext
from giftgraph.schema.loaders import held_loads

log = logging.getLogger("giftgraph.execution")
_MISSING = object()
_SUBFIELDS = "_relevant_sub_fields"  # graphql-core's collect_subfields memo (its private name)


# What the lean executor calls or reads of graphql-core's execution context (methods), and
# the fields its `__init__` assigns that it reads or replaces.
EXECUTOR_METHODS = ("execute_operation", "execute_field", "build_per_event_executor",
                    "collect_subfields", "build_resolve_info", "ensure_valid_runtime_type",
                    "build_response", "gather_async_work", "track_async_work")
EXECUTOR_FIELDS = ("middleware_manager", "abort_signal", "hide_suggestions", "async_helpers",
                   "is_awaitable", "type_resolver", "field_resolver", "variable_values",
                   "fragments", "operation", "root_value", "context_value")


def shape_ok() -> bool:
    """Whether graphql-core's execution context still has what the lean executor uses.
    False: logged, and graphql-core's executor (Strawberry's context) runs every query."""
    missing = [m for m in EXECUTOR_METHODS
               if not callable(getattr(GraphQLCoreExecutionContext, m, None))]
    source = source_of(GraphQLCoreExecutionContext.__init__)
    missing += [f for f in EXECUTOR_FIELDS if f"self.{f}" not in source]
    parameters = list(inspect.signature(collect_fields).parameters)[:6]
    if parameters != ["schema", "fragments", "variable_values", "runtime_type", "operation",
                      "hide_suggestions"]:
        missing.append("collect_fields(schema, fragments, variables, type, operation, hide)")
    if missing:
        log.warning("accel: graphql-core's executor changed shape (missing %s); the lean "
                    "executor and compiled reads are off", ", ".join(missing))
        return False
    return True


# How long a wave's values are completed before other requests get a turn of the event
# loop: a wave of 600 items' objects is ~40 ms of completing, which every other request
# waited behind whole.
SLICE_S = 0.002


def expected(exc: Exception) -> bool:
    """An error a resolver raised to answer with (giftgraph.errors.AppError, also as
    Strawberry wraps it): not the database failing, whose transaction graphql-core's run
    starts again (`before_rerun`)."""
    return isinstance(exc, AppError) or (isinstance(exc, GraphQLError)
                                         and isinstance(exc.original_error, AppError))


class LeanExecutionContext(ExecutionContext):
    """Strawberry's execution context, plus the lean query executor, compiled reads and
    the plain-scalar fast path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager  # Strawberry passes one, empty unless an
        wrapped = manager is not None and bool(manager.middlewares)  # extension resolves
        self.plain = {} if wrapped else plain_fields(self.schema)
        self.lean = not wrapped
        # Per operation. graphql-core's per-event executors of a subscription are shallow
        # copies of this context (sharing this dict), but they never run the lean path
        # (queries only).
        self.lean_plans: dict[tuple[GraphQLObjectType, int], LeanPlan] = {}

    # graphql-core keeps `GraphQLResolveInfoHelpers` of the executor's own bound methods on
    # the executor: a reference cycle, so every operation's executor, and with it its
    # context, the request and all they hold (~70 objects a mutation), was garbage only the
    # cyclic collector could free, and it ran that much more often. Made on each read
    # instead (once per resolve info); nothing refers back. Shallow copies (sub-executors)
    # share the state these methods use, so binding them to the copy changes nothing.
    @property
    def async_helpers(self) -> GraphQLResolveInfoHelpers:
        return GraphQLResolveInfoHelpers(gather=self.gather_async_work,
                                         track=self.track_async_work)

    @async_helpers.setter
    def async_helpers(self, _: GraphQLResolveInfoHelpers) -> None:
        """The base `__init__`'s assignment: not kept (see above)."""

    # graphql-core memoizes `collect_subfields` in a dict keyed by the id of each field
    # list, and keeps the list (so the id stays unique). A subscription's per-event
    # executors are shallow copies sharing that dict, and every event brings new lists: it
    # grew by an entry (~1 KB) per event for as long as the subscription, or a shared
    # render's plan (accel/render.py, the process's life), lived. Each event gets its own.
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

    async def run_compiled(self, plan: CompiledRead, serially: bool | None) -> Any:
        """The query as one statement (accel/compiled.py). If the statement fails (the
        database, an error) or a required root object is missing, the lean executor runs
        it from the start and reports what it finds. Not after a timeout: a read that ran
        out its time once would take it again, and as long on the executor's path (an
        adversary's: 10 s of PostgreSQL, then 230-340 ms of the loop); its error is the
        answer."""
        try:
            data = await plan.run(self)
        except Refused as refused:  # over max_response_bytes: PostgreSQL sent only its size
            self.count_compiled("compiled")
            return self.finish(self.refuse(plan, refused.size))
        except Exception as exc:
            if timed_out(exc):
                self.count_compiled("timeout")
                return self.finish(ExecutionResult(None, [GraphQLError(
                    "statement timed out", path=[plan.first], original_error=exc)]))
            # Logged, never sent: the executor's answer is the client's.
            log.warning("compiled read failed, the executor serves it (traceId=%s)",
                        getattr(self.context_value, "trace_id", None), exc_info=True)
            data = None
        if data is not None:
            self.count_compiled("compiled")
            return self.finish(self.build_response(data))  # type: ignore[arg-type]
        self.count_compiled("fallback")
        await self.before_rerun()
        result = self.lean_operation(serially)
        return await result if self.is_awaitable(result) else result

    def refuse(self, plan: CompiledRead, size: int) -> ExecutionResult:
        """The answer to a compiled read that is `size` bytes, over the bound: no
        data, and QUERY_TOO_COMPLEX at its first root field, as admission.answers writes
        for an executed one. Its caller pays what was built (`answer_bytes`)."""
        ctx = self.context_value
        limit = ctx.settings.max_response_bytes
        refusals = None if ctx.metrics is None else ctx.metrics.refusals
        message = refusal(size, limit, refusals, trace_id=ctx.trace_id)
        if ctx.charge_answer is not None:
            ctx.charge_answer(size, 0)
        return ExecutionResult(None, [GraphQLError(message, path=[plan.first],
                                                   original_error=QueryTooComplex(message))])

    def count_compiled(self, outcome: str) -> None:
        metrics = getattr(self.context_value, "metrics", None)
        if metrics is not None:
            metrics.compiled_reads.labels(outcome).inc()

    def lean_operation(self, serially: bool | None) -> Any:
        later: list[Later] = []
        try:
            data = self.lean_root(later)
        except Exception:  # Decline, or any error: graphql-core's run reports it
            discard(later)
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
            values = await asyncio.gather(*(entry.awaitable for entry in wave),
                                          return_exceptions=True)
            try:
                with held_loads():  # the wave's loads made together: a batch a loader
                    await self._complete(wave, values, later)
            except Exception:  # Decline, or any error: graphql-core's run reports it
                discard(later)
                await self.before_rerun()
                result = super().execute_operation(serially)
                return await result if self.is_awaitable(result) else result
        return self.finish(self.build_response(data))

    async def _complete(self, wave: list[Later], values: list[Any],
                        later: list[Later]) -> None:
        """A wave's values completed into their containers, in slices of `SLICE_S`
        between which other requests get turns of the event loop."""
        turn = time.perf_counter()
        for entry, value in zip(wave, values, strict=True):
            if time.perf_counter() - turn > SLICE_S:
                await asyncio.sleep(0)
                turn = time.perf_counter()
            _, rtype, details, info, path, container, key = entry
            if isinstance(value, BaseException):
                if not isinstance(value, Exception):
                    raise value  # cancellation: not ours to handle
                if not expected(value) or isinstance(rtype, GraphQLNonNull):
                    raise Decline from value
                # A nullable field's expected error (NOT_FOUND, FORBIDDEN...): null and
                # the error at its path, as graphql-core's run would answer, without
                # running the whole operation again there (an adversary's failing field
                # had every value of its answer built twice, the second time slowly).
                container[key] = None
                self.handle_field_error(value, rtype, details, path)
                continue
            container[key] = self.lean_value(rtype, details, info, path, value, later)

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
        for key, spec, field, details, nodes, args, attribute, shared in plan.steps:
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
                result[key] = value if (leaf, kind) in AS_IS else leaf_value(leaf, value)
                continue
            field_path = Path(path, key, parent.name)
            if attribute is not None:  # an object or list read off the source (`edges`,
                value = getattr(source, attribute, _MISSING)  # `node`): no resolver to call
                if value is _MISSING:
                    raise Decline
                assert field is not None
                result[key] = self.lean_value(field.type, details, None, field_path, value,
                                              later)
                continue
            assert shared is not None
            assert field is not None
            assert nodes is not None
            assert args is not None
            info = shared.info
            if info is None:  # the first object: the step's info, for every object after it
                info = self.lean_info(shared, field, nodes, parent, field_path)
            call = shared.call
            value = call(source, **(shared.kwargs or {})) if call is not None \
                else (field.resolve or self.field_resolver)(source, info, **args)
            if self.is_awaitable(value):
                result[key] = None
                later.append(Later(value, field.type, details, info, field_path, result, key))
            else:
                result[key] = self.lean_value(field.type, details, info, field_path, value,
                                              later)
        return result

    def lean_plan(self, parent: GraphQLObjectType, grouped: GroupedFieldSet) -> LeanPlan:
        """What lean_fields does for each field of `grouped` on `parent`, worked out once
        per operation: the plain scalar's spec, or the field and its coerced arguments
        (the same for every object: they depend only on the node and the variables)."""
        plain = self.plain.get(parent.name) or {}
        steps: list[Step] = []
        for key, details in grouped.items():
            node = details[0].node
            name = node.name.value
            spec = plain.get(name)
            if spec is not None:
                steps.append(Step(key, spec, None, details, None, None, None, None))
                continue
            field = self.schema.get_field(parent, name)
            if field is None:
                continue  # graphql-core leaves an unknown field out, as here
            args = get_argument_values(field, node, self.variable_values,
                                       details[0].fragment_variable_values,
                                       self.hide_suggestions) \
                if field.args or node.arguments else {}
            steps.append(Step(key, None, field, details, [d.node for d in details], args,
                              attribute_of(field), StepInfo()))
        plan = LeanPlan(grouped, steps)
        self.lean_plans[parent, id(grouped)] = plan
        return plan

    def lean_info(self, shared: StepInfo, field: GraphQLField, nodes: list[FieldNode],
                  parent: GraphQLObjectType, path: Path) -> GraphQLResolveInfo[Any]:
        """A resolver step's info, built at its first object and passed to every object
        after it: the field, its nodes, the parent type, the operation, the variables and
        the context are the same for all of them; only `path` (the first object's) is not,
        and no resolver reads it (an error declines, and graphql-core's run has the real
        paths). A plain resolver (`def relation(self, info)`, see `install_lean_resolvers`)
        is then called with the step's one Strawberry Info, without its wrapper."""
        info = shared.info = self.build_resolve_info(field, nodes, parent, path)
        lean = getattr(field.resolve, "lean_call", None)
        if lean is not None:
            func, info_name, definition, info_class = lean
            shared.call = func
            shared.kwargs = {info_name: info_class(_raw_info=info, _field=definition)}
        return info

    def lean_value(self, rtype: GraphQLOutputType, details: FieldDetailsList,
                   info: GraphQLResolveInfo[Any] | None, path: Path, value: Any,
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
            return value if (rtype, type(value)) in AS_IS else leaf_value(rtype, value)
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
                    later.append(Later(item, item_type, details, info, item_path, items, index))
                else:
                    items.append(self.lean_value(item_type, details, info, item_path, item,
                                                 later))
            return items
        if isinstance(rtype, GraphQLObjectType):
            if rtype.is_type_of is not None:
                matches = rtype.is_type_of(value, info)  # type: ignore[arg-type]
                if matches is not True:
                    close_unawaited(matches)
                    raise Decline
            grouped, defers, _ = self.collect_subfields(rtype, details)
            if defers:
                raise Decline
            return self.lean_fields(rtype, value, path, grouped, later)
        if isinstance(rtype, GraphQLInterfaceType | GraphQLUnionType) and info is not None:
            # graphql-core's own resolution of the runtime type (an invalid one raises)
            name = (rtype.resolve_type or self.type_resolver)(value, info, rtype)
            if self.is_awaitable(name):
                close_unawaited(name)
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

