"""Two methods of Strawberry's are inlined into ours (`giftgraph/accel/sockets.py`,
`giftgraph/web/sockets.py`), changed only in
what they keep alive: `TransportWSHandler.run_operation` (a parked subscription runs after
the stream generator is dropped) and `SocketAdapter.iter_json` (no local for the last
message's text). A Strawberry release that changes either must be looked at: re-inline
its version, then record its hash here."""

from __future__ import annotations

import hashlib
import inspect

import pytest
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)

from giftgraph.accel.sockets import OperationStreamClosed

INLINED = {
    "BaseGraphQLTransportWSHandler.run_operation":
        (BaseGraphQLTransportWSHandler.run_operation, "e760cd71eb37905f"),
    "ASGIWebSocketAdapter.iter_json": (ASGIWebSocketAdapter.iter_json, "eccc1390e8d7876f"),
}
# Inlined by the fast paths (giftgraph.accel.sockets), not by the plain handler.
FAST = {"BaseGraphQLTransportWSHandler.run_operation"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.accel) if n in FAST else n
                                  for n in INLINED])
def test_the_strawberry_code_we_inlined_is_the_installed_one(name: str) -> None:
    method, recorded = INLINED[name]
    source = inspect.getsource(method)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == recorded, \
        f"Strawberry's {name} changed: re-inline it (giftgraph/accel/sockets.py, " \
        "giftgraph/web/sockets.py)"


@pytest.mark.accel
def test_the_exception_that_ends_a_closed_operation_is_strawberrys() -> None:
    assert OperationStreamClosed.__module__.startswith("strawberry.")
