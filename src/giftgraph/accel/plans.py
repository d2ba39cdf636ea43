"""Compiled reads kept: each operation's statement (`CompiledRead`), compiled once per
document, operation, variables and page sizes by `giftgraph.accel.compiled.Compiler` and
run with the caller's family and user as parameters."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from graphql import OperationType
from sqlalchemy import TextClause, text

from giftgraph.accel.compiled import Compiler, ExecutionContext
from giftgraph.accel.sql import MAX_KEY_CHARS, MAX_SQL_CHARS
from giftgraph.admission.answers import Refused
from giftgraph.db.session import Prepared


@dataclass(frozen=True)
class CompiledRead:
    statement: TextClause
    params: dict[str, Any]
    first: str  # the first root field's response key (where a refusal's error points)
    prepared: Prepared = field(init=False)  # the statement in asyncpg's form

    def __post_init__(self) -> None:
        object.__setattr__(self, "prepared", Prepared(self.statement))

    async def run(self, ec: ExecutionContext) -> orjson.Fragment | None:
        """The result's `data` as the JSON PostgreSQL wrote (`orjson.Fragment`: the
        transports write it into the response as it is, as they do a cached result), or
        None where the executor must serve (a root object or a relation that may not be
        null is missing: it reports the error). `Refused` where the JSON is over
        `max_response_bytes`: PostgreSQL sent its size, not the JSON. The bound is the
        answer's, `{"data":...}` (`ENVELOPE`), as the executor's path counts it."""
        ctx = ec.context_value
        user = ctx.user
        params = {**self.params, "gg_family": user.family_id, "gg_user": user.id,
                  "gg_today": datetime.now(UTC).date(),
                  "gg_limit": ctx.settings.max_response_bytes - ENVELOPE}
        ((body, missing, size),) = await ctx.db.fetch(self.prepared, params)
        if missing:
            return None
        if body is None:
            raise Refused(size + ENVELOPE)
        return orjson.Fragment(body)


# What an answer adds to its data's JSON: `{"data":` and `}`.
ENVELOPE = len(b'{"data":}')


class CompiledReads:
    """Compiled statements by document, operation, variables and page sizes (least
    recently used evicted): compiling walks the whole selection, a repeated read only
    looks it up. A plan holds no family or user: those are parameters of each run."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.plans: OrderedDict[Any, CompiledRead | None] = OrderedDict()

    def get(self, ec: ExecutionContext) -> CompiledRead | None:
        """The operation's plan, or None: it does not compile (or is not a query by a
        signed-in user, whose family scopes the statement)."""
        ctx = ec.context_value
        if getattr(ctx, "user", None) is None or ec.operation.operation is not OperationType.QUERY:
            return None
        loc = ec.operation.loc
        settings = ctx.settings
        try:
            key = None if loc is None else (
                loc.source.body, loc.start, settings.default_page_size, settings.max_page_size,
                orjson.dumps(ec.variable_values, option=orjson.OPT_SORT_KEYS, default=str),
            )
        except TypeError:
            key = None
        if key is not None and len(key[0]) + len(key[4]) > MAX_KEY_CHARS:
            key = None  # a huge document or variables: compiled each time, never held
        if key is not None and key in self.plans:
            self.plans.move_to_end(key)
            return self.plans[key]
        plan = compile_read(ec)
        if key is not None:
            self.plans[key] = plan
            if len(self.plans) > self.size:
                self.plans.popitem(last=False)
        return plan


def compile_read(ec: ExecutionContext) -> CompiledRead | None:
    compiler = Compiler(ec)
    try:
        sql = compiler.root()
    except Exception:  # NotCompiled, or an argument that is an error: the executor's
        return None
    if len(sql) > MAX_SQL_CHARS:
        return None
    return CompiledRead(text(sql), compiler.params, compiler.first)


PLANS = CompiledReads()
