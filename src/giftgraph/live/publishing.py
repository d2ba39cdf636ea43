"""Publishing committed events to the broker (the hub's sending side): the channel and
encoding of an event, and `Publisher`, which keeps what the broker can't take and publishes
it again, in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from broadcaster import Broadcast

from giftgraph.db import models as m
from giftgraph.live.backends import Refused

log = logging.getLogger("giftgraph.live")

# Bytes of what the backend sends for an event (`payload_size`: after its own encoding and
# escaping); a larger event travels as a reference and is loaded once by each instance.
THIN_OVER = 7000
# Messages kept while the broker can't take them (events and revocations), published again
# in order once it can. Past this bound new events are not kept: other instances'
# subscribers still catch up, at the next event on the topic, through gap detection
# (`behind`); revocations are always kept (one per deactivated or deleted user).
PENDING_MAX = 10_000
REPUBLISH_EVERY = 0.5  # seconds between attempts while anything is pending
# The publisher is stuck (`Hub.stuck`, /health) after this long without progress (kept
# messages not going out, or a publish waiting for the broker's answer), or when it dropped
# a message this recently.
STUCK_AFTER = 10.0


def channel(family_id: uuid.UUID, topic: str) -> str:
    """Broadcaster channels are scoped by family and topic."""
    return f"gg:{family_id}:{topic}"


def encode_event(e: m.Event) -> str:
    return orjson.dumps({
        "seq": e.seq, "family_id": str(e.family_id), "topic": e.topic, "kind": e.kind.value,
        "entity_type": e.entity_type, "entity_id": str(e.entity_id),
        "actor_id": str(e.actor_id) if e.actor_id else None, "at": e.at.isoformat(),
        "payload": e.payload, "prev": e.prev_seq,
    }).decode()


def reference(e: m.Event) -> str:
    """An event sent by reference: each instance loads it from the Event table."""
    return orjson.dumps({"thin": True, "seq": e.seq, "prev": e.prev_seq}).decode()


@dataclass(slots=True)
class Outgoing:
    """A message for the broker: an event, or a control message (a revocation).

    An event's `reference` goes instead when the broker refuses the event itself for its
    content; None when there is nothing smaller to send (a control message, or an event
    that already is its reference)."""

    channel: str
    message: str
    event: bool
    reference: str | None = None


def decode_event(d: dict[str, Any]) -> m.Event:
    return m.Event.published(
        seq=d["seq"], family_id=uuid.UUID(d["family_id"]), topic=d["topic"],
        kind=m.EventKind(d["kind"]), entity_type=d["entity_type"],
        entity_id=uuid.UUID(d["entity_id"]),
        actor_id=uuid.UUID(d["actor_id"]) if d["actor_id"] else None,
        at=datetime.fromisoformat(d["at"]), payload=d["payload"], prev_seq=d.get("prev"),
    )


class Publisher:
    """The hub's publishing side: committed events (and control messages) to the broker,
    in order; what it can't take kept and published again; refused content sent by
    reference; progress tracked for /health (`stuck`)."""

    def __init__(self, backend: Any, broadcast: Broadcast) -> None:
        self.backend = backend
        self.broadcast = broadcast
        self.published = 0
        self.publish_failures = 0  # messages the broker could not take at first (kept)
        self.publish_refused = 0  # refused for their content: sent by reference, or dropped
        self.publish_dropped = 0  # never sent: refused even by reference, or past PENDING_MAX
        # Called with how many events went out, each time some did: at once from `publish`
        # or later from `_republish` (never for events the broker refused).
        self.on_published: Callable[[int], None] | None = None
        # Called with a reason ("refused", "backlog_full") and how many messages were dropped.
        self.on_dropped: Callable[[str, int], None] | None = None
        # Oldest first: published again from `_republish_loop`.
        self.pending: deque[Outgoing] = deque()
        self.stuck_after = STUCK_AFTER
        self._waiting_since: float | None = None  # when pending last made no progress
        self._publishing: dict[object, float] = {}  # each publish awaiting the broker: since
        self._dropped_at = -float("inf")
        self._retry_now = asyncio.Event()

    async def publish(self, events: list[m.Event]) -> int:
        """Called after COMMIT; how many of `events` went out now. A broker failure is
        logged, not raised: the change is committed, and what the broker could not take is
        kept and published again (in order, before anything newer) when it takes messages
        again. An event the broker refuses for its content goes by reference at once."""
        messages = []
        for e in events:
            name, message, ref = channel(e.family_id, e.topic), encode_event(e), reference(e)
            if self._payload_size(name, message) > THIN_OVER:
                messages.append(Outgoing(name, ref, True))
            else:
                messages.append(Outgoing(name, message, True, ref))
        sent = await self._send(messages)
        self._count_published(sent)
        return sent

    def _payload_size(self, name: str, message: str) -> int:
        """The bytes the backend sends for `message` (a broadcaster backend of its own:
        the UTF-8 bytes); unencodable counts as too large."""
        size = getattr(self.backend, "payload_size", None)
        try:
            return int(size(name, message)) if size is not None else len(message.encode())
        except (Refused, UnicodeEncodeError):
            return sys.maxsize

    @property
    def backlog_seconds(self) -> float:
        """How long the publisher has gone without progress: the kept messages since one
        last went out, or the oldest publish still waiting for the broker's answer (a
        broker that stopped answering keeps nothing, but holds every publish); 0 when
        neither."""
        now, since = time.monotonic(), self._waiting_since
        kept = now - since if self.pending and since is not None else 0.0
        waiting = now - min(self._publishing.values()) if self._publishing else 0.0
        return max(kept, waiting)

    @property
    def stuck(self) -> bool:
        """The publisher has gone `stuck_after` seconds without progress
        (`backlog_seconds`), or a message was dropped within the last `stuck_after`
        seconds."""
        return (self.backlog_seconds >= self.stuck_after
                or time.monotonic() - self._dropped_at < self.stuck_after)

    async def _send(self, messages: list[Outgoing]) -> int:
        """Publish `messages` in order, or keep them (and any after a failure) pending; how
        many went out. Behind anything pending, they wait their turn: order per channel."""
        sent = 0
        for i, out in enumerate(messages):
            if self.pending:
                self._keep(messages[i:])
                break
            try:
                sent += await self._publish_one(out)
            except Exception:  # any broker error; the event is safe in the database
                log.warning("publish on %s failed; kept to publish again", out.channel,
                            exc_info=True)
                self._keep(messages[i:])
                break
        return sent

    async def _publish_one(self, out: Outgoing) -> bool:
        """Publish `out`: True when it went out, or, refused for its content, its reference
        did; False when it was refused with nothing smaller to send (dropped: logged and
        counted). Raises when the broker could not take it for now (the caller keeps it)."""
        while True:
            token = object()
            self._publishing[token] = time.monotonic()
            try:
                await self.broadcast.publish(out.channel, out.message)
            except Refused as exc:
                self.publish_refused += 1
                if out.reference is None:
                    log.error("the broker refused a message on %s for its content (%s); "
                              "dropped", out.channel, exc)
                    self._dropped("refused", 1)
                    return False
                log.warning("the broker refused an event on %s for its content (%s); sent "
                            "by reference instead", out.channel, exc)
                out.message, out.reference = out.reference, None
                continue
            finally:
                del self._publishing[token]
            return True

    def _keep(self, messages: list[Outgoing]) -> None:
        if not self.pending:
            self._retry_now.set()
            self._waiting_since = time.monotonic()
        self.publish_failures += len(messages)
        dropped = 0
        for item in messages:
            if item.event and len(self.pending) >= PENDING_MAX:
                dropped += 1
                continue
            self.pending.append(item)
        if dropped:
            self._dropped("backlog_full", dropped)
            log.warning("%d unpublished events dropped (%d pending already); subscribers "
                        "catch up at their topic's next event", dropped, PENDING_MAX)

    def _dropped(self, reason: str, count: int) -> None:
        self.publish_dropped += count
        self._dropped_at = time.monotonic()
        if self.on_dropped is not None:
            try:
                self.on_dropped(reason, count)
            except Exception:  # metrics must never stop publishing
                log.warning("on_dropped failed", exc_info=True)

    async def _republish(self) -> bool:
        """Publish what is pending, oldest first, until done (True) or the first failure
        (False: the rest stays pending). A message refused for its content goes by
        reference or is dropped, never retried. Only one caller at a time
        (`_republish_loop`)."""
        events = 0
        try:
            while self.pending:
                out = self.pending[0]
                try:
                    went = await self._publish_one(out)
                except Exception:  # the broker still can't take it: keep it, try again later
                    log.info("publishing %d pending messages again failed", len(self.pending),
                             exc_info=True)
                    return False
                self.pending.popleft()
                self._waiting_since = time.monotonic()
                events += went and out.event
            return True
        finally:
            if events:
                log.warning("published %d pending events again", events)
                self._count_published(events)

    def _count_published(self, count: int) -> None:
        self.published += count
        if count and self.on_published is not None:
            try:
                self.on_published(count)
            except Exception:  # metrics must never stop publishing
                log.warning("on_published failed", exc_info=True)

    async def _republish_loop(self) -> None:
        """Publish pending messages again: when the first is kept, when the backend
        reconnects, and every REPUBLISH_EVERY seconds while anything is pending."""
        while True:
            await self._retry_now.wait()
            self._retry_now.clear()
            while self.pending and not await self._republish():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._retry_now.wait(), REPUBLISH_EVERY)
                self._retry_now.clear()
