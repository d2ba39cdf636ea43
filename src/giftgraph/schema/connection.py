"""Relay cursor connections: XConnection { edges { cursor node } pageInfo totalCount }."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import strawberry

from giftgraph.db.pagination import Order, Page

T = TypeVar("T")


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


def _cursor(root: Edge[Any]) -> str:
    return root.order.encode(root.row)


@strawberry.type
class Edge(Generic[T]):
    # Made when selected: most reads of a page never ask for their edges' cursors.
    cursor: str = strawberry.field(resolver=_cursor)
    node: T
    row: strawberry.Private[Any]
    order: strawberry.Private[Order]


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo
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
