"""The app's state: what the lifespan starts and every part of the app reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from giftgraph.accel.switch import FastPaths
from giftgraph.admission import sockets as admission
from giftgraph.admission.answers import AnswerPace, RenderCharges
from giftgraph.admission.checks import caller_key
from giftgraph.admission.clients import client_key
from giftgraph.admission.requests import InFlight
from giftgraph.admission.throttle import Throttle
from giftgraph.config import Settings
from giftgraph.db.embedded import EmbeddedPostgres
from giftgraph.db.engine import Database
from giftgraph.errors import RateLimited
from giftgraph.live.layer import Live
from giftgraph.observability import Metrics
from giftgraph.persisted import Documents, scope_of
from giftgraph.ratelimit import RateLimits
from giftgraph.schema.extensions import CallerReads
from giftgraph.tracing import Tracing


@dataclass
class AppState:
    settings: Settings
    fast: FastPaths  # the fast paths installed (giftgraph.accel)
    metrics: Metrics
    rate_limits: RateLimits
    throttle: Throttle
    in_flight: InFlight
    # Bytes of answers per caller (giftgraph.admission.answers), HTTP and sockets alike.
    answer_bytes: AnswerPace
    # Values of executed answers per caller, likewise (the executor's work per value).
    answer_values: AnswerPace
    # The renders of each family's events, charged to it (the first values before them).
    render_charges: RenderCharges | None = None
    database: Database | None = None
    embedded: EmbeddedPostgres | None = None
    live: Live | None = None
    # Operations open per user over all sockets (`subscriptions_per_user`).
    operations: admission.OpenOperations = field(default_factory=admission.OpenOperations)
    # Documents named by hash: the trusted manifest, APQ registrations (giftgraph.persisted).
    documents: Documents = field(default_factory=Documents)
    tracing: Tracing | None = None  # OpenTelemetry, when OTEL_TRACES_EXPORTER is set
    # Sockets' authentications, read together (giftgraph.schema.extensions.CallerReads).
    caller_reads: CallerReads | None = None

    def callers(self, database: Database) -> CallerReads:
        reads = self.caller_reads
        if reads is None or reads.database is not database:
            reads = self.caller_reads = CallerReads(database)
        return reads

    def db(self) -> Database:
        assert self.database is not None, "the app's lifespan has not started"
        return self.database

    async def register_document(self, key: str, document: str, context: Any) -> None:
        """Store an APQ registration (its document found valid), charged to its caller's
        `persisted_register_rate` (its user, else its IP); past it nothing is stored."""
        user = getattr(context, "user", None)
        client = getattr(getattr(context, "request", None), "client", None)
        who = f"user:{user.id}" if user is not None else client_key(
            client.host if client else None, context.settings.ipv6_prefix_length)
        try:
            await self.rate_limits.hit("persisted_register_rate", who)
        except RateLimited:
            self.metrics.refusals.count("persisted_register_rate")
            return
        # The caller as it was authenticated for this operation: its family's (an
        # anonymous caller's: its IP's), found by no other (giftgraph.persisted).
        await self.documents.remember(key, document, scope_of(caller_key(context)))
