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
under the bound, two in flight, ~220 MB a second (re-attack, 2026-11-27). `AnswerBytes`
meters what each caller's answers cost, the refused ones at their full size: past a
burst, its next request or socket operation waits until it has paid.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from giftgraph.admission.pace import Bucket, KeyedPace
from giftgraph.tracing import current_trace_id

if TYPE_CHECKING:
    from giftgraph.admission import Refusals

log = logging.getLogger("giftgraph.admission")


def too_large(size: int, limit: int, refusals: Refusals | None = None) -> dict[str, Any]:
    """The error that stands for an answer of `size` bytes over `limit` (counted, logged)."""
    trace_id = current_trace_id() or uuid.uuid4().hex
    if refusals is not None:
        refusals.count("response_bytes")
    log.info("answer of %d bytes refused: over max_response_bytes (%d), traceId=%s",
             size, limit, trace_id)
    return {"message": f"The answer is {size:,} bytes, over the {limit:,} allowed: select "
                       "fewer fields or smaller pages (changes a mutation made were applied)",
            "extensions": {"code": "QUERY_TOO_COMPLEX", "traceId": trace_id}}


def capped(encoded: bytes, data: object, limit: int,
           refusals: Refusals | None = None) -> bytes:
    """`encoded` (the JSON of `data`) if it is within `limit` bytes; else the same message
    with its result replaced by no data and the error: an execution result (`data`,
    `errors`), or a socket's or stream's message that carries one as its `payload`.
    Anything else (a protocol message without a result) goes out as it is."""
    if len(encoded) <= limit:
        return encoded
    if isinstance(data, list):  # a batch: one error for all of it
        return orjson.dumps([_refused(encoded, limit, refusals)])
    if isinstance(data, dict):
        if isinstance(data.get("payload"), dict):
            return orjson.dumps({**data, "payload": _refused(encoded, limit, refusals)})
        if "data" in data or "errors" in data:
            return orjson.dumps(_refused(encoded, limit, refusals))
    return encoded


# The first root field of a result's data, as orjson writes it: {"data":{"name":
_FIRST_FIELD = re.compile(rb'"data":\{"([_A-Za-z][_0-9A-Za-z]*)":')


def _refused(encoded: bytes, limit: int, refusals: Refusals | None) -> dict[str, Any]:
    """The execution result that stands for the one in `encoded`: no data, and the error,
    at its first root field (it ran: not a request error, which has no path). The data may
    be JSON made already (a compiled read's), so the field is read off the text's start."""
    error = too_large(len(encoded), limit, refusals)
    first = _FIRST_FIELD.search(encoded, 0, 512)
    if first is not None:
        error["path"] = [first.group(1).decode()]
    return {"data": None, "errors": [error]}


class AnswerBytes(KeyedPace):
    """Bytes of answers per caller (`answer_bytes`): `spend` after an answer is built (its
    full size, refused or not), `paid` before the caller's next request or operation runs:
    while its bucket is in debt. A debt larger than the burst simply takes longer to pay."""

    def spend(self, key: str, n: int) -> None:
        now = time.monotonic()
        bucket = self._refill(key, now)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(self.burst, now)
        bucket.tokens -= n

    async def paid(self, key: str) -> bool:
        """Until `key` has paid what it owes (at once when it owes nothing); RateLimited
        after `wait` seconds (None: no limit). Whether it waited."""
        return await self.take(key, 0)
