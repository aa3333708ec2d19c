"""Where webhooks may be delivered: public addresses only, unless private ones are allowed.

A webhook URL is the app's to choose, and the server sends to it: without a check an app
could make the server reach its own network (cloud metadata at 169.254.169.254, a database
on loopback, the office LAN) and learn from the deliveries list which ports answer.

The URL is checked when it is registered, and again at every delivery after its name is
resolved: the delivery connects to the very address that was checked, so a name that
resolves to a public address at registration and to a private one later (DNS rebinding)
gets nowhere. TLS still verifies the certificate against the URL's host name (SNI), and the
`Host` header is the URL's.

`THREADLINE_WEBHOOK_ALLOW_PRIVATE=1` lifts the check, for on-premises receivers (and tests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Host names that name this machine without DNS.
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class TargetRefused(Exception):
    """The URL's host is, or resolves to, an address webhooks may not reach."""


def address_allowed(address: Address) -> bool:
    """A public unicast address: not private, loopback, link-local, multicast, reserved,
    unspecified or shared (carrier-grade NAT); an IPv4-mapped or 6to4 IPv6 address is
    judged by the IPv4 address inside."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is not None:
            return address_allowed(inner)
        if address.teredo is not None:
            return False
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_private
    )


def literal_address(host: str) -> Address | None:
    """The address a host written as an address means, in any form the system resolver
    takes (`127.0.0.1`, `[::1]`, and also `2130706433`, `0x7f.1`, `127.1`); None for a
    name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:  # inet_aton reads the old shorthand and decimal forms, as connect() would
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_host(host: str) -> Address | None:
    """Refuse a host that is a forbidden address or a local name; the address, if any."""
    name = host.strip("[]").rstrip(".").lower()
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        raise TargetRefused("the URL names this machine")
    address = literal_address(name)
    if address is not None and not address_allowed(address):
        raise TargetRefused("the URL's address is not a public one")
    return address


async def resolve(host: str, port: int) -> list[Address]:
    """Every address `host` resolves to (an address literal: itself)."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in found:
            found.append(address)
    return found


def allowed_among(addresses: Iterable[Address]) -> list[Address]:
    return [a for a in addresses if address_allowed(a)]


async def check_url_host(host: str, port: int) -> None:
    """At registration: refuse a forbidden address, a local name, or a name that resolves
    to any forbidden address. A name that does not resolve (yet) is accepted: every
    delivery checks again."""
    if check_host(host) is not None:
        return
    try:
        addresses = await asyncio.wait_for(resolve(host, port), timeout=5.0)
    except (OSError, TimeoutError):
        return
    if any(not address_allowed(a) for a in addresses):
        raise TargetRefused("the URL's host resolves to an address that is not a public one")


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to checked addresses: the host is resolved here, each address is
    checked, and the connection goes to an allowed one (never resolved again)."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            check_host(host)
            addresses = allowed_among(await resolve(host, port))
        except (TargetRefused, OSError) as exc:
            raise httpcore.ConnectError(str(exc)) from None
        if not addresses:
            raise httpcore.ConnectError("the host has no public address")
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are sent over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def transport(*, allow_private: bool) -> httpx.AsyncHTTPTransport:
    """The webhook client's transport: with `allow_private`, a plain one; otherwise one that
    connects to public addresses only. Proxies from the environment are never used (a proxy
    would reach what the check keeps out)."""
    plain = httpx.AsyncHTTPTransport(trust_env=False, retries=0)
    if allow_private:
        return plain
    pool = plain._pool  # httpx builds the pool; only how it connects is replaced
    pool._network_backend = _GuardedBackend(pool._network_backend)
    return plain
