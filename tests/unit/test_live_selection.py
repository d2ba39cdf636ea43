"""What a live query's selection reads (giftgraph.live.selection.Dependencies): the entity
types whose changes may change its result, and whether it reads the caller."""

from __future__ import annotations

import graphql
import pytest

from giftgraph.live.selection import KINDS, Dependencies
from giftgraph.schema.schema import build_schema

SCHEMA = graphql.build_schema(str(build_schema()))


def reads(document: str) -> tuple[frozenset[str] | None, bool]:
    parsed = graphql.parse(document)
    operation = next(d for d in parsed.definitions
                     if isinstance(d, graphql.OperationDefinitionNode))
    fragments = {d.name.value: d for d in parsed.definitions
                 if isinstance(d, graphql.FragmentDefinitionNode)}
    query = SCHEMA.query_type
    assert query is not None
    return Dependencies(SCHEMA, fragments).of(query, operation.selection_set.selections)


@pytest.mark.parametrize(("document", "kinds"), [
    ("{ persons { totalCount } }", {"Person"}),
    ("{ persons { edges { node { name } } pageInfo { hasNextPage } } }", {"Person"}),
    ("{ family { name } }", {"Family"}),
    ("{ users { edges { node { family { name } } } } }", {"User", "Family"}),
    ("{ lists { edges { node { items { edges { node { gift { name } assignee { id } } } } } } } }",
     {"GiftList", "Person", "Occasion", "ListItem", "Gift", "User"}),
    ("{ gifts { totalCount } ...F } fragment F on Query { occasions { totalCount } }",
     {"Gift", "Occasion"}),
    ("{ lists { edges { node { items { edges { node { commentCount } } } } } } }",
     {"GiftList", "Person", "Occasion", "ListItem", "Comment"}),
    ("{ persons { edges { node { giftHistory { totalCount } } } } }",
     {"Person", "ListItem", "GiftList", "Gift"}),
    ("{ occasions { edges { node { summary { spent } } } } }",
     {"Occasion", "Family", "Person", "GiftList", "Gift", "ListItem"}),
    ('{ comments(target: LIST, targetId: "x") { totalCount } }',
     {"Comment", "GiftList", "ListItem", "Gift", "Person", "Occasion"}),
    ("{ __typename }", set()),
])
def test_the_entity_types_a_selection_reads(document: str, kinds: set[str]) -> None:
    found, per_user = reads(document)
    assert found == frozenset(kinds)
    assert not per_user


@pytest.mark.parametrize("document", [
    '{ node(id: "x") { id } }',
    "{ events { totalCount } }",
    "{ dashboard { spent } }",
    "{ persons { totalCount } dashboard { budget } }",
])
def test_logs_lookups_and_aggregates_read_everything(document: str) -> None:
    assert reads(document)[0] is None


def test_me_depends_on_the_caller_and_nothing_else_does() -> None:
    assert reads("{ me { displayName } }") == (frozenset({"User"}), True)
    assert reads("{ q: family { id } ... on Query { me { id } } }")[1] is True
    assert reads("{ users { edges { node { id } } } }")[1] is False


def test_every_object_type_of_the_schema_is_known_or_read_as_everything() -> None:
    """A type added to the schema is never silently read as nothing: it maps to an entity
    type, holds none of its own (connections, page info, figures), or counts as every
    change."""
    deps = Dependencies(SCHEMA, {})
    for named in SCHEMA.type_map.values():
        if isinstance(named, graphql.GraphQLObjectType) and not named.name.startswith("__"):
            kinds = deps.type_kinds(named)
            assert kinds is None or kinds <= KINDS
            if named.name in KINDS:
                assert kinds == {named.name}


def test_query_at_live_becomes_the_live_subscription_of_its_selection() -> None:
    from giftgraph.live.directive import live_subscription_of

    source = ("query P($n: Int) @live { persons(first: $n) { ...C } } "
              "fragment C on PersonConnection { totalCount }")
    query = graphql.parse(source)
    live = live_subscription_of(query, None)
    assert live is not None
    text, document = live
    expected = graphql.print_ast(graphql.parse(
        "subscription P($n: Int) { live { persons(first: $n) { ...C } } } "
        "fragment C on PersonConnection { totalCount }"))
    assert graphql.print_ast(graphql.parse(text)) == expected
    assert graphql.print_ast(document) == expected  # the text is the document's
    # Made of the query's nodes, with their places in the text the client sent.
    assert document.definitions[1] is query.definitions[1]
    assert document.loc is query.loc
    assert document.definitions[0].loc is query.definitions[0].loc
    persons = document.definitions[0].selection_set.selections[0].selection_set.selections[0]
    assert persons is query.definitions[0].selection_set.selections[0]
    assert persons.loc.source.body == source
    # A text laid out otherwise prints alike, yet has a rewrite of its own (its document
    # has its own places); the same text has the same rewrite.
    again = live_subscription_of(graphql.parse(source.replace(" ", "\n")), None)
    assert again is not None
    assert again[0] != text
    assert graphql.print_ast(again[1]) == expected
    assert live_subscription_of(graphql.parse(source), None)[0] == text  # type: ignore[index]
    chosen = live_subscription_of(
        graphql.parse("query A @live { me { id } } query B { me { id } }"), "A")
    assert chosen is not None
    assert chosen[0].startswith("subscription A")
    assert "query B" in chosen[0]


@pytest.mark.parametrize(("document", "name"), [
    ("{ me { id } }", None),  # no @live
    ("query { me { id @live } }", None),  # not on the operation
    ("mutation @live { logout(refreshToken: \"x\") }", None),
    ("query A @live { me { id } } query B { me { id } }", None),  # which?
])
def test_anything_else_goes_on_as_it_is(document: str, name: str | None) -> None:
    from giftgraph.live.directive import live_subscription_of

    assert live_subscription_of(graphql.parse(document), name) is None


def test_only_a_document_within_the_characters_bound_that_says_live_is_parsed() -> None:
    from giftgraph.live.directive import may_be_live

    assert may_be_live("query @live { me { id } }", 10_000)
    assert not may_be_live("query @live { me { id } }", 10)  # refused as it is, later
    assert not may_be_live("{ me { id } }", 10_000)
    assert not may_be_live(None, 10_000)
