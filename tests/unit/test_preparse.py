"""A parse ahead of an operation (`preparse`: the streaming transports' check, a `query
@live`'s rewrite) is the operation's own parse: the same cache, charged to the caller's
analysis allowance, none for a caller that has spent it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from giftgraph.admission.checks import PARSED, preparse
from giftgraph.admission.pace import Allowance


def fresh(tag: str) -> str:
    return f"query Q{uuid.uuid4().hex} {{ me {{ id {tag} }} }}"


def test_a_new_document_is_charged_and_kept_for_the_operation() -> None:
    allowance = Allowance("analysis_seconds", share=0.02, burst=0.25)
    query = fresh("displayName")
    document = asyncio.run(preparse(query, 2000, "ip:1", allowance))
    assert document is not None
    assert PARSED.get(query, 2000) is document  # the operation's parse finds it
    spent = 0.25 - allowance.pace.tokens("ip:1")
    assert spent > 0
    # Again: from the cache, nothing charged.
    assert asyncio.run(preparse(query, 2000, "ip:1", allowance)) is document
    assert 0.25 - allowance.pace.tokens("ip:1") <= spent + 0.001  # only the refill moved


def test_a_caller_past_its_allowance_gets_nothing_parsed() -> None:
    allowance = Allowance("analysis_seconds", share=0.02, burst=0.25)
    allowance.charge("ip:2", 1.0)
    query = fresh("email")
    assert asyncio.run(preparse(query, 2000, "ip:2", allowance)) is None
    assert PARSED.get(query, 2000) is None  # its operation is refused before parsing
    known = fresh("role")
    PARSED.parse(known, 2000)
    assert asyncio.run(preparse(known, 2000, "ip:2", allowance)) is not None  # cached: free


def test_what_does_not_parse_is_none_and_charged() -> None:
    allowance = Allowance("analysis_seconds", share=0.02, burst=0.25)
    assert asyncio.run(preparse("query { me { id ", 2000, "ip:3", allowance)) is None
    assert asyncio.run(preparse("{ " + "a " * 50 + "}", 10, "ip:3", allowance)) is None
    assert allowance.pace.tokens("ip:3") < 0.25


def test_turns_are_one_at_a_time_per_key_and_let_go() -> None:
    from giftgraph.admission.checks import Turns

    async def scenario() -> list[str]:
        turns, seen = Turns(), []

        async def one(key: str, name: str) -> None:
            await turns.acquire(key)
            try:
                seen.append(f"{name}+")
                await asyncio.sleep(0.01)
                seen.append(f"{name}-")
            finally:
                turns.release(key)

        await asyncio.gather(one("a", "a1"), one("a", "a2"), one("b", "b1"))
        assert turns.keys == {}
        return seen

    seen = asyncio.run(scenario())
    assert seen.index("a1-") < seen.index("a2+")  # a's one after the other
    assert seen.index("b1+") < seen.index("a1-")  # b's alongside a's


def test_anonymous_callers_share_one_allowance_for_large_documents() -> None:
    """Many addresses can't take the analysis thread from the families: an anonymous
    caller's large new document also spends all anonymous callers' allowance together."""
    from giftgraph.admission.checks import ANONYMOUS, OFFLOAD_CHARS, analysis_keys

    assert analysis_keys("ip:1", OFFLOAD_CHARS + 1) == ("ip:1", ANONYMOUS)
    assert analysis_keys("ip:1", 100) == ("ip:1",)
    assert analysis_keys("family:f", OFFLOAD_CHARS + 1) == ("family:f",)
    allowance = Allowance("analysis_seconds", share=0.02, burst=0.25)
    allowance.charge(ANONYMOUS, 1.0)  # other addresses spent it

    def large(tag: str) -> str:
        return "#" * OFFLOAD_CHARS + "\n" + fresh(tag)

    assert asyncio.run(preparse(large("id"), 2000, "ip:9", allowance)) is None
    assert asyncio.run(preparse(fresh("id"), 2000, "ip:9", allowance)) is not None  # small
    assert asyncio.run(preparse(large("id"), 2000, "family:f", allowance)) is not None


def test_a_large_analysis_holds_a_reservation_while_it_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What is let in at once is bounded before anything is charged: a large new document
    holds `RESERVED_S` of its caller's (and the anonymous callers') allowance while it is
    analysed, given back after (what it took is charged)."""
    from giftgraph.admission import checks

    allowance = Allowance("analysis_seconds", share=0.02, burst=0.25)
    during: list[float] = []
    real = checks.analysed

    async def watched(*args: Any, **kwargs: Any) -> Any:
        during.append(allowance.pace.tokens(checks.ANONYMOUS))
        return await real(*args, **kwargs)

    monkeypatch.setattr(checks, "analysed", watched)
    query = "#" * checks.OFFLOAD_CHARS + "\n" + fresh("id")
    assert asyncio.run(checks.preparse(query, 2000, "ip:7", allowance)) is not None
    assert during[0] == pytest.approx(0.25 - checks.RESERVED_S, abs=0.01)
    assert allowance.pace.tokens(checks.ANONYMOUS) > during[0]  # given back


