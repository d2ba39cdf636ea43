"""A live query's result, computed once and shared by its subscribers (`LiveFrame`).

A live subscription's resolver yields frames; the schema's execution context
(giftgraph.schema.execution) turns a frame into the subscription's result as it is, with no
field resolved per subscriber: `data` is the shared execution's JSON (the same bytes for
every subscriber, embedded as an `orjson.Fragment`), its errors each subscriber's own copy
(located under the `live` field) so that formatting one never touches another's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from graphql import ExecutionResult, GraphQLError

from giftgraph.admission.answers import at_least, too_large
from giftgraph.jsonbytes import kept_json

if TYPE_CHECKING:
    from giftgraph.admission import Refusals


@dataclass(frozen=True, slots=True)
class Outcome:
    """One execution of a live query: its `data` as JSON and its formatted errors."""

    data: bytes  # JSON: an object, or null
    errors: tuple[dict[str, Any], ...]
    # What two results are compared by: a hash of the data and the errors without their
    # traceId (the data itself here kept every result twice).
    digest: bytes

    @classmethod
    def of(cls, data: Any, errors: list[dict[str, Any]], limit: int | None = None,
           refusals: Refusals | None = None) -> Outcome:
        """An execution's result. Its errors lose their `locations`: places in the shared
        execution's document (`LivePlan.document`, printed from the selection), which no
        subscriber sent; each subscriber's own document may differ in every place. Their
        `path` says where they are. Data over `limit` bytes (`max_response_bytes`) is
        none, with the error that says so (giftgraph.admission.answers)."""
        errors = [{k: v for k, v in e.items() if k != "locations"} for e in errors]
        least = 0 if limit is None else at_least(data, limit)
        if limit is not None and least > limit:  # not written: refused before
            body, errors = b"null", [too_large(least, limit, refusals, exact=False)]
        else:
            body = kept_json(data)
            if limit is not None and len(body) > limit:
                body, errors = b"null", [too_large(len(body), limit, refusals)]
        comparable = [{**e, "extensions": {k: v for k, v in (e.get("extensions") or {}).items()
                                           if k != "traceId"}} for e in errors]
        digest = hashlib.blake2b(body, digest_size=32)
        digest.update(b"\n" + orjson.dumps(comparable))
        return cls(body, tuple(errors), digest.digest())

    @property
    def kept(self) -> int:
        """The bytes a live query keeps of it (admission.answers.Kept): its data, once."""
        return len(self.data)

    def parts(self, key: str | None) -> tuple[bytes, bytes, bytes]:
        """The subscription's result as JSON, `data` under the response key `key` (None:
        the query's own result, for `query @live`), in three parts: a head and a tail made
        for the key, around the data shared by every subscriber (written as one frame by
        giftgraph.accel.live). A copy of the data per response key, kept with the result,
        let one user's 200 subscriptions of one live query, each under an alias of its own,
        keep 800 MB that nothing counted (adversary, 2026-11-28)."""
        tail = b""
        if self.errors:
            tail = b',"errors":' + orjson.dumps([{**e, "path": _under(key, e.get("path"))}
                                                 for e in self.errors])
        if key is None or self.data == b"null":
            return b'{"data":', self.data, tail + b"}"
        return b'{"data":{' + orjson.dumps(key) + b":", self.data, b"}" + tail + b"}"

    def shaped(self, key: str | None) -> Any:
        if self.data == b"null":
            return None
        data = orjson.Fragment(self.data)
        return data if key is None else {key: data}


def _under(key: str | None, path: list[Any] | None) -> list[Any]:
    return [*([] if key is None else [key]), *(path or [])]


@dataclass(frozen=True, slots=True)
class LiveFrame:
    """What a live subscription yields: an `Outcome`, sent under the response key `key`
    (None: as the query's own result, for `query @live`)."""

    key: str | None
    outcome: Outcome

    def parts(self) -> tuple[bytes, bytes, bytes]:
        return self.outcome.parts(self.key)

    def result(self) -> ExecutionResult:
        """The subscription's result for this frame."""
        outcome = self.outcome
        errors = [GraphQLError(e.get("message", ""), path=_under(self.key, e.get("path")),
                               extensions=dict(e.get("extensions") or {}))
                  for e in outcome.errors]
        return ExecutionResult(data=outcome.shaped(self.key), errors=errors or None)
