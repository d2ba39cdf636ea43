"""Shared rendering for event subscriptions: each event is executed and serialized once per
distinct selection (family, document, operation, variables the selection uses) per process,
and the same bytes go to every subscriber with that selection.

Strawberry runs the whole execution pipeline (graphql-core execution, every extension's
hooks, JSON encoding) once per event *per subscriber*; with thousands of subscribers on
one list that is the fan-out's entire cost. A subscription running on the direct socket
handler (`accel.sockets.DirectSink` in a ContextVar) skips it: its resolver asks
`SharedRenderer` for the event's `next` payload and writes it to the socket itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import inspect
import sys
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    SelectionSetNode,
    VariableNode,
    print_ast,
)
from graphql.execution import Executor
from graphql.language import Visitor, visit

from giftgraph.accel import internals
from giftgraph.admission.answers import measured
from giftgraph.admission.documents import measure
from giftgraph.context import Context
from giftgraph.db import models as m
from giftgraph.jsonbytes import kept_json
from giftgraph.live.streams import SharedScopes
from giftgraph.schema.extensions import forget_traceback

PLANS_KEPT = 256  # distinct selections remembered per process
RESULTS_KEPT = 64  # rendered events remembered per selection (late subscribers reuse them)


class _Variables(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.spreads: set[str] = set()

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.names.add(node.name.value)

    def enter_fragment_spread(self, node: FragmentSpreadNode, *_: Any) -> None:
        self.spreads.add(node.name.value)


def selection_variables(selection: SelectionSetNode | None,
                        fragments: dict[str, Any]) -> set[str]:
    """Names of the variables a selection set uses, following fragment spreads."""
    names: set[str] = set()
    seen: set[str] = set()
    todo: list[Any] = [selection] if selection is not None else []
    while todo:
        visitor = _Variables()
        visit(todo.pop(), visitor)
        names |= visitor.names
        for spread in visitor.spreads - seen:
            seen.add(spread)
            if spread in fragments:
                todo.append(fragments[spread])
    return names


def _detached(context: Any) -> Any:
    """The subscriber's context for a plan, which outlives the subscriber (PLANS_KEPT): its
    caller and the app's services, not its socket (which, with all its handler holds,
    would stay in memory as long as the plan)."""
    if isinstance(context, Context):
        # No request: nothing an event's fields resolve reads it.
        return dataclasses.replace(context, request=None,  # type: ignore[arg-type]
                                   response=None, authorization=None, connection_params=None)
    return context


def _freeze(value: Any) -> Hashable:
    return kept_json(value, orjson.OPT_SORT_KEYS)


class SharedSelection:
    """One selection of one family: a graphql-core executor built (and its variables
    coerced) once, and the rendered `next` payloads of recent events."""

    def __init__(self, owner: SharedRenderer, executor: Executor[Any], family_id: uuid.UUID,
                 format_error: Callable[[GraphQLError, str], GraphQLError],
                 to_root: Callable[[m.Event], Any],
                 extensions: dict[str, Any] | None = None, cost: int = 0) -> None:
        self.owner = owner
        self.cost = cost  # the selection's measured cost (admission.documents)
        self.executor = executor
        self.family_id = family_id
        self.format_error = format_error
        self.to_root = to_root
        self.extensions = extensions  # each payload's, as the operation's own would have
        self.results: OrderedDict[int, asyncio.Task[bytes]] = OrderedDict()
        # the finished ones among `results` (never replaced: a parked subscription holds
        # its `get`)
        self.made: dict[int, bytes] = {}

    def ready(self, seq: int) -> bytes | None:
        """The payload of the event with this seq if it is rendered already, else None."""
        return self.made.get(seq)

    async def render(self, row: m.Event) -> bytes:
        """The `next` payload (UTF-8 JSON) of this event for this selection, computed once
        in its own task so that no subscriber's cancellation can abort the others'."""
        return await self._shared(row.seq, ("event", self.family_id, row.seq), row,
                                  self.to_root)

    async def render_snapshot(self, version: int, dashboard: Any) -> bytes:
        """`render` for a dashboard snapshot (its `version`, unique in the process): the
        payload of the subscription's field resolving to `dashboard`."""
        return await self._shared(version, ("dashboard", self.family_id, version), dashboard,
                                  None, kept=1)

    async def _shared(self, key: int, scope: Hashable, value: Any,
                      to_root: Callable[[Any], Any] | None, kept: int = RESULTS_KEPT) -> bytes:
        """The render of `key`, shared, with the last `kept` renders of the plan (a
        dashboard's only its latest snapshot: a subscriber is only ever sent the
        current one, and a snapshot, every person's notes included, can be large)."""
        task = self.results.get(key)
        if task is None:
            # In a context of its own, not a copy of this subscriber's: the task is kept
            # (`results`) for RESULTS_KEPT events, and with the copy it kept the
            # subscriber's DirectSink, and through it its operation, handler, socket and
            # all they hold, long after the socket closed. The render needs none of it:
            # `_render` sets up its own scope.
            task = asyncio.get_running_loop().create_task(
                self._render(key, scope, value if to_root is None else to_root(value)),
                context=contextvars.Context())
            self.results[key] = task
            while len(self.results) > kept:
                self.made.pop(self.results.popitem(last=False)[0], None)
        if task.done():  # every subscriber after the first: no waiting, no new future
            return task.result()
        return await asyncio.shield(task)

    async def _render(self, key: int, scope: Hashable, root: Any) -> bytes:
        self.owner.renders += 1
        async with self.owner.scopes.use(scope, self.family_id):
            result = self.executor.build_per_event_executor(root).execute_operation(False)
            if inspect.isawaitable(result):
                result = await result
        payload: dict[str, Any] = {"data": result.data}  # type: ignore[union-attr]
        if result.errors:  # type: ignore[union-attr]
            trace_id = uuid.uuid4().hex
            payload["errors"] = [self.format_error(e, trace_id).formatted
                                 for e in result.errors]  # type: ignore[union-attr]
            for error in result.errors:  # type: ignore[union-attr]
                # Formatted and logged: its traceback's frames (the render's executor and
                # all it built) go now, not at the collector's next full pass.
                forget_traceback(error)
        if self.extensions:
            payload["extensions"] = self.extensions
        rendered = kept_json(payload)  # kept (`results`, `made`) for RESULTS_KEPT events
        charge = self.owner.charge
        if charge is not None:
            # What the family's subscribers had built for them: a family's 200 selections
            # of 4 pages each, re-rendered for each of its mutations, took a core through
            # the mutation pace alone (adversary, 2026-11-27). Its next request waits.
            # A render with errors may have built far more than it kept (an error nulls
            # its parents up to the event's field): it pays at least its selection's
            # measured cost, as an answer with errors does (admission.checks
            # `_charge_discarded`). Without it, 5 selections that failed below 100 items
            # each took 51-91% of a core (adversary, 2026-11-27).
            values = measured(payload, sys.maxsize)[1]
            if result.errors:  # type: ignore[union-attr]
                values = max(values, self.cost)
            charge(f"family:{self.family_id}", len(rendered), values)
        if key in self.results:  # still kept (not dropped while it was rendering)
            self.made[key] = rendered
        return rendered