def test_a_kept_rewrite_counts_the_text_its_nodes_hold() -> None:
    """A `query @live`'s rewrite is kept under its own (short) text, but its nodes hold the
    query's text: both count against the cache's characters. Counted by the rewrite's
    text alone, long queries evicted from the cache stayed held by their rewrites far past
    the bound."""
    from graphql import parse

    from giftgraph.admission.checks import ParsedDocuments
    from giftgraph.live.directive import live_subscription_of

    cache = ParsedDocuments(chars=30_000)
    kept = []
    for n in range(4):
        query = f"query Q{n} @live {{ me {{ id }} }}" + "\n" * 10_000
        live = live_subscription_of(parse(query), None)
        assert live is not None
        cache.keep(live[0], 2000, live[1], source=query)
        kept.append((live[0], len(live[0]) + len(query)))
        assert cache.held <= 30_000
    assert [text for text, _ in cache.documents] == [text for text, _ in kept[-2:]]
    assert cache.held == sum(chars for _, chars in kept[-2:])  # the oldest let go


def test_a_rewrite_takes_the_place_of_its_text_parsed() -> None:
    """The rewrite's text sent as it is (a plain subscription) was parsed and kept first;
    the `query @live` it was made from then got that document's places, not its own."""
    from graphql import parse

    from giftgraph.admission.checks import ParsedDocuments
    from giftgraph.live.directive import live_subscription_of

    cache = ParsedDocuments()
    query = "query W @live {\n  persons { totalCount }\n  nope\n}"
    text, made = live_subscription_of(parse(query), None)  # type: ignore[misc]
    cache.keep(text, 2000, parse(text))
    cache.keep(text, 2000, made, source=query)
    assert cache.get(text, 2000) is made
    assert len(cache.documents) == 1
    assert cache.held == len(text) + len(query)


def test_a_rewrite_is_printed_without_indentation() -> None:
    """Indented, a block string nested deep printed at ~130 times the query's length: a
    short query's rewrite evicted the parse cache and passed the length limit."""
    from graphql import parse

    from giftgraph.live.directive import live_subscription_of

    lines = "\n".join(f"line {n}" for n in range(500))
    query = "query D @live { " + "a { " * 100 + f'b(s: """{lines}""")' + " }" * 100 + " }"
    text, _ = live_subscription_of(parse(query), None)  # type: ignore[misc]
    assert len(text) < 2 * len(query)


def test_a_kept_rewrite_over_the_length_limit_is_found_not_refused() -> None:
    """A `query @live` within the characters bound may print a little longer: its rewrite,
    kept, is found before the length check (the check is for text about to be lexed)."""
    from types import SimpleNamespace

    from graphql import parse

    from giftgraph.admission.checks import ParsedDocuments, ParseWithTokenLimit
    from giftgraph.live.directive import live_subscription_of

    query = "query L @live {" + "".join(f"a{n}:me{{id}}" for n in range(4)) + "}"
    text, made = live_subscription_of(parse(query), None)  # type: ignore[misc]
    assert len(text) > len(query)
    documents = ParsedDocuments()
    documents.keep(text, 2000, made, source=query)
    parsing = ParseWithTokenLimit(2000, max_chars=len(query), documents=documents)
    parsing.execution_context = SimpleNamespace(  # type: ignore[assignment]
        query=text, context=None, graphql_document=None)

    async def run() -> None:
        steps = parsing.on_parse()
        await steps.__anext__()  # no QUERY_TOO_COMPLEX
        assert parsing.execution_context.graphql_document is made
        await steps.aclose()

    asyncio.run(run())


def test_a_rewrite_is_made_once_and_forgotten_with_its_document() -> None:
    """The rewrite is kept with the parsed document (printing it costs what its parse did,
    which only the first request was charged); operation names that match no `query @live`
    are not kept (any number of them would grow the memo), and it goes with the document."""
    import gc

    from graphql import parse

    from giftgraph.live import directive

    document = parse("query A @live { me { id } } query B { me { id } }")
    first = directive.live_subscription_of(document, "A")
    assert first is not None
    assert directive.live_subscription_of(document, "A") is first
    for name in ("B", "C", "D"):
        assert directive.live_subscription_of(document, name) is None
    assert list(directive._REWRITES[id(document)]) == ["A"]
    key = id(document)
    del document, first
    gc.collect()
    assert key not in directive._REWRITES
