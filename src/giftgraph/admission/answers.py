"""The bytes of one answer: `max_response_bytes`.

`max_query_cost` bounds an operation's fields, not their bytes: a gift's description may
be 5,000 characters of four-byte emoji, so 15 aliases of 100 gifts (cost ~18,000) answered
55.7 MB, rendered on the event loop in 0.6 s and held whole in the connection's buffer
while its client did not read (an adversary, 2026-11-27: 60 such connections took the
process from 137 MB to 2.8 GB). An answer over the bound is replaced, where it is
serialized, by the same answer with no data and one error, QUERY_TOO_COMPLEX: an HTTP
response and each message of a socket or stream (`capped`, from the view's JSON encoder),
and each result of a live query (`too_large`, by giftgraph.live.frames). What is sent is
then at most the bound; what a client leaves unread is bounded in time by
`http_send_timeout_seconds` (admission.server) and counts as in flight for its caller
until it is sent (admission.requests).

An answer is measured only once it is built, so the bound alone left the building: the
same 55.7 MB answer, refused each time, cost ~330 ms of the event loop, and answers just
under the bound, two in flight, ~220 MB a second (re-attack, 2026-11-27). `AnswerPace`
meters what each caller's answers cost, the refused ones at their full size: past a
burst, its next request or socket operation waits until it has paid.

Bytes are not all an answer costs. An executed answer of small values costs the executor
per value: ~14,000 of them (600 items' fields twice, a failing field sending the
operation to graphql-core) made 400 KB at ~150 ms of the event loop each, and one family
with two in flight took a core and raised another family's p99 from 8 to 138 ms (2026-11-27)
within every bound. So the values the executor built are metered too (`answer_values`),
counted in the same walk; a compiled read's JSON, written by PostgreSQL, has none.

Nor is an answer over the bound built whole any more: a compiled read's statement gives
back its JSON only within the bound and its size otherwise (accel/compiled.py, `Refused`),
and an executed answer is measured before it is written (`at_least`: its strings'
characters, which its UTF-8 is at least, counted until past the bound). The 29.6 MB answer
above cost the server 150-300 ms of CPU and 0.7-3 s of PostgreSQL, or 100-170 ms on the
executor's path (orjson, the text decoded and encoded again, the result cache's copy); now
10-50 ms compiled and 70-80 ms executed, all of that the request's own work (the count
itself: ~0.5 ms). The cost of what PostgreSQL writes is bounded before it runs: `cost`
counts a long text field as the names its value may hold (admission.documents, LONG_TEXT).
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from giftgraph.admission.pace import Bucket, KeyedPace
from giftgraph.tracing import current_trace_id

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from giftgraph.admission import Refusals

log = logging.getLogger("giftgraph.admission")


class Refused(Exception):
    """An answer of `size` bytes (at least) that was not built whole: over the bound."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def refusal(size: int, limit: int, refusals: Refusals | None = None, *,
            exact: bool = True, trace_id: str | None = None) -> str:
    """The message for an answer of `size` bytes (`exact=False`: at least) over `limit`;
    the refusal is counted and logged."""
    if refusals is not None:
        refusals.count("response_bytes")
    log.info("answer of %s%d bytes refused: over max_response_bytes (%d), traceId=%s",
             "" if exact else "at least ", size, limit, trace_id)
    return (f"The answer is {'' if exact else 'at least '}{size:,} bytes, over the "
            f"{limit:,} allowed: select fewer fields or smaller pages (a mutation's changes, if "
            "any, were applied)")


def too_large(size: int, limit: int, refusals: Refusals | None = None, *,
              exact: bool = True) -> dict[str, Any]:
    """The error that stands for an answer of `size` bytes over `limit` (counted, logged)."""
    trace_id = current_trace_id() or uuid.uuid4().hex
    return {"message": refusal(size, limit, refusals, exact=exact, trace_id=trace_id),
            "extensions": {"code": "QUERY_TOO_COMPLEX", "traceId": trace_id}}


def at_least(value: object, limit: int) -> int:
    """How many bytes `value`'s JSON has at least: its strings' characters (each at least a
    byte of UTF-8), counted until the count passes `limit`. A walk of the answer's values,
    which the executor has made already, instead of writing it: a string repeated by
    aliases is one object here but a copy each time in the JSON. JSON made already
    (`orjson.Fragment`: a compiled read's, which its statement bounded) counts nothing."""
    return limit - _left(value, limit, [0])


