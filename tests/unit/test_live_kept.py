"""`admission.answers.Kept`: the bytes live queries keep, per family and in all; and what a
live query's result keeps of it (`Outcome.kept`)."""

from __future__ import annotations

import orjson

from giftgraph.admission.answers import Kept
from giftgraph.live.frames import Outcome


def test_a_family_keeps_at_most_its_bound_and_a_smaller_result_always_fits() -> None:
    kept = Kept(per_family=100, total=1000)
    assert kept.swap("a", 0, 60)
    assert not kept.swap("a", 0, 50)  # a second query: 110 together
    assert kept.by_family == {"a": 60}
    assert kept.total == 60
    assert kept.swap("a", 60, 90)  # the same query's next result, larger, within the bound
    assert kept.swap("a", 90, 95)
    assert not kept.swap("a", 95, 101)
    assert kept.swap("a", 95, 10)  # smaller: always
    assert kept.swap("b", 0, 100)  # another family has its own bound
    kept.release("a", 10)
    kept.release("b", 100)
    assert kept.by_family == {}
    assert kept.total == 0


def test_past_the_process_bound_the_family_keeping_more_than_its_share_is_refused() -> None:
    kept = Kept(per_family=800, total=1000)
    assert kept.swap("big", 0, 600)
    assert kept.swap("small", 0, 350)
    # 1,050 in all: "big" would keep 700 (within its own 800), over an equal share of
    # 1,000 between two families.
    assert not kept.swap("big", 600, 700)
    # "other" would keep 200 of 1,150: within a third of 1,000, so it is kept.
    assert kept.swap("other", 0, 200)
    assert kept.total == 1150
    assert not kept.swap("small", 350, 400)  # 400 > 1,000 / 3
    kept.release("big", 600)
    assert kept.swap("small", 350, 400)  # 600 in all


def test_a_live_result_is_compared_by_a_digest_and_kept_once() -> None:
    data = {"persons": {"totalCount": 1, "edges": [{"node": {"name": "Ann" * 1000}}]}}
    one = Outcome.of(data, [])
    two = Outcome.of(data, [{"message": "m", "extensions": {"traceId": "x"}}])
    three = Outcome.of(data, [{"message": "m", "extensions": {"traceId": "y"}}])
    assert len(one.digest) == 32  # not the data again
    assert one.digest == Outcome.of(data, []).digest != two.digest
    assert two.digest == three.digest  # errors compared without their traceId
    assert one.kept == len(one.data)


def test_a_live_result_is_framed_around_the_shared_data_for_each_response_key() -> None:
    data = {"persons": {"totalCount": 1}}
    ok = Outcome.of(data, [])
    failed = Outcome.of(None, [{"message": "m", "path": ["persons"],
                                "extensions": {"code": "X", "traceId": "t"}}])
    for outcome in (ok, failed):
        for key in ("live", "mine", None):
            head, body, tail = outcome.parts(key)
            assert body is outcome.data  # the shared bytes, not a copy per key
            shaped = outcome.data if outcome.data == b"null" or key is None \
                else orjson.dumps({key: orjson.Fragment(outcome.data)})
            expected = {"data": orjson.Fragment(shaped)}
            if outcome.errors:
                expected["errors"] = [{**e, "path": [*([key] if key else []), *e["path"]]}
                                      for e in outcome.errors]
            assert head + body + tail == orjson.dumps(expected)
