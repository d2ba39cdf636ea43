"""The schema documents itself: what GraphiQL's docs show a client developer.

Read by introspection, as a client sees it: every type, field, argument, input field and
enum value has a description (the built-in scalars and the `__` introspection types
aside), and every mutation ends its description with the error codes it can return."""

from __future__ import annotations

import re
from typing import Any

import pytest
from graphql import introspection_from_schema

from giftgraph.schema.schema import build_schema

BUILT_IN_SCALARS = {"String", "Int", "Float", "Boolean", "ID"}
# The `extensions.code` values the API answers with (docs/architecture.md, SPEC.md).
CODES = {
    "UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND", "BAD_USER_INPUT", "CONFLICT",
    "INVALID_TRANSITION", "RATE_LIMITED", "QUERY_TOO_COMPLEX", "INTERNAL_SERVER_ERROR",
}
ERRORS = re.compile(r"Errors: (.+)\.$")


@pytest.fixture(scope="module")
def types() -> list[dict[str, Any]]:
    schema = build_schema()._schema
    return [t for t in introspection_from_schema(schema)["__schema"]["types"]
            if not t["name"].startswith("__") and t["name"] not in BUILT_IN_SCALARS]


def _described(item: dict[str, Any]) -> bool:
    return bool((item.get("description") or "").strip())


def undescribed(types: list[dict[str, Any]]) -> list[str]:
    """Everything of the schema without a description, named as in the SDL."""
    missing = []
    for t in types:
        name = t["name"]
        if not _described(t):
            missing.append(f"type {name}")
        for f in t["fields"] or []:
            if not _described(f):
                missing.append(f"field {name}.{f['name']}")
            missing += [f"argument {name}.{f['name']}({a['name']})"
                        for a in f["args"] if not _described(a)]
        missing += [f"input field {name}.{f['name']}"
                    for f in t["inputFields"] or [] if not _described(f)]
        missing += [f"enum value {name}.{v['name']}"
                    for v in t["enumValues"] or [] if not _described(v)]
    return missing


def test_every_type_field_argument_input_field_and_enum_value_is_described(
    types: list[dict[str, Any]],
) -> None:
    missing = undescribed(types)
    assert not missing, f"{len(missing)} without a description:\n" + "\n".join(missing)


def test_every_mutation_ends_with_the_error_codes_it_can_return(
    types: list[dict[str, Any]],
) -> None:
    mutation = next(t for t in types if t["name"] == "Mutation")
    problems = []
    for f in mutation["fields"]:
        found = ERRORS.search(f["description"] or "")
        if found is None:
            problems.append(f"{f['name']}: no closing 'Errors: CODE, CODE (when), ...'")
            continue
        listed = re.sub(r"\([^)]*\)", "", found.group(1))  # the "(when)" notes aside
        unknown = {code.strip() for code in listed.split(",")} - CODES
        if unknown:
            problems.append(f"{f['name']}: unknown codes {sorted(unknown)}")
    assert not problems, "\n".join(problems)


def test_the_check_finds_what_is_missing() -> None:
    """The walk reaches each kind of thing it checks (a check that found nothing to check
    would pass on any schema)."""
    bare: list[dict[str, Any]] = [
        {"name": "T", "description": None, "inputFields": None, "enumValues": None,
         "fields": [{"name": "f", "description": " ",
                     "args": [{"name": "a", "description": None}]}]},
        {"name": "I", "description": "x", "fields": None, "enumValues": None,
         "inputFields": [{"name": "g", "description": ""}]},
        {"name": "E", "description": "x", "fields": None, "inputFields": None,
         "enumValues": [{"name": "V", "description": None}]},
    ]
    assert undescribed(bare) == ["type T", "field T.f", "argument T.f(a)",
                                 "input field I.g", "enum value E.V"]
