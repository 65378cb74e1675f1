"""Which address a request counts under: X-Forwarded-For is believed only from trusted proxies."""

from __future__ import annotations

import ipaddress

import pytest
from starlette.datastructures import Headers

from service.core.client_ip import client_key, resolve_client_ip
from service.core.config import IPNetwork

PROXIES: list[IPNetwork] = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


def resolve(peer: str | None, *forwarded: str, trusted: list[IPNetwork] = PROXIES) -> str:
    headers = Headers(raw=[(b"x-forwarded-for", value.encode()) for value in forwarded])
    return client_key(resolve_client_ip(peer, headers, trusted))


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("198.51.100.7", (), "198.51.100.7"),
        ("198.51.100.7", ("203.0.113.1",), "198.51.100.7"),  # untrusted peer: header ignored
        ("10.0.0.1", (), "10.0.0.1"),  # a proxy that sent no header is the client
        ("10.0.0.1", ("203.0.113.1",), "203.0.113.1"),
        ("10.0.0.1", ("203.0.113.1, 10.0.0.2",), "203.0.113.1"),  # two proxies in a row
        ("10.0.0.1", ("1.2.3.4, 203.0.113.1",), "203.0.113.1"),  # left of the client: spoofable
        ("10.0.0.1", ("1.2.3.4", "203.0.113.1"), "203.0.113.1"),  # repeated header lines
        ("10.0.0.1", ("10.0.0.3, 10.0.0.2",), "10.0.0.3"),  # only proxies: the leftmost one
        ("10.0.0.1", ("203.0.113.1, not-an-ip",), "10.0.0.1"),  # garbage ends the walk
        ("10.0.0.1", ("",), "10.0.0.1"),
        ("::ffff:198.51.100.7", (), "198.51.100.7"),  # IPv4-mapped IPv6 is the IPv4 client
        ("2001:db8:1:2::10", (), "2001:db8:1:2::/64"),
        ("fd00::1", ("2001:db8:aa:bb::1",), "2001:db8:aa:bb::/64"),
        ("testclient", (), "unknown"),  # not an address (test transports)
        (None, ("203.0.113.1",), "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded: tuple[str, ...], client: str) -> None:
    assert resolve(peer, *forwarded) == client


def test_nothing_is_trusted_by_default() -> None:
    assert resolve("10.0.0.1", "203.0.113.1", trusted=[]) == "10.0.0.1"


def test_an_ipv4_proxy_list_does_not_match_ipv6_peers() -> None:
    trusted: list[IPNetwork] = [ipaddress.ip_network("0.0.0.0/0")]
    assert resolve("2001:db8::1", "203.0.113.1", trusted=trusted) == "2001:db8::/64"
