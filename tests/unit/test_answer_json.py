"""An answer over `max_response_bytes` is refused before it is written
(giftgraph.admission.answers): its strings' characters are counted, and only until the
count passes the bound."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from giftgraph.admission import answers
from giftgraph.schema import cache
from giftgraph.schema.cache import ResultStore


def test_at_least_counts_characters_and_stops_past_the_limit() -> None:
    data = {"data": {"a": ["é" * 10, "x" * 10, None, 3, {"b": "y" * 10}]}}
    assert answers.at_least(data, 1_000) == 30  # the values' characters, not the keys
    deep: list[Any] = []
    for _ in range(100_000):  # a walk that reached it would exceed the recursion limit
        deep = [deep]
    assert answers.at_least({"data": {"a": ["z" * 100] * 3 + [deep]}}, 250) == 300
    with pytest.raises(RecursionError):
        answers.at_least({"data": {"a": ["z" * 100, deep]}}, 250)


def test_the_walk_counts_the_values_the_executor_built() -> None:
    """`answer_values`: every object, list, string, number, boolean and null, in the walk
    that measures the bytes; JSON made already (a compiled read's) is none of them."""
    data = {"data": {"a": ["x", 1, None, True, {"b": 2.5}], "c": orjson.Fragment(b"[1,2,3]")}}
    assert answers.measured(data, 1_000) == (1, 9)  # {data}, {a, c}, [..], 5 + {b}, 2.5
    encoded, cost, values = answers.answer_json(data, 1_000)
    assert (values, cost) == (9, len(encoded))
    many = {"data": {"items": [{"id": str(i), "n": i} for i in range(1_000)]}}
    assert answers.measured(many, 10**9)[1] == 3 + 1_000 * 3
    # refused: all of them counted (the executor built them all), as the bytes are
    refused = {"data": {"items": ["z" * 100] * 50 + [1] * 1_000}}
    body, cost, values = answers.answer_json(refused, 2_000)
    assert orjson.loads(body)["data"] is None
    assert (cost, values) == (5_000, 3 + 1_050)


def test_an_answer_past_the_limit_is_not_written(monkeypatch: pytest.MonkeyPatch) -> None:
    def dumps(*_: Any, **__: Any) -> bytes:
        raise AssertionError("written")

    data = {"data": {"first": ["x" * 10_000] * 10, "second": ["y" * 10_000] * 10}}
    real = orjson.dumps
    monkeypatch.setattr(answers.orjson, "dumps", lambda v, *a, **k: (
        dumps() if v is data else real(v, *a, **k)))
    encoded, cost, values = answers.answer_json(data, 16 * 1024)
    body = orjson.loads(encoded)
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["path"] == ["first"]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert error["message"].startswith("The answer is at least 200,000 bytes, over the 16,384")
    assert cost == 200_000  # all of it counted once refused: the caller pays what was built
    assert values == 24  # and all its values: 2 objects, 2 lists, 20 strings


def test_an_answer_within_the_limit_is_written_as_it_is() -> None:
    data = {"type": "next", "id": "1", "payload": {"data": {"a": "é" * 100}}}
    encoded, cost, values = answers.answer_json(data, 16 * 1024)
    assert encoded == orjson.dumps(data)
    assert cost == len(encoded)
    assert values == 6  # the message and its type and id, its payload, the data, the string


def test_a_result_too_large_to_keep_is_not_written(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[Any] = []
    monkeypatch.setattr(cache, "kept_json", lambda v: written.append(v) or orjson.dumps(v))
    store = ResultStore(max_bytes=80 * 1024)
    store.put("big", 1, {"a": ["x" * 5_000] * 3})  # 15,000 characters: over 10 KB
    assert not written
    assert store.get("big", 1) is None
    store.put("small", 1, {"a": ["x" * 5_000]})
    assert len(written) == 1
    assert store.get("small", 1) is not None
