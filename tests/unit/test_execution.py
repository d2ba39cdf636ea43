"""The plain-scalar fast path answers exactly as graphql-core's own path does."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import pytest
import strawberry

from giftgraph.accel.executor import LeanExecutionContext as ExecutionContext
from giftgraph.accel.resolvers import install_lean_resolvers, plain_fields

# Tests of a fast path itself (giftgraph.accel): skipped with GIFTGRAPH_ACCEL=false.
pytestmark = pytest.mark.accel


@strawberry.enum
class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Thing:
    name: str
    note: str | None
    colour: Colour
    count: int

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()


@dataclass
class Row:  # what resolvers hand over: any object with the attributes
    name: Any
    note: Any
    colour: Any
    count: Any


ROWS: list[Row] = []


@strawberry.type
class Query:
    @strawberry.field
    def things(self) -> list[Thing]:
        return ROWS  # type: ignore[return-value]


@strawberry.type
class Loud:
    @strawberry.field
    def name(self) -> str:
        return "LOUD"


@strawberry.type
class LoudQuery:
    @strawberry.field
    def thing(self) -> Loud:
        return Loud()


QUERY = "{ things { name note colour count shout } }"


def run(rows: list[Row], fast: bool) -> dict[str, Any]:
    ROWS[:] = rows
    schema = strawberry.Schema(Query, execution_context_class=ExecutionContext if fast else None)
    result = schema.execute_sync(QUERY)
    return {"data": result.data,
            "errors": [(e.message, e.path) for e in result.errors or []]}


def test_plain_fields_are_the_attribute_scalars_only() -> None:
    schema = strawberry.Schema(Query)
    assert sorted(plain_fields(schema._schema)["Thing"]) == ["colour", "count", "name", "note"]
    assert "Query" not in plain_fields(schema._schema)  # a resolver: never fast


def test_same_answers_and_errors_as_graphql_core() -> None:
    cases = [
        [Row("a", None, Colour.RED, 1), Row("b", "n", Colour.BLUE, 2)],
        [Row(None, None, Colour.RED, 1)],  # null in a non-null field: an error, item nulled
        [Row("a", None, "not a colour", 1)],  # a value the enum can't serialize
        [Row("a", None, Colour.RED, "many")],  # nor the Int
        [Row("a", 5, Colour.RED, 2**40)],  # an int as a String is fine; 2**40 is no Int
    ]
    for rows in cases:
        assert run(rows, fast=True) == run(rows, fast=False), rows
    assert run(cases[1], fast=True)["errors"][0] == (
        "Cannot return null for non-nullable field Thing.name.", ["things", 0, "name"])


def test_each_schema_has_its_own_plain_fields() -> None:
    """Remembered per schema object (weakly), never by a reusable id()."""
    for _ in range(30):  # rebuilt schemas may reuse a freed schema's address
        plain = strawberry.Schema(Query)
        assert "name" in plain_fields(plain._schema)["Thing"]
        del plain
        loud = strawberry.Schema(LoudQuery, execution_context_class=ExecutionContext)
        assert "Loud" not in plain_fields(loud._schema)
        assert loud.execute_sync("{ thing { name } }").data == {"thing": {"name": "LOUD"}}


# Lean resolvers -----------------------------------------------------------------------


class Deny(strawberry.BasePermission):
    message = "no"

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return False


@strawberry.type
class Pet:
    name: str

    @strawberry.field
    def loud(self) -> str:
        return self.name.upper()

    @strawberry.field
    def where(self, info: strawberry.Info) -> str:
        return f"{info.path.key}:{info.field_name}:{info.context['tag']}"

    @strawberry.field
    def by_root(root: Pet) -> str:  # Strawberry passes the source as `root`
        return root.name * 2

    @strawberry.field
    def broken(self) -> str:
        raise ValueError(f"{self.name} is broken")

    @strawberry.field
    def repeat(self, times: int) -> str:  # arguments: Strawberry's wrapper converts them
        return self.name * times

    @strawberry.field
    async def later(self) -> str:
        return self.name

    @strawberry.field(permission_classes=[Deny])
    def secret(self) -> str:
        return "hidden"


@strawberry.type
class PetQuery:
    @strawberry.field
    def pets(self) -> list[Pet]:
        return [Pet(name="rex"), Pet(name="tom")]


PETS = "{ pets { name loud where byRoot broken repeat(times: 2) later secret } }"


async def _answer(lean: bool) -> dict[str, Any]:
    schema = strawberry.Schema(PetQuery, execution_context_class=ExecutionContext)
    if lean:
        assert install_lean_resolvers(schema) == 5  # pets, loud, where, byRoot, broken
    result = await schema.execute(PETS, context_value={"tag": "t"})
    return {"data": result.data,
            "errors": sorted((e.message, tuple(e.path or ())) for e in result.errors or [])}


async def test_lean_resolvers_answer_as_strawberry_does() -> None:
    lean, wrapped = await _answer(lean=True), await _answer(lean=False)
    assert lean == wrapped
    assert lean["data"] is None  # `broken` is non-null: its error nulls up to the root
    assert ("rex is broken", ("pets", 0, "broken")) in lean["errors"]


async def test_lean_resolvers_values() -> None:
    schema = strawberry.Schema(PetQuery, execution_context_class=ExecutionContext)
    install_lean_resolvers(schema)
    result = await schema.execute("{ pets { loud where byRoot repeat(times: 3) later } }",
                                  context_value={"tag": "t"})
    assert result.errors is None
    assert result.data == {"pets": [
        {"loud": "REX", "where": "where:where:t", "byRoot": "rexrex", "repeat": "rexrexrex",
         "later": "rex"},
        {"loud": "TOM", "where": "where:where:t", "byRoot": "tomtom", "repeat": "tomtomtom",
         "later": "tom"}]}


def test_lean_resolvers_are_installed_on_the_app_schema() -> None:
    from giftgraph.schema.schema import build_schema

    schema = build_schema()
    fields = schema._schema.type_map["ListItem"].fields  # type: ignore[union-attr]
    assert fields["gift"].resolve.__name__ == "resolve_with_info"
    lists = schema._schema.type_map["GiftList"].fields  # type: ignore[union-attr]
    assert lists["items"].resolve.__name__ != "resolve_with_info"  # arguments: wrapped