def measured(value: object, limit: int) -> tuple[int, int]:
    """`at_least(value, limit)`, and how many values the walk met: each object, list,
    string, number, boolean and null, until it stopped (JSON made already: none)."""
    count = [0]
    return limit - _left(value, limit, count), count[0]


def _left(value: object, budget: int, count: list[int]) -> int:
    count[0] += 1
    kind = type(value)
    if kind is str:
        return budget - len(value)  # type: ignore[arg-type]
    if kind is dict:
        for item in value.values():  # type: ignore[attr-defined]
            budget = _left(item, budget, count)
            if budget < 0:
                break
    elif kind is list:
        for item in value:  # type: ignore[attr-defined]
            budget = _left(item, budget, count)
            if budget < 0:
                break
    elif kind is orjson.Fragment:
        count[0] -= 1
    return budget


def answer_json(data: object, limit: int, refusals: Refusals | None = None
                ) -> tuple[bytes, int, int]:
    """`data` (an execution result, a batch of them, or a message carrying one) as JSON
    within `limit`; the bytes building it cost: its own size, or for one refused before it
    was written all its strings' characters (counted to the end then: the executor built
    all of them, 10,000 descriptions where the count stopped at 840); and the values the
    executor built for it (`measured`: none in JSON made already)."""
    least, values = measured(data, limit)
    if least > limit:
        least, values = measured(data, sys.maxsize)
        return _refuse(data, b"", least, limit, refusals, exact=False), least, values
    encoded = orjson.dumps(data)
    return capped(encoded, data, limit, refusals), len(encoded), values


def capped(encoded: bytes, data: object, limit: int,
           refusals: Refusals | None = None) -> bytes:
    """`encoded` (the JSON of `data`) if it is within `limit` bytes; else the same message
    with its result replaced by no data and the error: an execution result (`data`,
    `errors`), or a socket's or stream's message that carries one as its `payload`.
    Anything else (a protocol message without a result) goes out as it is."""
    if len(encoded) <= limit:
        return encoded
    return _refuse(data, encoded, len(encoded), limit, refusals, exact=True)


def _refuse(data: object, encoded: bytes, size: int, limit: int, refusals: Refusals | None,
            *, exact: bool) -> bytes:
    def refused() -> dict[str, Any]:
        return _refused(data, encoded, size, limit, refusals, exact)

    if isinstance(data, list):  # a batch: one error for all of it
        return orjson.dumps([refused()])
    if isinstance(data, dict):
        if isinstance(data.get("payload"), dict):
            return orjson.dumps({**data, "payload": refused()})
        if "data" in data or "errors" in data:
            return orjson.dumps(refused())
    return encoded or orjson.dumps(data)


# The first root field of a result's data, as orjson writes it: {"data":{"name":
_FIRST_FIELD = re.compile(rb'"data":\{"([_A-Za-z][_0-9A-Za-z]*)":')


def _refused(data: object, encoded: bytes, size: int, limit: int,
             refusals: Refusals | None, exact: bool) -> dict[str, Any]:
    """The execution result that stands for `data` (`encoded`: its JSON, if written): no
    data, and the error, at its first root field (it ran: not a request error, which has
    no path). The data may be JSON made already (a compiled read's), so the field is read
    off the text's start where there is text."""
    error = too_large(size, limit, refusals, exact=exact)
    result = data.get("payload", data) if isinstance(data, dict) else None
    first_key = first_field(result.get("data") if isinstance(result, dict) else None)
    if first_key is None and encoded:
        first = _FIRST_FIELD.search(encoded, 0, 512)
        first_key = None if first is None else first.group(1).decode()
    if first_key is not None:
        error["path"] = [first_key]
    return {"data": None, "errors": [error]}


def first_field(data: object) -> str | None:
    """The first response key of `data` if it is an object of values (not JSON text)."""
    if isinstance(data, dict):
        return next(iter(data), None)
    return None