def _measured(context: Any, schema: GraphQLSchema, document: DocumentNode,
              name: str | None, variables: dict[str, Any]) -> tuple[dict[str, Any] | None, int]:
    """What the operation's extensions add to each result that depends on the selection
    alone: `pageSizeCapped` (admission.checks.DocumentBounds), where a page asked for more
    than the maximum; and the selection's measured cost (what a render with errors is
    charged: `SharedSelection._render`)."""
    settings = getattr(context, "settings", None)
    if settings is None:
        return None, 0
    found = measure(schema, document, name, variables,
                    settings.default_page_size, settings.max_page_size)
    cost = (found.running or found.worst).cost
    if not found.capped:
        return None, cost
    return {"pageSizeCapped": {"maximum": settings.max_page_size,
                               "fields": sorted(found.capped)}}, cost


class SharedRenderer:
    """The process's plans, keyed by family and selection: every plan a subscription holds,
    and the PLANS_KEPT last used (a subscriber that comes back finds its plan, and the
    events it rendered, again)."""

    def __init__(self, scopes: SharedScopes) -> None:
        self.scopes = scopes
        self.plans: OrderedDict[Hashable, SharedSelection] = OrderedDict()
        # Every plan still held by a subscription, however long ago it was made: a family's
        # sockets, subscribing seconds apart among thousands of others, share one plan.
        self.held: weakref.WeakValueDictionary[Hashable, SharedSelection] = \
            weakref.WeakValueDictionary()
        self.renders = 0  # events executed and serialized, all plans together
        # Charges a family (`family:<id>`) a render's bytes and values (admission.answers:
        # `answer_bytes`, `answer_values`), as its own answers are; set by the app.
        self.charge: Callable[[str, int, int], None] | None = None

    def plan(self, info: Any, variables: dict[str, Any] | None, family_id: uuid.UUID,
             format_error: Callable[[GraphQLError, str], GraphQLError],
             to_root: Callable[[m.Event], Any]) -> SharedSelection | None:
        """The shared plan for this subscription's selection (`info` is Strawberry's,
        `variables` the raw ones the client sent), or None when it can't be shared:
        more than one root field, or directives on the root field."""
        raw_info = internals.raw_info(info)
        if raw_info is None:
            return None
        operation = raw_info.operation
        field_nodes: list[FieldNode] = raw_info.field_nodes
        root = operation.selection_set.selections
        if len(field_nodes) != 1 or len(root) != 1 or not isinstance(root[0], FieldNode) \
                or root[0].directives:
            return None
        fragments = dict(raw_info.fragments)
        used = selection_variables(field_nodes[0].selection_set, fragments)
        raw = variables or {}
        selected = {k: raw[k] for k in sorted(used) if k in raw}
        name = operation.name.value if operation.name else None
        text = operation.loc.source.body if operation.loc is not None else print_ast(operation)
        key = (family_id, text, name, _freeze(selected))
        plan = self.plans.get(key)
        if plan is not None:
            self.plans.move_to_end(key)
            return plan
        plan = self.held.get(key)
        if plan is not None:
            self._keep(key, plan)
            return plan
        document = DocumentNode(definitions=(operation, *fragments.values()))
        executor_class = getattr(info.schema, "execution_context_class", Executor)
        built = executor_class.build(  # graphql-core's own build, as Strawberry calls it
            raw_info.schema, document, context_value=_detached(info.context),
            raw_variable_values=raw, operation_name=name,  # root-field ones too: they coerce
            is_awaitable=inspect.isawaitable,  # type: ignore[arg-type]
        )
        if isinstance(built, list):  # variables did not coerce: let Strawberry answer
            return None
        extensions, cost = _measured(info.context, raw_info.schema, document, name, raw)
        plan = self.held[key] = SharedSelection(self, built, family_id, format_error, to_root,
                                                extensions, cost)
        self._keep(key, plan)
        return plan

    def _keep(self, key: Hashable, plan: SharedSelection) -> None:
        self.plans[key] = plan
        while len(self.plans) > PLANS_KEPT:
            self.plans.popitem(last=False)
