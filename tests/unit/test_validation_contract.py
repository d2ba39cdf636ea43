"""Contracts with the libraries `ValidationCache` and the quiet execution context rely on:
the rules Strawberry adds to every validation, graphql-core's `hide_suggestions`."""

from __future__ import annotations

from typing import Any

import pytest
import strawberry.schema.schema as strawberry_schema
from graphql import parse, specified_rules

from giftgraph.schema.execution import ExecutionContext
from giftgraph.schema.extensions import STRAWBERRY_RULES, ValidationCache
from giftgraph.schema.schema import build_schema


def test_strawberry_adds_exactly_these_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(strawberry_schema, "validate",
                        lambda _schema, _document, rules, *_a, **_k: seen.append(rules) or [])
    schema = build_schema()._schema
    strawberry_schema.validate_document(schema, parse("{ me { id } }"), ())
    assert tuple(seen[0]) == STRAWBERRY_RULES


@pytest.mark.parametrize("suggest", [True, False])
def test_validation_suggests_only_when_asked(suggest: bool) -> None:
    schema = build_schema()._schema
    validate = ValidationCache(suggest=suggest)
    errors = validate(schema, parse("{ mee { id } }"), tuple(specified_rules))
    assert ("Did you mean 'me'?" in errors[0].message) is suggest


@pytest.mark.parametrize("suggest", [True, False])
def test_execution_suggests_only_when_asked(suggest: bool) -> None:
    schema = build_schema()._schema
    cls = ExecutionContext if suggest else ExecutionContext.quiet()
    built = cls.build(schema, parse("query($k: ListKind) { lists(kind: $k) { totalCount } }"),
                      raw_variable_values={"k": "WISHLISTT"})
    assert isinstance(built, list)  # the variables' coercion errors
    assert ("Did you mean" in built[0].message) is suggest


def test_validation_is_kept_per_document_object_without_hashing_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """graphql-core's nodes hash by their whole tree: keyed by the document, every lookup
    hashed it (1.7 ms for a 600-field document, on every request that sent it)."""
    import gc

    from graphql import DocumentNode

    schema = build_schema()._schema
    validate = ValidationCache(suggest=False)
    rules = tuple(specified_rules)
    document = parse("{\n  nope\n}")
    errors = validate.compute(schema, document, rules)
    assert errors[0].locations[0].line == 2

    def hashed(_: object) -> int:
        raise AssertionError("the document was hashed")

    monkeypatch.setattr(DocumentNode, "__hash__", hashed)
    validate.remember(schema, document, rules, errors)
    assert validate.known(schema, document, rules) is errors
    assert validate.known(schema, parse("{\n  nope\n}"), rules) is None  # another object
    monkeypatch.undo()
    del document
    gc.collect()
    assert validate.results == {}  # forgotten with its document
