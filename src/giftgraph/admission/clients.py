"""Anonymous callers by network: the key every per-IP bound spends.

An IPv4 address is one caller. An IPv6 host is usually handed a whole /64 (SLAAC, privacy
addresses, a provider's delegated prefix), so one host may send from 2^64 addresses, and
a budget per address would be no budget at all: one host with a /64 logged in as 80
"callers" and took every hashing turn. IPv6 callers are keyed by their first
`ipv6_prefix_length` bits (64 by default; 128 keys each address), an IPv4-mapped IPv6
address by its IPv4 address. Every per-IP bound takes its key from here: the anonymous
mutations' budgets, hashing turns, new sockets, requests in flight and refusals, analysis,
APQ registrations and `giftgraph serve`'s connections per IP.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache


@lru_cache(maxsize=8192)
def client_network(host: str | None, ipv6_prefix_length: int = 64) -> str:
    """The network that stands for the client `host`: an IPv4 address as it is, an IPv6
    address's /`ipv6_prefix_length` (`2001:db8::/64`); "unknown" without a host, and a
    host that is no address (a test client's name) as it is."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if ipv6_prefix_length < 128:
            network = ipaddress.IPv6Network((address, ipv6_prefix_length), strict=False)
            return str(network)
    return str(address)


def client_key(host: str | None, ipv6_prefix_length: int = 64) -> str:
    """An anonymous caller's key, as the admission layer names callers: `ip:<network>`."""
    return f"ip:{client_network(host, ipv6_prefix_length)}"
