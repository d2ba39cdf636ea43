"""The library internals GiftGraph reads that have no public equivalent, one function each.

Not a fast path: the plain paths need these too (the graphql-core schema behind a
Strawberry schema, the operation name the client sent). Each reads its private name with
a fallback where one exists; `missing` says which of them a library no longer has, and
`giftgraph.accel.switch.install` logs it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# broadcaster exports its backend base class and memory backend only from its private
# `_backends` package (broadcaster 0.3, pinned): giftgraph.live.backends builds on them.
from broadcaster._backends.base import BroadcastBackend as BroadcastBackend
from broadcaster._backends.memory import MemoryBackend as MemoryBackend
from graphql import GraphQLResolveInfo, GraphQLSchema
from strawberry.types import Info


def graphql_schema(schema: Any) -> GraphQLSchema:
    """The graphql-core schema Strawberry built (`strawberry.Schema._schema`; Strawberry has
    no public accessor)."""
    built = schema._schema
    assert isinstance(built, GraphQLSchema), "strawberry.Schema._schema is not a GraphQLSchema"
    return built


def provided_operation_name(ec: Any) -> str | None:
    """The operation name the client sent: `ec.operation_name` falls back to the first
    operation's (and is all there is to read, were Strawberry to drop its private field)."""
    if hasattr(ec, "_provided_operation_name"):
        return ec._provided_operation_name  # type: ignore[no-any-return]
    return ec.operation_name  # type: ignore[no-any-return]


RAW_INFO = "_raw_info"  # Strawberry's Info field holding graphql-core's resolve info
RAW_INFO_FIELDS = ("field_nodes", "fragments", "operation", "schema")


def raw_info(info: Any) -> GraphQLResolveInfo[Any] | None:
    """graphql-core's resolve info behind a Strawberry `Info` (Strawberry's own subclass of
    it, or an object with its fields), or None if Strawberry keeps it elsewhere now (the
    caller then uses Strawberry's public `selected_fields`)."""
    raw = getattr(info, RAW_INFO, None)
    if raw is None or not all(hasattr(raw, f) for f in RAW_INFO_FIELDS):
        return None
    return raw  # type: ignore[no-any-return]


def info_fields() -> set[str]:
    """The fields of Strawberry's `Info` dataclass (the lean resolvers build one)."""
    return {f.name for f in dataclasses.fields(Info)} if dataclasses.is_dataclass(Info) else set()


def broadcaster_queues(broadcast: Any) -> int:
    """Events queued in broadcaster's own per-channel queues (stats only; 0 if broadcaster
    no longer keeps `_subscribers`)."""
    subscribers = getattr(broadcast, "_subscribers", None)
    if not isinstance(subscribers, dict):
        return 0
    return sum(len(q) for q in subscribers.values())


def missing() -> list[str]:
    """The private names above that the installed libraries no longer have."""
    import strawberry
    from strawberry.types.execution import ExecutionContext

    gone = []
    if "_schema" not in strawberry.Schema.__init__.__code__.co_names:
        gone.append("strawberry.Schema._schema")
    if "_provided_operation_name" not in ExecutionContext.__post_init__.__code__.co_names:
        gone.append("strawberry ExecutionContext._provided_operation_name")
    if RAW_INFO not in info_fields():
        gone.append("strawberry Info._raw_info")
    return gone
