"""The client's address: the TCP peer, or what X-Forwarded-For says when the peer is a proxy
we trust (TRUSTED_PROXY_CIDRS). Anyone else can write any X-Forwarded-For they like."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.datastructures import Headers

from service.core.config import IPNetwork

type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
UNKNOWN_CLIENT = "unknown"
# An IPv6 client usually owns a whole /64: counting per address would let it rotate freely.
IPV6_CLIENT_PREFIX = 64


def _parse(raw: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def _forwarded_for(headers: Headers) -> list[str]:
    """Every X-Forwarded-For hop, in order, across repeated header lines."""
    return [hop for line in headers.getlist("x-forwarded-for") for hop in line.split(",")]


def resolve_client_ip(
    peer: str | None, headers: Headers, trusted_proxies: Sequence[IPNetwork]
) -> IPAddress | None:
    """Walk X-Forwarded-For from the right while the hop we stand on is a trusted proxy.

    The first hop that is not a trusted proxy is the client; a malformed hop ends the walk at the
    last proxy that wrote it (nothing to its left can be believed).
    """
    current = _parse(peer) if peer else None
    if current is None or not _trusted(current, trusted_proxies):
        return current
    hops: Iterable[str] = reversed(_forwarded_for(headers))
    for raw in hops:
        hop = _parse(raw)
        if hop is None:
            break
        current = hop
        if not _trusted(hop, trusted_proxies):
            break
    return current


def client_key(address: IPAddress | None) -> str:
    """A stable key for per-client counters: the IPv4 address, or the IPv6 /64."""
    if address is None:
        return UNKNOWN_CLIENT
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)
