"""Kept JSON is orjson's output in a bytes object of its own size."""

from __future__ import annotations

import tracemalloc

import orjson

from giftgraph.jsonbytes import kept_json


def test_kept_json_is_orjsons_output_at_its_own_size() -> None:
    value = {"data": {"dashboard": {"spent": "0.00"}}, "note": "x" * 3000}
    assert kept_json(value) == orjson.dumps(value)
    assert kept_json({"b": 1, "a": 2}, orjson.OPT_SORT_KEYS) == b'{"a":2,"b":1}'
    tracemalloc.start()
    try:
        kept = [kept_json(value) for _ in range(50)]
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 50 * (len(kept[0]) + 200)
