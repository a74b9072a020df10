"""SSRF defence for tenant-supplied upstream base URLs.

A base URL whose host is, or resolves to, a private, loopback, link-local, reserved or cloud metadata
address is refused unless the operator allows the network in GATEWAY_PRIVATE_UPSTREAMS. The check runs
when a provider is saved and again when the proxy connects (GuardedResolver below, used by proxy.upstream and the probe), so a
DNS answer that changes after the save (DNS rebinding) is still caught.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Addresses that are never allowed, even when listed: cloud metadata services.
_METADATA = [ipaddress.ip_network("169.254.169.254/32"), ipaddress.ip_network("fd00:ec2::254/128")]


class UnsafeUpstreamError(ValueError):
    pass


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64, IPv4-compatible), if any:
    those reach the IPv4 host, so they are judged as it would be."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_address_allowed(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            ip = embedded
    if any(ip in net for net in _METADATA):
        return False
    if any(ip.version == net.version and ip in net for net in settings.GATEWAY_PRIVATE_UPSTREAMS):
        return True
    return ip.is_global and not ip.is_multicast


# The usual blocks an operator would allow, most specific first, to name in the error.
_SUGGESTED = [
    (ipaddress.ip_network("127.0.0.0/8"), "loopback", "local model servers"),
    (ipaddress.ip_network("::1/128"), "loopback", "local model servers"),
    (ipaddress.ip_network("10.0.0.0/8"), "private", "model servers on your network"),
    (ipaddress.ip_network("172.16.0.0/12"), "private", "model servers on your network"),
    (ipaddress.ip_network("192.168.0.0/16"), "private", "model servers on your network"),
    (ipaddress.ip_network("100.64.0.0/10"), "shared (CGNAT)", "model servers on your network"),
    (ipaddress.ip_network("fc00::/7"), "private", "model servers on your network"),
    (ipaddress.ip_network("169.254.0.0/16"), "link-local", "this address"),
    (ipaddress.ip_network("fe80::/10"), "link-local", "this address"),
]


def _refusal(host: str, ip: IPAddress) -> str:
    judged: IPAddress | None = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    judged = judged or ip
    where = f"upstream host {host!r} resolves to {ip}"
    if any(judged in net for net in _METADATA):
        return f"{where}, a cloud metadata address, which is never allowed"
    for net, kind, what in _SUGGESTED:
        if judged.version == net.version and judged in net:
            return (
                f"{where}, a {kind} address, which tenant providers may not reach by default; "
                f"the operator can set GATEWAY_PRIVATE_UPSTREAMS={net} to allow {what}"
            )
    single = ipaddress.ip_network(judged)
    return (
        f"{where}, a reserved address, which tenant providers may not reach by default; "
        f"the operator can set GATEWAY_PRIVATE_UPSTREAMS={single} to allow it"
    )


def check_address(host: str, ip_text: str) -> None:
    ip = ipaddress.ip_address(ip_text.split("%", 1)[0])
    if not is_address_allowed(ip):
        raise UnsafeUpstreamError(_refusal(host, ip))


def literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def validate_base_url(url: str, *, resolve: bool = True) -> None:
    """Raise UnsafeUpstreamError if the URL is malformed or points at a forbidden address."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise UnsafeUpstreamError(f"base_url must start with http:// or https://, got {url!r}")
    host = parts.hostname
    if not host:
        raise UnsafeUpstreamError(f"base_url {url!r} has no host")
    if parts.username or parts.password:
        raise UnsafeUpstreamError("base_url must not carry credentials; use api_key")
    ip = literal_ip(host)
    if ip is not None:
        check_address(host, str(ip))
        return
    if host.lower() in {"localhost", "localhost.localdomain"} or host.lower().endswith(".localhost"):
        check_address(host, "127.0.0.1")
        return
    if not resolve:
        return
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror:
        # An unresolvable name is not an SSRF risk by itself; it is checked again on connect.
        return
    for info in infos:
        # getaddrinfo gives (host, port, ...) sockaddrs for AF_INET/AF_INET6, the only families asked for.
        check_address(host, cast(str, info[4][0]))


class GuardedResolver(AbstractResolver):
    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        infos = await self._inner.resolve(host, port, family)
        allowed = []
        for info in infos:
            try:
                check_address(host, info["host"])
            except UnsafeUpstreamError:
                continue
            allowed.append(info)
        if not allowed:
            # Name the way out, as the check on save does: local model servers are a common cause.
            raise OSError(
                f"upstream host {host!r} resolves only to private or reserved addresses; the operator can "
                "allow a network with GATEWAY_PRIVATE_UPSTREAMS (e.g. 127.0.0.0/8 for local model servers)"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()
