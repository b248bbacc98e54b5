"""The client's address: the peer's, or behind a trusted proxy the one it put in X-Forwarded-For.

`[server] trusted_proxies` lists the balancers (addresses or CIDR networks) in front of the
instances. A request whose peer is one of them is judged by the right-most X-Forwarded-For entry
that is not itself a trusted proxy: every proxy appends the address it was connected from, so the
entries right of that one were written by proxies we trust, and everything left of it may have been
written by the client. A peer not trusted is the client, whatever X-Forwarded-For it sends.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN = "?"  # a peer without an IP address (a Unix socket)


def parse_address(text: str) -> Address | None:
    """An IP address as a peer or a proxy writes it (`[v6]`, `[v6]:port`, `v4:port` allowed), IPv4
    mapped into IPv6 as plain IPv4; None when it is not one."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(entry: str) -> Network:
    """A `[server] trusted_proxies` entry: an address (a network of one) or a CIDR network; ValueError
    saying why for anything else (a network with host bits set, say 10.0.0.1/24, is refused)."""
    try:
        return ipaddress.ip_network(entry.strip())
    except ValueError as e:
        raise ValueError(f"expected an IP address or a CIDR network, got {entry!r}: {e}") from None


class ProxyTrust:
    """Which peers are trusted proxies, and the client address a request stands for."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.networks = [parse_network(e) for e in entries]

    def trusts(self, address: Address) -> bool:
        return any(address.version == n.version and address in n for n in self.networks)

    def client(self, peer: str | None, forwarded_for: Sequence[str]) -> str:
        """The client address of a request from `peer` carrying these X-Forwarded-For headers (in the
        order received)."""
        hop = parse_address(peer or "")
        if hop is None:
            return UNKNOWN
        if not self.networks or not self.trusts(hop):
            return str(hop)
        entries = [e for header in forwarded_for for e in header.split(",") if e.strip()]
        for entry in reversed(entries):
            address = parse_address(entry)
            if address is None:
                break  # unreadable: the last proxy that can be named stands for the client
            hop = address
            if not self.trusts(address):
                break
        return str(hop)

    def client_of(self, request: web.Request) -> str:
        """The address of the browser (or API client) behind this request."""
        return self.client(request.remote, request.headers.getall("X-Forwarded-For", []))
