"""The analysis thread's courtesy to the event loop (`admission.courtesy`): a short switch
interval while it works, restored after, and a validation that pauses in slices without
changing what it finds."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from graphql import parse, specified_rules

from giftgraph.admission import courtesy
from giftgraph.admission.checks import OFFLOAD_CHARS, analysed
from giftgraph.schema.extensions import ValidationCache
from giftgraph.schema.schema import build_schema

# ~300 aliased fields, one of them unknown: a few thousand nodes to visit.
BIG = "{ " + " ".join(f"a{i}: me {{ id displayName }}" for i in range(300)) + " nope }"


def test_the_switch_interval_is_short_only_inside() -> None:
    before = sys.getswitchinterval()
    with courtesy.courteous():
        assert sys.getswitchinterval() == courtesy.SWITCH_S
        assert courtesy.rules() == (courtesy.Courteous,)
    assert sys.getswitchinterval() == before
    assert courtesy.rules() == ()
    with pytest.raises(RuntimeError), courtesy.courteous():
        raise RuntimeError
    assert sys.getswitchinterval() == before


def test_a_courteous_validation_pauses_and_finds_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    schema = build_schema()._schema
    document = parse(BIG)
    plain = ValidationCache(suggest=False).compute(schema, document, tuple(specified_rules))
    pauses: list[float] = []
    monkeypatch.setattr(courtesy.time, "sleep", pauses.append)
    monkeypatch.setattr(courtesy, "SLICE_S", 0.0)  # a pause at every look
    with courtesy.courteous():
        polite = ValidationCache(suggest=False).compute(schema, document,
                                                        tuple(specified_rules))
    assert [e.message for e in polite] == [e.message for e in plain]
    assert plain
    assert "nope" in plain[0].message
    assert len(pauses) > 50
    assert set(pauses) == {courtesy.PAUSE_S}


def test_a_large_document_is_analysed_courteously_off_the_loop() -> None:
    def inside(text: str) -> tuple[float, bool]:
        return sys.getswitchinterval(), courtesy.rules() == (courtesy.Courteous,)

    assert len(BIG) > OFFLOAD_CHARS
    (interval, polite), _ = asyncio.run(analysed(inside, len(BIG), BIG))
    assert (interval, polite) == (courtesy.SWITCH_S, True)
    (interval, polite), _ = asyncio.run(analysed(inside, 10, "{ me { id } }"))
    assert polite is False
    assert interval == sys.getswitchinterval()


def test_a_failed_analysis_in_the_thread_is_charged_its_thread_time() -> None:
    from giftgraph.admission.checks import spent

    def fails(text: str) -> None:
        raise ValueError(text)

    started = time.perf_counter() - 100.0  # a long wait for its turn
    try:
        asyncio.run(analysed(fails, OFFLOAD_CHARS + 1, "x"))
    except ValueError as error:
        seconds = spent(error, started)
    assert 0 <= seconds < 1.0  # its own time, not the wait
