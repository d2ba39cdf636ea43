"""Relay cursor connections: XConnection { edges { cursor node } pageInfo totalCount }."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import strawberry

from giftgraph.db.pagination import Order, Page

T = TypeVar("T")


@strawberry.type(description="Where a page of a connection is (Relay): pass its cursors as "
                              "`after` or `before` to get the next or previous page.")
class PageInfo:
    has_next_page: bool = strawberry.field(
        description="Whether more nodes follow this page in the connection's order.")
    has_previous_page: bool = strawberry.field(
        description="Whether nodes come before this page in the connection's order.")
    start_cursor: str | None = strawberry.field(
        description="The first edge's cursor (pass it as `before`); null on an empty page.")
    end_cursor: str | None = strawberry.field(
        description="The last edge's cursor (pass it as `after`); null on an empty page.")


def _cursor(root: Edge[Any]) -> str:
    return root.order.encode(root.row)


@strawberry.type(description="One node of a connection's page, with its cursor.")
class Edge(Generic[T]):
    # Made when selected: most reads of a page never ask for their edges' cursors.
    cursor: str = strawberry.field(
        resolver=_cursor,
        description="Opaque: pass it back exactly as given, as `after` or `before`.")
    node: T = strawberry.field(description="The object at this position.")
    row: strawberry.Private[Any]
    order: strawberry.Private[Order]


@strawberry.type(description="A page of a list (a Relay cursor connection), in the order "
                              "its field names; page with first/after or last/before.")
class Connection(Generic[T]):
    edges: list[Edge[T]] = strawberry.field(description="This page's nodes, in order.")
    page_info: PageInfo = strawberry.field(description="Where this page is: cursors and "
                                                       "whether more pages follow or precede.")
    count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="Number of nodes in the whole connection, across all pages.")
    async def total_count(self) -> int:
        return await self.count()


def connection(
    page: Page[Any], convert: Callable[[Any], T], count: Callable[[], Awaitable[int]]
) -> Connection[T]:
    order, rows = page.order, page.rows
    return Connection(
        edges=[Edge(node=convert(r), row=r, order=order) for r in rows],
        page_info=PageInfo(
            has_next_page=page.has_next,
            has_previous_page=page.has_previous,
            start_cursor=order.encode(rows[0]) if rows else None,
            end_cursor=order.encode(rows[-1]) if rows else None,
        ),
        count=count,
    )