class AnswerPace(KeyedPace):
    """What answers cost per caller, in bytes (`answer_bytes`) or executed values
    (`answer_values`): `spend` after an answer is built (all of it, refused or not), `paid`
    before the caller's next request or operation runs: while its bucket is in debt. A debt
    larger than the burst simply takes longer to pay."""

    def spend(self, key: str, n: int) -> None:
        now = time.monotonic()
        bucket = self._refill(key, now)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(self.burst, now)
        bucket.tokens -= n

    async def paid(self, key: str,
                   before_wait: Callable[[], Awaitable[None]] | None = None) -> bool:
        """Until `key` has paid what it owes (at once when it owes nothing); RateLimited
        after `wait` seconds (None: no limit). Whether it waited (`before_wait` first)."""
        return await self.take(key, 0, before_wait)


class RenderCharges:
    """What the events rendered for a family's subscriptions cost it (`family:<id>`), as
    its own answers do: bytes (`answer_bytes`) and values (`answer_values`).

    Values are paid in advance: when the family's events are published here (`prepay`),
    each of its events on the family's topic costs the measured costs of its open
    subscriptions in this process (admission.sockets.SubscriptionCosts: at least what
    they can render), before any render runs. Charged only after the renders, a burst of
    the family's mutations (37 within its mutation pace) queued ~3,000 renders that kept a
    core busy for ~30 s before its first debt slowed the next mutation (adversary,
    2026-11-27). A render then uses what was prepaid for it and is charged only what its
    values exceed (events published by another instance were prepaid there, not here)."""

    __slots__ = ("bytes", "prepaid", "values")

    def __init__(self, answer_bytes: AnswerPace, answer_values: AnswerPace) -> None:
        self.bytes, self.values = answer_bytes, answer_values
        self.prepaid: dict[str, int] = {}

    def prepay(self, family_id: uuid.UUID, events: int, held: int) -> None:
        """`events` of the family published, its subscriptions' costs here `held`."""
        if not held or not events:
            return
        key = f"family:{family_id}"
        self.values.spend(key, events * held)
        # What renders may still use: no more than a backlog's worth (renders of events
        # published elsewhere, or never rendered, must not make later ones free for long).
        self.prepaid[key] = min(self.prepaid.get(key, 0) + events * held, PREPAID_EVENTS * held)

    def __call__(self, key: str, size: int, values: int) -> None:
        """A render's bytes and values (`SharedRenderer.charge`)."""
        self.bytes.spend(key, size)
        prepaid = self.prepaid.get(key, 0)
        if prepaid:
            used = min(prepaid, values)
            values -= used
            if prepaid > used:
                self.prepaid[key] = prepaid - used
            else:
                del self.prepaid[key]
        if values:
            self.values.spend(key, values)


PREPAID_EVENTS = 64  # a family's events whose renders' prepaid values wait to be used


class Kept:
    """The bytes of the results live queries keep between runs (`live_bytes`): per family
    (`per_family`) and all families together (`total`). Each live query keeps its latest
    result, for the subscribers that join and to compare the next one with: within every
    other bound, four families' 68 live queries of ~4 MB kept the process at 1.95 GB (an
    adversary, 2026-11-28; each result was kept three times then). A result that would
    take its family past `per_family`, or the process past `total` while its family keeps
    more than an equal share of it, is not kept: the live query's subscribers get an
    error instead (`swap` says no), and its next run may fit again. The process's bound
    is soft: what a family keeps is not taken back when more families come, so each
    newcomer may still add its equal share (about total x (1 + ln(families / 8)) with
    results of a few MB, by the adversary's arithmetic)."""

    __slots__ = ("by_family", "per_family", "total", "total_limit")

    def __init__(self, per_family: int, total: int) -> None:
        self.per_family, self.total_limit = per_family, max(total, per_family)
        self.total = 0
        self.by_family: dict[object, int] = {}

    def swap(self, family: object, old: int, new: int, *, force: bool = False) -> bool:
        """Keep `new` bytes for `family` in place of `old` (which it kept), if within the
        bounds (`force`: regardless); a result no larger than the one it replaces always
        is."""
        held = self.by_family.get(family, 0)
        after = held - old + new
        if not force and new > old and (after > self.per_family or (
                self.total - old + new > self.total_limit
                and after > self.total_limit // (len(self.by_family)
                                                 + (family not in self.by_family)))):
            return False
        self.total += new - old
        if after > 0:
            self.by_family[family] = after
        else:
            self.by_family.pop(family, None)
        return True

    def release(self, family: object, size: int) -> None:
        """A live query of `family` that kept `size` bytes has stopped."""
        self.swap(family, size, 0, force=True)
