"""Shared rendering for event subscriptions: each event is executed and serialized once per
distinct selection (family, document, operation, variables the selection uses) per process,
and the same bytes go to every subscriber with that selection.

Strawberry runs the whole execution pipeline (graphql-core execution, every extension's
hooks, JSON encoding) once per event *per subscriber*; with thousands of subscribers on
one list that is the fan-out's entire cost. A subscription running on our WebSocket handler
(`DirectSink` in a ContextVar) skips it: its resolver asks `SharedRenderer` for the event's
`next` payload and writes it to the socket itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import inspect
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    SelectionSetNode,
    VariableNode,
    print_ast,
)
from graphql.execution import Executor
from graphql.language import Visitor, visit

from giftgraph.context import Context
from giftgraph.db import models as m
from giftgraph.live.streams import SharedScopes
from giftgraph.live.wire import Wire

PLANS_KEPT = 256  # distinct selections remembered per process
RESULTS_KEPT = 64  # rendered events remembered per selection (late subscribers reuse them)


@dataclass(slots=True)
class DirectSink:
    """The graphql-transport-ws operation a subscription resolver may write to directly:
    pre-framed onto the connection's transport when it can take it (`wire`), else through
    the ASGI `send_text`."""

    operation: Any  # strawberry's graphql_transport_ws Operation
    send_text: Callable[[str], Awaitable[None]]
    wire: Wire | None = None
    # Set by an event subscription's resolver instead of yielding: the rest of the
    # subscription, run by the socket handler once Strawberry's execution (its extension
    # hooks, graphql-core's context, the resolver's generators) has ended and been freed.
    park: Callable[[], Awaitable[None]] | None = None

    @property
    def closed(self) -> bool:
        """Completed, or being cancelled (the client sent `complete`: Strawberry has
        dropped the operation and cancelled its task, which has not run since)."""
        task = self.operation.task
        return bool(self.operation.completed) or task is None or task.cancelling() > 0

    def prefix(self) -> bytes:
        return b'{"id":' + orjson.dumps(self.operation.id) + b',"type":"next","payload":'


DIRECT_SINK: ContextVar[DirectSink | None] = ContextVar("giftgraph_direct_sink", default=None)


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
        return dataclasses.replace(context, request=None, response=None,
                                   authorization=None, connection_params=None)
    return context


def _freeze(value: Any) -> Hashable:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class Plan:
    """One selection of one family: a graphql-core executor built (and its variables
    coerced) once, and the rendered `next` payloads of recent events."""

    def __init__(self, owner: SharedRenderer, executor: Executor, family_id: uuid.UUID,
                 format_error: Callable[[GraphQLError, str], GraphQLError],
                 to_root: Callable[[m.Event], Any]) -> None:
        self.owner = owner
        self.executor = executor
        self.family_id = family_id
        self.format_error = format_error
        self.to_root = to_root
        self.results: OrderedDict[int, asyncio.Task[bytes]] = OrderedDict()
        self.made: dict[int, bytes] = {}  # the finished ones among `results`

    def ready(self, seq: int) -> bytes | None:
        """The payload of the event with this seq if it is rendered already, else None."""
        return self.made.get(seq)

    async def render(self, row: m.Event) -> bytes:
        """The `next` payload (UTF-8 JSON) of this event for this selection, computed once
        in its own task so that no subscriber's cancellation can abort the others'."""
        task = self.results.get(row.seq)
        if task is None:
            # In a context of its own, not a copy of this subscriber's: the task is kept
            # (`results`) for RESULTS_KEPT events, and with the copy it kept the
            # subscriber's DirectSink, and through it its operation, handler, socket and
            # all they hold, long after the socket closed (~1 MB a minute under a soak's
            # reconnects). The render needs none of it: `_render` sets up its own scope.
            task = asyncio.get_running_loop().create_task(
                self._render(row), context=contextvars.Context())
            self.results[row.seq] = task
            while len(self.results) > RESULTS_KEPT:
                self.made.pop(self.results.popitem(last=False)[0], None)
        if task.done():  # every subscriber after the first: no waiting, no new future
            return task.result()
        return await asyncio.shield(task)

    async def _render(self, row: m.Event) -> bytes:
        self.owner.renders += 1
        async with self.owner.scopes.use(("event", self.family_id, row.seq), self.family_id):
            result = self.executor.build_per_event_executor(
                self.to_root(row)).execute_operation(False)
            if inspect.isawaitable(result):
                result = await result
        payload: dict[str, Any] = {"data": result.data}  # type: ignore[union-attr]
        if result.errors:  # type: ignore[union-attr]
            trace_id = uuid.uuid4().hex
            payload["errors"] = [self.format_error(e, trace_id).formatted
                                 for e in result.errors]  # type: ignore[union-attr]
        rendered = orjson.dumps(payload)
        if row.seq in self.results:  # still kept (not dropped while it was rendering)
            self.made[row.seq] = rendered
        return rendered


class SharedRenderer:
    """The process's plans, keyed by family and selection."""

    def __init__(self, scopes: SharedScopes) -> None:
        self.scopes = scopes
        self.plans: OrderedDict[Hashable, Plan] = OrderedDict()
        self.renders = 0  # events executed and serialized, all plans together

    def plan(self, info: Any, variables: dict[str, Any] | None, family_id: uuid.UUID,
             format_error: Callable[[GraphQLError, str], GraphQLError],
             to_root: Callable[[m.Event], Any]) -> Plan | None:
        """The shared plan for this subscription's selection (`info` is Strawberry's,
        `variables` the raw ones the client sent), or None when it can't be shared:
        more than one root field, or directives on the root field."""
        raw_info = info._raw_info
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
        document = DocumentNode(definitions=(operation, *fragments.values()))
        executor_class = getattr(info.schema, "execution_context_class", Executor)
        built = executor_class.build(
            raw_info.schema, document, context_value=_detached(info.context),
            raw_variable_values=raw, operation_name=name,  # root-field ones too: they coerce
            is_awaitable=inspect.isawaitable,
        )
        if isinstance(built, list):  # variables did not coerce: let Strawberry answer
            return None
        plan = self.plans[key] = Plan(self, built, family_id, format_error, to_root)
        while len(self.plans) > PLANS_KEPT:
            self.plans.popitem(last=False)
        return plan
