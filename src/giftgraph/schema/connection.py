"""Relay cursor connections: XConnection { edges { cursor node } pageInfo totalCount }."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import strawberry

from giftgraph.db.pagination import Page

T = TypeVar("T")


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


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
    edges = [Edge(cursor=c, node=convert(r)) for r, c in zip(page.rows, page.cursors, strict=True)]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.has_next,
            has_previous_page=page.has_previous,
            start_cursor=page.cursors[0] if page.cursors else None,
            end_cursor=page.cursors[-1] if page.cursors else None,
        ),
        count=count,
    )
