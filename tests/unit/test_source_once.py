"""The shape checks read a library object's source once per process (`source_of`):
`inspect.getsource` of a class parses its whole module, and every `create_app` (a start,
each test's app) ran eight such checks."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from giftgraph.accel.source import source_of


class _Probe:
    def __init__(self) -> None:
        self.field = 1


def test_a_source_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[Any] = []
    real = inspect.getsource

    def counting(obj: Any) -> str:
        read.append(obj)
        return real(obj)

    monkeypatch.setattr(inspect, "getsource", counting)
    assert "self.field = 1" in source_of(_Probe)
    assert "self.field = 1" in source_of(_Probe)
    assert read == [_Probe]


def test_an_unreadable_source_is_empty() -> None:
    assert source_of(type("Dynamic", (), {})) == ""
    assert source_of(len) == ""  # a builtin: no Python source
