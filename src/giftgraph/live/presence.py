"""Presence: who watches a topic, across instances, with heartbeats that expire."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from giftgraph.ids import parse_uuid
from giftgraph.live.backends import Refused
from giftgraph.live.hub import Hub
from giftgraph.live.publishing import channel
from giftgraph.live.subscriber import OVERFLOW, RESYNC
from giftgraph.live.workers import Ready, start_worker, stop_worker

log = logging.getLogger("giftgraph.live")

Key = tuple[uuid.UUID, str]


class Viewers:
    """A one-slot mailbox of the newest viewer set."""

    def __init__(self) -> None:
        self.value: frozenset[uuid.UUID] | None = None
        self._ready = asyncio.Event()

    def put(self, value: frozenset[uuid.UUID]) -> None:
        if value != self.value:
            self.value = value
            self._ready.set()

    async def get(self) -> frozenset[uuid.UUID]:
        await self._ready.wait()
        self._ready.clear()
        assert self.value is not None
        return self.value


class Announcement(NamedTuple):
    """Another instance's viewers of a room, for `ttl` seconds unless announced again."""

    users: frozenset[uuid.UUID]
    ttl: float


class Remote(NamedTuple):
    """Another instance's viewers of a room, until `expires` (time.monotonic())."""

    users: frozenset[uuid.UUID]
    expires: float


@dataclass
class Room:
    local: Counter[uuid.UUID] = field(default_factory=Counter)
    remote: dict[str, Remote] = field(default_factory=dict)  # by instance
    watchers: set[Viewers] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    def viewers(self) -> frozenset[uuid.UUID]:
        users = {u for u, n in self.local.items() if n > 0}
        for remote in self.remote.values():
            users |= remote.users
        return frozenset(users)


def _announcement(item: dict[str, Any]) -> Announcement | None:
    """Another instance's announcement, or None when malformed: a bad
    user id would end the room's listener, and a NaN or infinite ttl would never expire."""
    users, ttl = item.get("users", []), item.get("ttl", 15)
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users) \
            or type(ttl) not in (int, float) or not (math.isfinite(ttl) and ttl > 0):
        return None
    parsed = [parse_uuid(u) for u in users]
    if any(u is None for u in parsed):
        return None
    return Announcement(frozenset(u for u in parsed if u is not None), float(ttl))


class PresenceTracker:
    """Each instance announces its local viewers of a topic on join, leave and every
    `heartbeat` seconds; another instance's announcement expires after `ttl` seconds,
    so the viewers of a crashed instance disappear."""

    def __init__(self, hub: Hub, heartbeat: float = 5.0, ttl: float = 15.0) -> None:
        self.hub = hub
        self.heartbeat = heartbeat
        self.ttl = ttl
        self.instance = uuid.uuid4().hex
        self.rooms: dict[Key, Room] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[bool]] = set()  # announcements in flight

    def _channel(self, key: Key) -> str:
        return channel(key[0], f"presence:{key[1]}")

    async def _announce(self, key: Key, sync: bool = False) -> bool:
        """Publish this instance's viewers of `key`; False when the broker is away (the
        heartbeats resume later). A message the broker refuses (too many viewers for a
        NOTIFY) is logged and counts as done: retrying would not help."""
        room = self.rooms.get(key)
        users = sorted(str(u) for u in (room.local if room else {}) if room and room.local[u] > 0)
        message = {"presence": self.instance, "users": users, "ttl": self.ttl, "sync": sync}
        try:
            await self.hub.broadcast.publish(self._channel(key), orjson.dumps(message).decode())
        except Refused as exc:
            log.error("presence of %d viewers on %s refused by the broker: %s", len(users),
                      key[1], exc)
        except Exception:  # the broker is away
            log.debug("presence announcement failed", exc_info=True)
            return False
        return True

    def _notify(self, room: Room) -> None:
        viewers = room.viewers()
        for watcher in room.watchers:
            watcher.put(viewers)

    async def _listen(self, key: Key, room: Room, ready: Ready) -> None:
        while True:
            async with self.hub.listen(self._channel(key)) as sub:
                ready.set()
                await self._announce(key, sync=True)  # ask the others to announce too
                while True:
                    item: Any = await sub.get()
                    if item is OVERFLOW:
                        break  # listen again from scratch
                    if item is RESYNC:
                        await self._announce(key, sync=True)
                        continue
                    self._on_message(key, room, item)

    def _on_message(self, key: Key, room: Room, item: dict[str, Any]) -> None:
        instance = item.get("presence")
        if not isinstance(instance, str) or instance == self.instance:
            return
        announced = _announcement(item)
        if announced is None:  # never the end of the room
            log.warning("ignoring a malformed presence message on %s", key[1])
            return
        users, ttl = announced
        if users:
            room.remote[instance] = Remote(users, time.monotonic() + ttl)
        else:
            room.remote.pop(instance, None)
        self._notify(room)
        if item.get("sync"):
            task = asyncio.ensure_future(self._announce(key))
            self._pending.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._pending.discard)

    async def _tick(self) -> None:
        """Expire other instances' viewers every second; start a heartbeat round every
        `heartbeat` seconds, in a task of its own: a broker that takes long to answer
        delays the round, never the expiry (nor a second round on top of it)."""
        last_beat = 0.0
        beat: asyncio.Task[None] | None = None
        try:
            while True:
                await asyncio.sleep(min(1.0, self.heartbeat))
                now = time.monotonic()
                for room in list(self.rooms.values()):
                    stale = [i for i, remote in room.remote.items() if remote.expires < now]
                    for instance in stale:
                        del room.remote[instance]
                    if stale:
                        self._notify(room)
                if now - last_beat >= self.heartbeat and (beat is None or beat.done()):
                    last_beat = now
                    beat = asyncio.create_task(self._beat())
        finally:
            if beat is not None:
                beat.cancel()

    async def _beat(self) -> None:
        for key in list(self.rooms):
            if not await self._announce(key):
                # The broker is away: every other room would wait as long for the same
                # answer. The next round tries again.
                break

    @asynccontextmanager
    async def join(self, family_id: uuid.UUID, topic: str,
                   user_id: uuid.UUID) -> AsyncIterator[Viewers]:
        """Count `user_id` as watching `topic` while inside; yields viewer-set updates."""
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick())
        key = (family_id, topic)
        room = self.rooms.get(key)
        if room is None:
            room = self.rooms[key] = Room()
            await start_worker(self.rooms, key, room, lambda ready: self._listen(key, room, ready),
                               lambda: not room.watchers)
        watcher = Viewers()
        room.watchers.add(watcher)
        room.local[user_id] += 1
        self._notify(room)
        await self._announce(key)
        try:
            yield watcher
        finally:
            room.local[user_id] -= 1
            room.watchers.discard(watcher)
            self._notify(room)
            await self._announce(key)
            if not room.watchers:
                await stop_worker(self.rooms, key, room)

    async def close(self) -> None:
        for task in [self._ticker, *(r.task for r in self.rooms.values())]:
            if task is not None:
                task.cancel()
