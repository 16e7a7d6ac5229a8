"""Webhook targets must be public hosts: no private, loopback, link-local (cloud metadata),
multicast or reserved address — checked on the URL's literal address and on every address
its name resolves to, when the request is accepted and again at each delivery (DNS can
change in between). Networks in ``GATEWAY_WEBHOOK_ALLOWED_NETWORKS`` are let through; with
``GATEWAY_WEBHOOK_PUBLIC_TARGETS=false`` they are the only valid targets."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TargetRefused(Exception):
    """The URL may not be called; the message says why (safe to show to its owner)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    address: str  # the resolved address the request must go to (no second lookup)


def parse_networks(values: list[str]) -> list[Network]:
    return [ipaddress.ip_network(v, strict=False) for v in values]


def _public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return _public(mapped)
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def allowed_address(address: IPAddress, allowed: list[Network], *, public: bool = True) -> bool:
    return (public and _public(address)) or any(address in net for net in allowed if net.version == address.version)


async def resolve(url: str, allowed: list[Network], *, public: bool = True) -> Target:
    """The address to send to, or ``TargetRefused``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("webhook URLs must be http or https")
    host = parts.hostname
    if not host:
        raise TargetRefused("webhook URL without a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise TargetRefused("webhook URL with an invalid port") from exc
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise TargetRefused("webhook host does not resolve") from exc
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
        if not addresses:
            raise TargetRefused("webhook host does not resolve")
    # Every address must be allowed: otherwise a name with one public and one private
    # address would let the connection pick the private one.
    for address in addresses:
        if not allowed_address(address, allowed, public=public):
            raise TargetRefused(
                "webhook target is a private, loopback or link-local address"
                if public or not _public(address)
                else "webhook target is not in the allowed networks"
            )
    return Target(parts.scheme, host, port, str(addresses[0]))
