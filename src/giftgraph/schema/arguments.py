"""Arguments many fields share, with their descriptions: `first: First = None`.

Each is `Annotated[type, strawberry.argument(description=...)]`, Strawberry's way to
describe an argument; the default stays at the parameter."""

from __future__ import annotations

from typing import Annotated

import strawberry

First = Annotated[int | None, strawberry.argument(
    description="Pages forward: at most this many nodes after `after` (default 20, capped at "
                "100). Not with `last`; negative is BAD_USER_INPUT.")]
After = Annotated[str | None, strawberry.argument(
    description="A cursor of this connection (an edge's cursor or pageInfo.endCursor): the "
                "page starts after it. Any other string is BAD_USER_INPUT; not with `before`.")]
Last = Annotated[int | None, strawberry.argument(
    description="Pages backward: at most this many nodes before `before` (default 20, capped "
                "at 100). Not with `first`; negative is BAD_USER_INPUT.")]
Before = Annotated[str | None, strawberry.argument(
    description="A cursor of this connection (an edge's cursor or pageInfo.startCursor): the "
                "page ends before it. Any other string is BAD_USER_INPUT; not with `after`.")]
Search = Annotated[str | None, strawberry.argument(
    description="Only those whose name contains this text, ignoring case (at most 100 "
                "characters, else BAD_USER_INPUT). Omitted or empty: all.")]
Since = Annotated[str | None, strawberry.argument(
    description="An event's `seq`: first replays this topic's stored events after it, then "
                "goes on live with no gap and no duplicate (resume after a reconnect). "
                "Omitted: live events only. Not a seq: BAD_USER_INPUT.")]
