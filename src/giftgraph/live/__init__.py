"""Live events: resilient broadcaster backends, the hub, subscription streams,
the shared dashboard and presence."""

from __future__ import annotations

from dataclasses import dataclass

from giftgraph.config import Settings
from giftgraph.db.engine import Database
from giftgraph.live.dashboard import DashboardFeeds
from giftgraph.live.hub import Hub, channel
from giftgraph.live.presence import PresenceTracker
from giftgraph.live.render import SharedRenderer
from giftgraph.live.streams import SharedScopes, event_stream


@dataclass
class Live:
    """Everything live in one process; started and stopped by the app's lifespan."""

    hub: Hub
    scopes: SharedScopes
    dashboards: DashboardFeeds
    presence: PresenceTracker
    renderer: SharedRenderer

    @classmethod
    def create(cls, settings: Settings, database_url: str,
               database: Database) -> Live:
        hub = Hub(settings.broadcast_url, database_url,
                  queue_size=settings.subscriber_queue_size)
        scopes = SharedScopes(database)
        return cls(
            hub=hub,
            scopes=scopes,
            dashboards=DashboardFeeds(hub, database, settings.dashboard_interval_ms / 1000),
            presence=PresenceTracker(hub, settings.presence_heartbeat_seconds,
                                     settings.presence_ttl_seconds),
            renderer=SharedRenderer(scopes),
        )

    async def start(self) -> None:
        await self.hub.connect()

    async def stop(self) -> None:
        await self.presence.close()
        await self.hub.disconnect()
        await self.scopes.close()


__all__ = ["Hub", "Live", "SharedScopes", "channel", "event_stream"]
