"""JSON bytes that are kept (cached results, shared renders): orjson's output, trimmed."""

from __future__ import annotations

from typing import Any

import orjson


def kept_json(value: Any, option: int | None = None) -> bytes:
    """`orjson.dumps(value, option=option)` in a bytes object of its own size. orjson 3.13
    returns its output in its whole write buffer (4 KB for a few bytes, 32 KB for 3 KB):
    fine for a response sent and freed, ten times the memory for one that is kept."""
    return memoryview(orjson.dumps(value, option=option)).tobytes()
