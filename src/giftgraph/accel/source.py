"""A library object's source text, read once per process.

The shape checks (each fast path's `shape_ok`, admission's `ws_unsupported`) look in a
class's or function's code for the fields it assigns. `inspect.getsource` of a class
parses its whole module: `create_app` spent ~50 ms in eight such reads, at every start
and in every test that builds an app. The installed libraries' files do not change
while the process runs."""

from __future__ import annotations

import functools
import inspect
from typing import Any


def source_of(obj: Any) -> str:
    """`obj`'s source (a class, a function), or "" where it can't be read."""
    return _source(obj)


@functools.cache
def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""
