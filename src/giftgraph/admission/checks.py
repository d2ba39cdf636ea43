"""The document bounds as Strawberry schema extensions: the parser with the token limit,
and `DocumentBounds`, which measures every document (`admission.documents`) before it is
validated, over HTTP and over a socket alike, and charges a mutation's budget."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import re
import time
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, TypeVar

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSyntaxError,
    OperationDefinitionNode,
    OperationType,
    Source,
    SourceLocation,
    parse,
)
from strawberry.extensions import SchemaExtension

from giftgraph.accel import internals
from giftgraph.admission.clients import client_key
from giftgraph.admission.courtesy import courteous
from giftgraph.admission.documents import Found, Measured, count_refusal, over_limit
from giftgraph.admission.pace import Allowance
from giftgraph.errors import AppError, QueryTooComplex, RateLimited
from giftgraph.schema.extensions import operation_of, refuse, requested_operation

DOCUMENT_CACHE_CHARS = 256 * 1024
DOCUMENT_CACHE_TOKENS = 48_000
T = TypeVar("T")


class IndexedSource(Source):
    """A document's source whose `get_location` (an error's line and column) looks the
    position up among the line breaks, found once, instead of scanning every line break
    before it each time, as graphql-core's does: a cached document of 49,000 empty lines
    and 100 unknown fields cost ~0.8 s of the event loop on every request (each of its
    errors scanned the lines again when copied for the request). The line breaks are
    graphql-core's (`\r\n`, `\n`, `\r`)."""

    def get_location(self, position: int) -> SourceLocation:
        breaks = self.__dict__.get("_breaks")
        if breaks is None:
            starts, ends = array("q"), array("q")
            for match in LINE_BREAK.finditer(self.body):
                starts.append(match.start())
                ends.append(match.end())
            breaks = self.__dict__["_breaks"] = (starts, ends)
        starts, ends = breaks
        before = bisect_left(starts, position)  # the line breaks before `position`
        return SourceLocation(before + 1, position + 1 - (ends[before - 1] if before else 0))


LINE_BREAK = re.compile(r"\r\n|[\n\r]")


class ParsedDocuments:
    """Parsed documents by text (and token limit), the least recently used let go past
    `size` documents, `chars` characters of their texts or `tokens` tokens. A parsed
    document keeps every token with its location: ~100 times its text for ordinary names
    (700 KB for a 6.7 KB document at the token limit), up to ~280 times for one-letter
    tokens (1.08 MB for 4 KB). A bound on the count alone let anyone sending new
    documents near the limits make 512 of them stay (360 MB, and the process grew to
    1.9 GB); on the characters alone, 69 MB of one-letter tokens. `tokens` (~540 bytes
    each at most) bounds it at ~26 MB. The validation results live as long as their
    document (`ValidationCache`)."""

    def __init__(self, size: int = 512, chars: int = DOCUMENT_CACHE_CHARS,
                 tokens: int = DOCUMENT_CACHE_TOKENS) -> None:
        self.size = size
        self.chars = chars
        self.tokens = tokens
        self.held = 0  # characters of the texts held
        self.held_tokens = 0
        # (text, token limit) -> (document, its tokens, the characters it holds)
        self.documents: OrderedDict[tuple[str, int], tuple[DocumentNode, int, int]] = \
            OrderedDict()

    def get(self, query: str, max_tokens: int) -> DocumentNode | None:
        entry = self.documents.get((query, max_tokens))
        if entry is None:
            return None
        self.documents.move_to_end((query, max_tokens))
        return entry[0]

    def parse(self, query: str, max_tokens: int) -> DocumentNode:
        document = self.get(query, max_tokens)
        if document is not None:
            return document
        document = parse(IndexedSource(query), max_tokens=max_tokens)
        self.keep(query, max_tokens, document)
        return document

    def keep(self, query: str, max_tokens: int, document: DocumentNode,
             source: str | None = None) -> None:
        """Keep `document`, parsed from `query`, or made of nodes parsed from `source` (a
        `query @live`'s rewrite: its nodes hold their own text, counted with it; it takes
        the place of the same text parsed, whose places are not the query's)."""
        chars = len(query) + (len(source) if source is not None else 0)
        if chars > self.chars:
            return
        kept = self.documents.get((query, max_tokens))
        if kept is not None:
            if source is None or kept[0] is document:
                return
            self.documents.pop((query, max_tokens))
            self.held -= kept[2]
            self.held_tokens -= kept[1]
        tokens = token_count(document)
        if tokens > self.tokens:
            return
        self.documents[query, max_tokens] = (document, tokens, chars)
        self.held += chars
        self.held_tokens += tokens
        while len(self.documents) > self.size or self.held > self.chars \
                or self.held_tokens > self.tokens:
            _, (_, gone, gone_chars) = self.documents.popitem(last=False)
            self.held -= gone_chars
            self.held_tokens -= gone


