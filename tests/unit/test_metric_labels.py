"""Operation names as metric labels: bounded per process and per family."""

from __future__ import annotations

import uuid

from giftgraph.observability import MAX_OPERATION_NAMES, NAMES_PER_FAMILY, Metrics


def test_one_family_cannot_take_every_operation_name_label() -> None:
    metrics = Metrics()
    attacker, victim = uuid.uuid4(), uuid.uuid4()
    taken = [metrics.operation_name(f"Flood{i}", attacker) for i in range(MAX_OPERATION_NAMES)]
    assert taken[:NAMES_PER_FAMILY] == [f"Flood{i}" for i in range(NAMES_PER_FAMILY)]
    assert set(taken[NAMES_PER_FAMILY:]) == {"other"}
    assert metrics.operation_name("Flood0", attacker) == "Flood0"  # a known name stays
    assert metrics.operation_name("VictimDashboard", victim) == "VictimDashboard"
    assert metrics.operation_name("VictimDashboard", attacker) == "VictimDashboard"
    assert metrics.operation_name(None, victim) == "anonymous"
    assert metrics.operation_name("not a name!", victim) == "other"


def test_the_process_wide_bound_holds_across_families() -> None:
    metrics = Metrics()
    labels = {metrics.operation_name(f"N{f}_{i}", f)
              for f in range(MAX_OPERATION_NAMES) for i in range(3)}
    assert len(labels - {"other"}) == MAX_OPERATION_NAMES
