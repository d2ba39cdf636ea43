"""Look-ahead: which fields an operation selects below the field being resolved, so that
its resolver can load their relations in one batch before graphql-core asks for them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    SelectionSetNode,
)
from strawberry.dataloader import DataLoader
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

from giftgraph.accel import internals
from giftgraph.context import Info
from giftgraph.schema.loaders import prefetch

# Relation field name → the loader of its rows and the attribute holding their key.
Relations = Mapping[str, tuple[DataLoader[Any, Any], str]]


def selected_fields(info: Info, *path: str) -> set[str]:
    """Names of the fields selected at `path` below the current field (`"edges", "node"`
    for a connection's nodes; none for the field's own type), fragments included."""
    raw = internals.raw_info(info) if info.context.fast else None
    if raw is None:  # the plain path: Strawberry's own conversion of the selection
        return _selected(info.selected_fields, path)
    # graphql-core's field nodes, unconverted (cheap to walk)
    fragments: Mapping[str, FragmentDefinitionNode] = raw.fragments
    fields: list[FieldNode] = list(raw.field_nodes)
    for name in path:
        fields = [f for parent in fields for f in _fields(parent.selection_set, fragments)
                  if f.name.value == name]
    return {f.name.value for parent in fields for f in _fields(parent.selection_set, fragments)}


def _selected(selections: Sequence[Any], path: tuple[str, ...]) -> set[str]:
    """`selected_fields` from Strawberry's converted selections (`info.selected_fields`)."""
    fields = [f for s in selections for f in _converted(s)]
    for name in path:
        fields = [f for parent in fields for s in parent.selections for f in _converted(s)
                  if f.name == name]
    return {f.name for parent in fields for s in parent.selections for f in _converted(s)}


def _converted(selection: Any) -> Iterator[SelectedField]:
    if isinstance(selection, SelectedField):
        yield selection
    elif isinstance(selection, FragmentSpread | InlineFragment):
        for inner in selection.selections:
            yield from _converted(inner)


def _fields(selection_set: SelectionSetNode | None,
            fragments: Mapping[str, FragmentDefinitionNode]) -> Iterator[FieldNode]:
    for node in selection_set.selections if selection_set else ():
        if isinstance(node, FieldNode):
            yield node
        elif isinstance(node, InlineFragmentNode):
            yield from _fields(node.selection_set, fragments)
        elif isinstance(node, FragmentSpreadNode) and node.name.value in fragments:
            # Fragment cycles never get this far: validation refuses them.
            yield from _fields(fragments[node.name.value].selection_set, fragments)


async def prefetch_selected(info: Info, objects: Sequence[Any], relations: Relations,
                            *path: str) -> None:
    """Load the relations of `objects` that the operation selects (at `path`) now: one
    batch for every sibling resolver doing the same, after which the relation fields
    resolve without awaiting (see `loaders.load_now`)."""
    selected = selected_fields(info, *path)
    await prefetch(*((loader, [getattr(o, key) for o in objects])
                     for name, (loader, key) in relations.items() if name in selected))