def token_count(document: DocumentNode) -> int:
    """The tokens of a parsed document (its locations link them; none without them)."""
    count, token = 0, document.loc.start_token if document.loc is not None else None
    while token is not None:
        count += 1
        token = token.next
    return count


OFFLOAD_CHARS = 2_000
# One thread for all of it: documents analysed side by side in several threads took the
# interpreter's lock from the event loop several times over (a fairness run's victim
# waited 302 ms for its deliveries); in one, the loop has it at least every other turn,
# and the rest wait their turn without costing anything. It works `courteous()`ly.
ANALYSIS_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="giftgraph-analysis")


class Turns:
    """One at a time per key (a caller): `acquire(key)` waits while another of the key's
    holds it, until its `release(key)`. For the analysis of large new documents: the analysis thread
    takes its work in order, and a caller that sent many at once over one socket (the
    allowance is charged after each) queued seconds of it ahead of everyone else's (a
    victim's deliveries 1.4 s late). One at a time, each caller has at most one in the
    thread's queue, and the ones waiting are charged as they come in."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[asyncio.Lock, int]] = {}

    async def acquire(self, key: str) -> None:
        lock, users = self.keys.get(key) or (asyncio.Lock(), 0)
        self.keys[key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._leave(key)
            raise

    def release(self, key: str) -> None:
        self.keys[key][0].release()
        self._leave(key)

    def _leave(self, key: str) -> None:
        lock, users = self.keys[key]
        if users > 1:
            self.keys[key] = (lock, users - 1)
        else:
            del self.keys[key]


ANALYSIS_TURNS = Turns()
# Held against a caller's allowance (and the anonymous callers' together) while its large
# new document is analysed, what it took charged as it goes: what is let in at once is
# bounded by the allowance before any of it has been charged (twenty addresses' first
# documents passed together, and a family's next new document waited 1.9 s behind them).
RESERVED_S = 0.05


def in_thread_time(work: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    """`work(*args, **kwargs)` and the CPU seconds this thread spent on it."""
    with courteous():
        started = time.thread_time()
        try:
            return work(*args, **kwargs), time.thread_time() - started
        except Exception as error:  # a refusal (a syntax error): what it cost goes with it
            error.analysis_seconds = time.thread_time() - started  # type: ignore[attr-defined]
            raise


def spent(error: BaseException, started: float) -> float:
    """What a failed analysis cost: its thread's time when it ran in the analysis thread
    (not the wait for its turn there), else the time since `started`."""
    seconds = getattr(error, "analysis_seconds", None)
    return seconds if isinstance(seconds, float) else time.perf_counter() - started


async def analysed(work: Callable[..., T], size: int, *args: Any, **kwargs: Any,
                   ) -> tuple[T, float]:
    """`work` (parsing or validating a document never seen before) and the seconds it
    took: in a worker thread when the document is over `OFFLOAD_CHARS` (`size`), so that
    the event loop keeps its turns while it runs (a document near the limits held it ~75
    ms at once); in place otherwise (a thread's hand-off costs more than a small one)."""
    if size > OFFLOAD_CHARS:
        return await asyncio.get_running_loop().run_in_executor(
            ANALYSIS_THREAD, functools.partial(in_thread_time, work, *args, **kwargs))
    started = time.perf_counter()
    return work(*args, **kwargs), time.perf_counter() - started


PARSED = ParsedDocuments()  # the process's (shared by its schemas, as Strawberry's was)
# The caller of the HTTP request this task serves (`InFlight.key`), for a parse ahead of
# its operation (`preparse`).
REQUEST_CALLER: ContextVar[str | None] = ContextVar("giftgraph_request_caller", default=None)


async def preparse(query: str, max_tokens: int, key: str, allowance: Allowance | None,
                   *, strict: bool = False) -> DocumentNode | None:
    """A document parsed ahead of its operation (to choose its transport, to rewrite a
    `query @live`) as the operation's own parse does it (`ParseWithTokenLimit`): from and
    into the same cache, a new one charged to the caller's analysis allowance, large ones
    in the analysis thread. None when it does not parse, or when the caller has spent its
    allowance (the operation is then refused as any would be); `strict`: that refusal,
    raised (a syntax error, QUERY_TOO_COMPLEX for the token limit, RATE_LIMITED), for a
    transport that must answer it before it starts streaming. Parsed on the loop every
    time and uncharged, a repeated 50 KB document held the loop ~20 ms a request before
    the operation's own (cached, so free) parse."""
    large, reserved = len(query) > OFFLOAD_CHARS, False
    keys: tuple[str, ...] = (key,)
    if large:
        await ANALYSIS_TURNS.acquire(key)  # one at a time per caller (`Turns`)
    try:
        known = PARSED.get(query, max_tokens)
        if known is not None:
            return known
        keys = analysis_keys(key, len(query))
        if allowance is not None and (wait := retry_after(allowance, keys)) > 0:
            if strict:
                raise too_many_new_documents(wait)
            return None
        if large and allowance is not None:
            charge(allowance, keys, RESERVED_S)  # reserved while it is parsed
            reserved = True
        started = time.perf_counter()
        try:
            document, seconds = await analysed(parse, len(query), IndexedSource(query),
                                               max_tokens=max_tokens)
        except (GraphQLError, RecursionError) as error:
            if allowance is not None:
                charge(allowance, keys, spent(error, started))
            if strict and isinstance(error, GraphQLSyntaxError):
                raise token_refusal(error, max_tokens) or error from None
            return None
    finally:
        if reserved and allowance is not None:
            charge(allowance, keys, -RESERVED_S)
        if large:
            ANALYSIS_TURNS.release(key)
    if allowance is not None:
        charge(allowance, keys, seconds)
    PARSED.keep(query, max_tokens, document)
    return document


def too_many_new_documents(wait: float) -> GraphQLError:
    """The refusal of a caller's new document past its analysis allowance."""
    return GraphQLError("Too many new documents: retry later",
                        original_error=RateLimited(max(1, math.ceil(wait))))


def token_refusal(error: GraphQLSyntaxError, max_tokens: int) -> GraphQLError | None:
    """The token limit's syntax error as the refusal it is (QUERY_TOO_COMPLEX), else None
    (any other syntax error is left as it is)."""
    # graphql-core's own words for this one case (its parser and its lexer).
    if f"Document contains more than {max_tokens} tokens" not in error.message:
        return None
    return GraphQLError(
        f"Query tokens exceed the limit of {max_tokens}",
        original_error=QueryTooComplex(f"Query tokens exceed the limit of {max_tokens}",
                                       limit=max_tokens, actual=max_tokens + 1,
                                       measure="tokens"))


def caller_key(context: Any) -> str:
    """The caller, as `admission.requests.InFlight.key` names it: `family:<id>` once its
    token is verified, else `ip:<network>` (giftgraph.admission.clients)."""
    user = getattr(context, "user", None)
    if user is not None:
        return f"family:{user.family_id}"
    client = getattr(getattr(context, "request", None), "client", None)
    return client_key(client.host if client is not None else None,
                      context.settings.ipv6_prefix_length)


ANONYMOUS = "ip:*"  # every anonymous caller's large new documents, together


def analysis_keys(key: str, size: int) -> tuple[str, ...]:
    """Whose allowance a new document's analysis spends: its caller's, and for an
    anonymous caller's large one (analysed in the thread) all anonymous callers' together
    too, so that many addresses can't take the thread from the families (20 of them
    queued seconds of it: a victim family's deliveries 840 ms late). No client needs a
    new document over 2,000 characters before it signs in."""
    return (key, ANONYMOUS) if key.startswith("ip:") and size > OFFLOAD_CHARS else (key,)


def retry_after(allowance: Allowance, keys: tuple[str, ...]) -> float:
    return max(allowance.retry_after(k) for k in keys)


def charge(allowance: Allowance, keys: tuple[str, ...], seconds: float) -> None:
    for k in keys:
        allowance.charge(k, seconds)


def analysis_allowance(settings: Any) -> Allowance:
    """Seconds of parsing and validating new documents per caller (`analysis_seconds`)."""
    return Allowance("analysis_seconds", settings.analysis_seconds_per_caller,
                     settings.analysis_burst_seconds)


class ParseWithTokenLimit(SchemaExtension):
    """Parsing, with the parsed documents kept (`PARSED`) and the token limit: the parser
    stops at the limit's next token (an over-long document is never parsed whole), and the
    refusal is QUERY_TOO_COMPLEX like the other limits', not a syntax error. `actual` is
    where parsing stopped. A refused document is not kept. A document not seen before is
    parsed only while its caller has some of its analysis allowance left (`allowance`,
    charged with the parse here and the validation in `FreshValidationCache`), else
    RATE_LIMITED: one caller sending new documents near the limits held the event loop
    ~75 ms each (their validation, mostly) and every other family waited behind them."""

    def __init__(self, max_tokens: int, max_chars: int | None = None,
                 allowance: Allowance | None = None,
                 documents: ParsedDocuments = PARSED) -> None:
        super().__init__()
        self.max_tokens = max_tokens
        self.max_chars = max_chars
        self.allowance = allowance
        self.documents = documents

    async def on_parse(self) -> AsyncIterator[None]:
        ec = self.execution_context
        query = ec.query
        known = None if query is None else self.documents.get(query, self.max_tokens)
        if known is not None:  # parsed (or a `query @live`'s rewrite made) within the limits
            ec.graphql_document = known
            yield
            return
        # Characters before tokens: comments, whitespace and string literals are no tokens,
        # yet graphql-core's lexer reads them a character at a time in Python (~0.3 s for a
        # 1 MB comment), and the parse and validation caches keep each document's text.
        if self.max_chars is not None and query is not None and len(query) > self.max_chars:
            limit = self.max_chars
            count_refusal(ec.context, "query_length")
            raise GraphQLError(
                f"Query length exceeds the limit of {limit} characters",
                original_error=QueryTooComplex(
                    f"Query length exceeds the limit of {limit} characters", limit=limit,
                    actual=len(query), measure="length"),
            )
        allowance = self.allowance
        key = caller_key(ec.context)
        if query is not None and len(query) > OFFLOAD_CHARS:
            # Its turn (`Turns`), held until it is validated (`on_validate`) or refused.
            await ANALYSIS_TURNS.acquire(key)
            self.turn = key
            known = self.documents.get(query, self.max_tokens)  # sent twice at once
            if known is not None:
                ec.graphql_document = known
                yield
                return
        keys = analysis_keys(key, len(query or ""))
        if allowance is not None:
            wait = retry_after(allowance, keys)
            if wait > 0:
                count_refusal(ec.context, "analysis_seconds")
                raise too_many_new_documents(wait)
            if self.turn is not None:  # reserved while it is analysed (`RESERVED_S`)
                self.reserved = keys
                charge(allowance, keys, RESERVED_S)
        started = time.perf_counter()
        try:
            document, seconds = await analysed(parse, len(query or ""),
                                               query if query is None
                                               else IndexedSource(query),
                                               max_tokens=self.max_tokens)
        except GraphQLSyntaxError as error:
            if allowance is not None:
                charge(allowance, keys, spent(error, started))
            self._refuse(ec, error)
            raise
        if allowance is not None:
            charge(allowance, keys, seconds)
        if query is not None:
            self.documents.keep(query, self.max_tokens, document)
        ec.graphql_document = document
        yield

    turn: str | None = None  # the caller whose analysis turn this operation holds
    reserved: tuple[str, ...] = ()  # the allowances its turn holds `RESERVED_S` of

    async def on_validate(self) -> AsyncIterator[None]:
        yield  # validated (`FreshValidationCache`, after this hook in the list)
        self._end_turn()

    async def on_operation(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self._end_turn()  # refused before its validation

    def _end_turn(self) -> None:
        if self.turn is not None:
            ANALYSIS_TURNS.release(self.turn)
            self.turn = None
        if self.reserved and self.allowance is not None:
            charge(self.allowance, self.reserved, -RESERVED_S)  # what it took is charged
            self.reserved = ()

    def _refuse(self, ec: Any, error: GraphQLSyntaxError) -> None:
        """The token limit's syntax error as the refusal it is (`token_refusal`)."""
        refusal = token_refusal(error, self.max_tokens)
        if refusal is not None:
            count_refusal(ec.context, "tokens")
            raise refusal from None

MEASURED = Measured()  # the process's documents, measured once per variables (Measured)
NO_CONTEXT = contextvars.Context()  # for callbacks that read no context variable


class DocumentBounds(SchemaExtension):
    """Refuses, before validation, a document over the depth, aliases or cost limit
    (QUERY_TOO_COMPLEX, a request error: nothing runs) and a mutation whose root fields,
    fragments expanded, its caller's budget has no room for (RATE_LIMITED); charges them
    to the budget before any of them runs.

    Its `on_validate` must come before the validation cache's in the schema's extensions.
    """

    def __init__(self) -> None:
        super().__init__()
        self.found: Found | None = None
        self.subscribed = False  # a subscription that passed on_execute

    async def on_validate(self) -> AsyncIterator[None]:
        ec = self.execution_context
        document = ec.graphql_document
        if document is not None and not ec.pre_execution_errors:
            settings = ec.context.settings
            schema = internals.graphql_schema(ec.schema)
            running = requested_operation(ec)
            self.found = MEASURED(schema, document, running, ec.variables,
                                 settings.default_page_size, settings.max_page_size)
            refusal: AppError | None = over_limit(self.found, settings)
            if refusal is not None:
                count_refusal(ec.context, refusal.extensions["measure"])
            else:
                refusal = await self._spent(operation_of(document, running))
            if refusal is not None:
                ec.pre_execution_errors = [GraphQLError(refusal.message,
                                                        original_error=refusal)]
        yield

    def get_results(self) -> dict[str, object]:
        """`extensions.pageSizeCapped` when a `first`/`last` asked for more than the
        maximum page (`max_page_size`): the page has the maximum, and `pageInfo` says
        whether more follow."""
        if self.found is None or not self.found.capped:
            return {}
        return {"pageSizeCapped": {
            "maximum": self.execution_context.context.settings.max_page_size,
            "fields": sorted(self.found.capped)}}

    async def _spent(self, operation: OperationDefinitionNode | None) -> AppError | None:
        """RATE_LIMITED (counted) when the caller's or its family's mutation budget has no
        room left for this mutation's root fields: refused before validation, which costs
        a document never seen before (each of a flood's mutations differs in a literal) far
        more than the measure. Nothing is spent here: `on_execute` spends, once the
        document is valid."""
        ctx = self.execution_context.context
        limits = ctx.rate_limits
        if limits is None or ctx.user is None or operation is None \
                or operation.operation != OperationType.MUTATION:
            return None
        running = self.found.running if self.found is not None else None
        fields = max(1, running.fields if running is not None else 1)
        try:
            await limits.check_mutation(str(ctx.user.id), fields)
        except AppError as exc:
            count_refusal(ctx, "mutation_rate")
            return exc
        try:
            await limits.check_family_mutation(str(ctx.user.family_id), fields)
        except AppError as exc:
            count_refusal(ctx, "family_mutation_rate")
            return exc
        return None

    async def on_execute(self) -> AsyncIterator[None]:
        ec = self.execution_context
        ctx = ec.context
        limits = ctx.rate_limits
        if limits is not None and ctx.user is not None and ec.result is None \
                and ec.operation_type.value == "mutation":
            running = self.found.running if self.found is not None else None
            fields = running.fields if running is not None else 1
            try:
                # The family's turn first: its budget is spent at an even pace, not in one
                # burst of transactions and fan-outs (giftgraph.admission.pace). Waiting
                # is counted; a wait that ran out is RATE_LIMITED. A mutation that waits
                # gives the connection its authentication read took back to the pool
                # first: else one family's queued mutations held the pool and every other
                # family's requests waited for a connection (or opened new ones).
                if await limits.pace_family_mutation(str(ctx.user.family_id), max(1, fields),
                                                     ctx.db.close):
                    count_refusal(ctx, "family_mutation_pace")
            except AppError as exc:
                count_refusal(ctx, "family_mutation_pace")
                refuse(self, exc)
                yield
                return
            try:
                await limits.hit_mutation(str(ctx.user.id), max(1, fields))
            except AppError as exc:
                count_refusal(ctx, "mutation_rate")
                refuse(self, exc)
            else:
                try:  # the family's budget too: a member more is no budget more
                    await limits.hit_family_mutation(str(ctx.user.family_id), max(1, fields))
                except AppError as exc:
                    count_refusal(ctx, "family_mutation_rate")
                    refuse(self, exc)
        if ec.result is not None:  # refused above: nothing is built
            yield
            return
        if ec.operation_type.value == "subscription":
            self._hold_subscription_cost()  # RATE_LIMITED past the family's
            self.subscribed = True
            yield
            return
        turn = getattr(ctx, "operation_turn", None)
        if turn is None:
            yield
            self._charge_discarded()
            return
        # A socket's query or mutation runs within its caller's share of requests in
        # flight, as an HTTP request does, and once its caller's answers are paid for
        # (admission.answers): a socket's 50 executed reads had all run before the first
        # was charged (adversary, 2026-11-27).
        try:
            release = await turn(caller_key(ctx))
        except RateLimited as exc:
            refuse(self, exc)
            yield
            return
        # Let go when the operation's task ends too: a socket closed with its operations
        # running cancels their tasks, and Strawberry never resumes this hook then (each
        # held its slot for good, and the family's every request was refused).
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(lambda _: release())
        try:
            yield
            self._charge_discarded()
        finally:
            release()

    def _hold_subscription_cost(self) -> None:
        """A family member's subscription holds its measured cost in its family's
        (`subscription_cost_per_family`, admission.sockets.SubscriptionCosts) from here
        until its operation's task ends: on a socket the operation's own task (a parked
        subscription runs in it), for an HTTP stream the task that streams it. A live
        query's is bounded by the live layer instead."""
        ec = self.execution_context
        ctx = ec.context
        costs = getattr(getattr(ctx, "live", None), "costs", None)
        user = getattr(ctx, "user", None)
        task = asyncio.current_task()
        if costs is None or user is None or self.found is None or task is None \
                or _root_fields(ec) == {"live"}:
            return
        running = self.found.running or self.found.worst
        try:
            hold = costs.hold(user.family_id, running.cost)
        except AppError as exc:
            count_refusal(ctx, "subscription_cost_per_family")
            refuse(self, exc)  # raises: a subscription's refusal
            return
        # In an empty context: by default the callback keeps a copy of this one, whose
        # values (the subscribe step's operation state among them) then outlive the
        # step for as long as the subscription: +1 KB per idle subscription (W3).
        task.add_done_callback(hold.release, context=NO_CONTEXT)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        """Each event of a subscription that started (its results on the plain path: the
        fast paths' shared renders are charged by `accel.render`) is charged as an
        executed answer is: with errors, its measured cost too."""
        if self.subscribed:
            self._charge_discarded(result)
        yield

    def _charge_discarded(self, result: Any = None) -> None:
        """An executed result with errors may have built far more than it kept: a non-null
        field's error nulls its parents up to the root, and every value below them, built
        (twice, when the lean executor declined), is gone from the answer whose values
        `answer_values` counts. Such a result is charged its operation's measured cost
        too, which is at least what it could build (`documents`)."""
        ec = self.execution_context
        result = ec.result if result is None else result
        charge = getattr(ec.context, "charge_answer", None)
        if charge is None or self.found is None or not getattr(result, "errors", None):
            return
        running = self.found.running or self.found.worst
        charge(0, running.cost)


def _root_fields(ec: Any) -> set[str]:
    """The names of the running operation's root fields, fragments aside (a fragment at the
    root counts as a field named "")."""
    operation = operation_of(ec.graphql_document, requested_operation(ec))
    if operation is None:
        return set()
    return {selection.name.value if isinstance(selection, FieldNode) else ""
            for selection in operation.selection_set.selections}
