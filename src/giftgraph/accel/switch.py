"""The one switch: which fast paths are on (`install`), and the small interface through which
the app uses them (`FastPaths`). See the package's docstring."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import Scope, Send

from giftgraph.config import Settings

log = logging.getLogger("giftgraph.accel")


@dataclass(frozen=True, slots=True)
class FastPaths:
    """Which fast paths are on, and the hooks through which the app uses them."""

    executor: bool = False  # compiled reads, the lean executor, the plain-scalar fast path
    lean_resolvers: bool = False  # plain resolver methods called without Strawberry's wrapper
    sockets: bool = False  # the direct operation runner: shared rendering, parking
    wire: bool = False  # pre-framed writes, direct delivery, handshake released from uvicorn
    hooks: bool = False  # Strawberry's extension hooks resolved once per class (accel.hooks)

    @property
    def any(self) -> bool:
        return self.executor or self.lean_resolvers or self.sockets or self.wire or self.hooks

    def execution_context_class(self, suggest: bool) -> type[Any]:
        """The schema's execution context class (Strawberry's, plain)."""
        from giftgraph.schema.execution import ExecutionContext

        chosen: type[ExecutionContext] = ExecutionContext
        if self.executor:
            from giftgraph.accel.executor import LeanExecutionContext

            chosen = LeanExecutionContext
        return chosen if suggest else chosen.quiet()

    def install_schema(self, schema: Any) -> int:
        """After the schema is built: its extensions' runner, lean resolvers; how many
        fields got one."""
        if self.hooks and hasattr(schema, "extensions_runner_class"):  # GiftGraphSchema
            from giftgraph.accel.hooks import Runner

            schema.extensions_runner_class = Runner
        if not self.lean_resolvers:
            return 0
        from giftgraph.accel.resolvers import install_lean_resolvers

        return install_lean_resolvers(schema)

    def socket_handler(self, base: type[Any]) -> type[Any]:
        """The graphql-transport-ws handler class: `base`, or `base` running each operation
        with a direct sink (accel.sockets)."""
        if not self.sockets:
            return base
        from giftgraph.accel.sockets import direct_operations

        return direct_operations(base)

    def install_hub(self, hub: Any) -> None:
        """The hub's fan-out writes each event to a slice's parked, caught-up subscribers
        in one loop (accel.delivery.write_caught_up), with the direct operation runner."""
        if self.sockets:
            from giftgraph.accel.delivery import write_caught_up
            hub.write_caught_up = write_caught_up

    def capture(self, scope: Scope, send: Send) -> None:
        """Record a WebSocket's uvicorn protocol (for direct writes); call before any
        middleware wraps `send`."""
        if self.wire:
            from giftgraph.accel.wire import capture

            capture(scope, send)

    def release_handshake(self, scope: Scope) -> None:
        """Let go of an accepted socket's handshake headers (and uvicorn's copy)."""
        from giftgraph.accel import wire

        (wire.release_handshake if self.wire else wire.release_scope_headers)(scope)


PLAIN = FastPaths()


def install(settings: Settings) -> FastPaths:
    """The fast paths for these settings: `PLAIN` when switched off, else each piece whose
    library still has the shape it was written for (the others logged and left off)."""
    if not settings.accel:
        log.info("accel: off (GIFTGRAPH_ACCEL=false): the plain library paths serve")
        return PLAIN
    from giftgraph.accel import executor, hooks, internals, resolvers, sockets, wire

    gone = internals.missing()
    if gone:
        log.warning("accel: private names no longer there: %s", ", ".join(gone))
    sockets_ok = _checked(sockets.shape_ok)
    return FastPaths(executor=_checked(executor.shape_ok),
                     lean_resolvers=_checked(resolvers.lean_resolvers_ok),
                     sockets=sockets_ok, wire=sockets_ok and _checked(wire.shape_ok),
                     hooks=_checked(hooks.shape_ok))


def _checked(shape_ok: Callable[[], bool]) -> bool:
    """A piece's shape check; one that fails outright counts as a changed shape."""
    try:
        return shape_ok()
    except Exception:
        log.warning("accel: checking %s failed; that fast path is off",
                    shape_ok.__module__, exc_info=True)
        return False


def ws_protocol(enabled: bool) -> str:
    """The `--ws` protocol for uvicorn: the lean one (accel.wire) when the fast paths are
    on and uvicorn's protocol has the expected shape, else admission's (uvicorn's
    websockets-sansio with the send timeout)."""
    from giftgraph.accel.wire import ws_protocol as choose

    return choose(enabled)
