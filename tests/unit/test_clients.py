"""Anonymous callers keyed by network (giftgraph.admission.clients)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from giftgraph.admission.clients import client_key, client_network
from giftgraph.admission.requests import InFlight
from giftgraph.config import Settings


@pytest.mark.parametrize(("host", "network"), [
    ("192.0.2.1", "192.0.2.1"),
    ("2001:db8::1", "2001:db8::/64"),
    ("2001:db8::ffff:ffff:ffff:ffff", "2001:db8::/64"),
    ("2001:db8:0:1::1", "2001:db8:0:1::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4-mapped: the IPv4 address
    (None, "unknown"),
    ("testclient", "testclient"),  # not an address: as it is
])
def test_an_ipv6_client_is_its_64(host: str | None, network: str) -> None:
    assert client_network(host) == network
    assert client_key(host) == f"ip:{network}"


def test_the_prefix_length_is_a_setting() -> None:
    assert client_network("2001:db8:1:2::1", 48) == "2001:db8:1::/48"
    assert client_network("2001:db8:1:2::1", 128) == "2001:db8:1:2::1"


def test_requests_in_flight_of_one_64_are_one_caller() -> None:
    """An anonymous request's caller (requests in flight, refusals' pace) is its network."""
    flight = InFlight(Settings(_env_file=None))  # type: ignore[call-arg]

    def request(host: str) -> object:
        return SimpleNamespace(headers={}, client=SimpleNamespace(host=host))

    assert flight.key(request("2001:db8::1")) == flight.key(request("2001:db8::2")) \
        == "ip:2001:db8::/64"  # type: ignore[arg-type]
    assert flight.key(request("2001:db8:0:1::1")) != flight.key(request("2001:db8::1"))  # type: ignore[arg-type]
