"""The lean executor's records (what waits for a wave, what each response key does) and
its leaf serialization, with `Decline` for anything graphql-core must answer instead."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple
from weakref import WeakKeyDictionary

from graphql import (
    FieldNode,
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLField,
    GraphQLID,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLString,
    Undefined,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import Path

if TYPE_CHECKING:
    pass



class Decline(Exception):
    """The lean executor leaves this query to graphql-core."""


class Later(NamedTuple):
    """An awaitable result waiting for its wave, and where its value goes."""

    awaitable: Awaitable[Any]
    rtype: GraphQLOutputType
    details: FieldDetailsList
    info: GraphQLResolveInfo[Any] | None
    path: Path
    container: Any  # the dict or list the value is written into, at `key`
    key: Any


@dataclass(slots=True)
class StepInfo:
    """A resolver step's resolve info, made at its first object and used for every object
    after it; and, for a plain resolver, the function and its Strawberry Info to call it
    with directly (`lean_info`)."""

    info: GraphQLResolveInfo[Any] | None = None
    call: Callable[..., Any] | None = None
    kwargs: dict[str, Any] | None = None


class Step(NamedTuple):
    """What `lean_fields` does for one response key: a plain scalar (`scalar`), a value read
    off the source (`attribute`), or the field's resolver (`shared`)."""

    key: str
    scalar: tuple[str, GraphQLScalarType | GraphQLEnumType, bool] | None
    field: GraphQLField | None
    details: FieldDetailsList
    nodes: list[FieldNode] | None
    args: dict[str, Any] | None
    attribute: str | None
    shared: StepInfo | None


class LeanPlan(NamedTuple):
    """The steps for one grouped field set on one type; holds `grouped` so that its id()
    (the plan's key) is not reused while the plan is kept."""

    grouped: GroupedFieldSet
    steps: list[Step]


# Values graphql-core's built-in scalars return as they are (Int and Float check more).
AS_IS = {(GraphQLString, str), (GraphQLID, str), (GraphQLBoolean, bool)}


# Each enum type's names of the members met so far (Strawberry's enum serializer scans
# every value of the type on each call).
_enum_names: WeakKeyDictionary[GraphQLEnumType, dict[enum.Enum, Any]] = WeakKeyDictionary()


def leaf_value(leaf: GraphQLScalarType | GraphQLEnumType, value: Any) -> Any:
    """The serialized value, or Decline where graphql-core would report an error."""
    if isinstance(value, enum.Enum) and isinstance(leaf, GraphQLEnumType):
        names = _enum_names.get(leaf)
        if names is None:
            names = _enum_names[leaf] = {}
        name = names.get(value)
        if name is None:
            name = names[value] = coerce_leaf(leaf, value)
        return name
    return coerce_leaf(leaf, value)


def coerce_leaf(leaf: GraphQLScalarType | GraphQLEnumType, value: Any) -> Any:
    if isinstance(value, Exception):  # graphql-core raises it as the field's error
        raise Decline
    try:
        serialized = leaf.coerce_output_value(value)
    except Exception as exc:
        raise Decline from exc
    if serialized is None or serialized is Undefined:
        raise Decline
    return serialized


def discard(later: list[Later]) -> None:
    """Awaitables the lean executor will not await: close the coroutines resolvers returned
    (graphql-core's run calls the resolvers again), and mark futures' exceptions as seen
    (graphql-core's run loads them again from the same DataLoaders). List items (futures)
    are left alone: the list may be an attribute that graphql-core's run reads again."""
    for entry in later:
        if not isinstance(entry.container, list):
            close_unawaited(entry.awaitable)


def close_unawaited(awaitable: Any) -> None:
    """Leave an awaitable unawaited without a warning or an unseen exception."""
    if asyncio.iscoroutine(awaitable):
        awaitable.close()
    elif isinstance(awaitable, asyncio.Future):
        awaitable.add_done_callback(_seen)


def _seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()

