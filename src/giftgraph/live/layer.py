"""The live layer of one process: the hub, shared scopes, dashboards, presence, live
queries and the shared renderer, started and stopped together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from giftgraph.accel.render import SharedRenderer
from giftgraph.admission.answers import Kept
from giftgraph.admission.pace import TimeBudget
from giftgraph.admission.sockets import ReplayTurns, SubscriptionCosts
from giftgraph.config import Settings
from giftgraph.db.engine import Database
from giftgraph.live.dashboard import DashboardFeeds
from giftgraph.live.hub import Hub
from giftgraph.live.presence import PresenceTracker
from giftgraph.live.queries import LiveQueries
from giftgraph.live.streams import SharedScopes

LIVE_BURST_S = 0.5  # seconds of live-query execution a family (or the process) may use at once


@dataclass
class Live:
    """Everything live in one process; started and stopped by the app's lifespan."""

    hub: Hub
    scopes: SharedScopes
    dashboards: DashboardFeeds
    presence: PresenceTracker
    renderer: SharedRenderer
    queries: LiveQueries
    # The costs of each family's open subscriptions (`subscription_cost_per_family`).
    costs: SubscriptionCosts

    @classmethod
    def create(cls, settings: Settings, database_url: str,
               database: Database) -> Live:
        hub = Hub(settings.broadcast_url, database_url,
                  queue_size=settings.subscriber_queue_size,
                  # half the pool's connections at most read replay pages (the rest: requests)
                  replay_turns=ReplayTurns(max(1, settings.db_pool_size // 2)))
        scopes = SharedScopes(database)
        return cls(
            hub=hub,
            scopes=scopes,
            dashboards=DashboardFeeds(hub, database, settings.dashboard_interval_ms / 1000),
            presence=PresenceTracker(hub, settings.presence_heartbeat_seconds,
                                     settings.presence_ttl_seconds),
            renderer=SharedRenderer(scopes),
            queries=LiveQueries(hub, database, settings.live_interval_ms / 1000,
                                settings.max_live_queries_per_family,
                                settings.max_live_cost_per_family,
                                TimeBudget("live_seconds", settings.live_seconds_per_family,
                                           settings.live_seconds_per_process, LIVE_BURST_S),
                                Kept(max(settings.max_live_bytes_per_family,
                                         2 * settings.max_response_bytes),
                                     settings.max_live_bytes)),
            costs=SubscriptionCosts(settings.max_subscription_cost_per_family),
        )

    @staticmethod
    def of(context: Any) -> Live:
        """The operation's live layer (`Context.live`), started by the app's lifespan."""
        live = context.live
        assert isinstance(live, Live), "the live layer is started by the app's lifespan"
        return live

    async def start(self) -> None:
        await self.hub.connect()

    async def stop(self) -> None:
        await self.presence.close()
        await self.hub.disconnect()
        await self.scopes.close()

