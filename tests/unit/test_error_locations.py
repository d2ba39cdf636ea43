"""Error locations in linear time: `IndexedSource` finds a position's line among line
breaks found once (graphql-core's `Source` scans every line break before it, each time),
and a cached validation error is copied for a request without finding its locations again.
A cached document of 49,000 empty lines and 100 unknown fields had cost ~0.8 s of the event
loop on every request."""

from __future__ import annotations

import random

import pytest
from graphql import GraphQLError, Source, build_schema, parse, validate

from giftgraph.admission.checks import PARSED, IndexedSource
from giftgraph.schema.extensions import _clone

SCHEMA = build_schema("type Query { a: Int }")


def test_the_same_line_and_column_as_graphql_core_everywhere() -> None:
    rng = random.Random(7)
    bodies = ["", "{ a }", "\n", "\r\n" * 3 + "{x}", "a\rb\nc\r\nd"]
    bodies += ["".join(rng.choice(["a", " ", "\n", "\r", "\r\n", "{"])
                       for _ in range(rng.randint(0, 60))) for _ in range(200)]
    for body in bodies:
        plain, indexed = Source(body), IndexedSource(body)
        for position in range(len(body) + 1):
            assert indexed.get_location(position) == plain.get_location(position), \
                (body, position)


def test_a_cached_error_is_copied_without_finding_its_locations_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    text = "\n" * 2000 + "{" + " ".join(f"a{i}" for i in range(30)) + "}"
    errors = validate(SCHEMA, parse(IndexedSource(text)))
    assert len(errors) == 30
    looked: list[int] = []

    def counted(self: Source, position: int) -> object:
        looked.append(position)
        return Source.get_location(self, position)

    monkeypatch.setattr(IndexedSource, "get_location", counted)
    monkeypatch.setattr(Source, "get_location", lambda *_: pytest.fail("scanned again"))
    copies = [_clone(e) for e in errors]
    assert looked == []
    assert [c.formatted for c in copies] == [e.formatted for e in errors]
    assert copies[0].locations is not errors[0].locations
    assert copies[0].extensions is not errors[0].extensions
    assert isinstance(copies[0], GraphQLError)
    assert copies[0].formatted["locations"] == [{"line": 2001, "column": 2}]


def test_documents_are_parsed_with_the_indexed_source() -> None:
    document = PARSED.parse("query Unique4711 { a }", 100)
    assert document.loc is not None
    assert isinstance(document.loc.source, IndexedSource)
