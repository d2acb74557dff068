"""Where outbound requests (``core.http_request``, callback deliveries) may go.

By default a destination whose address is loopback, link-local (169.254.169.254), private,
multicast, reserved or unspecified (IPv4 and IPv6) is refused; ``ATTUNE_OUTBOUND_ALLOW``
lists the ranges (CIDR) a deployment needs anyway. The check is made on the resolved
addresses at connect time, by the resolver of the connector, so redirects and DNS answers that
change between requests are covered; literal IP addresses (which aiohttp does not resolve) are
checked before each request and each redirect hop (a client middleware).

Errors say only "destination not allowed" or "could not connect": a closed port, a refused
address and an unknown host look alike from outside, so the messages cannot scan a network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

#: The error of a refused destination.
NOT_ALLOWED = "destination not allowed"
#: The error of every other connection failure (refused, unreachable, unknown host, TLS).
COULD_NOT_CONNECT = "could not connect"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class DestinationNotAllowed(OSError):
    """A destination the outbound policy refuses."""

    def __init__(self) -> None:
        super().__init__(NOT_ALLOWED)


@dataclass(frozen=True)
class OutboundPolicy:
    """Which addresses outbound requests may reach. Pure."""

    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_ranges(cls, ranges: Iterable[str]) -> OutboundPolicy:
        return cls(tuple(ipaddress.ip_network(r.strip(), strict=False) for r in ranges))

    def allows(self, address: str | IPAddress) -> bool:
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip.version == net.version and ip in net for net in self.allow):
            return True
        return not (
            ip.is_loopback
            or ip.is_link_local
            or ip.is_private
            or ip.is_multicast
            or ip.is_reserved
            or ip.is_unspecified
            or not ip.is_global
        )

    def check_url(self, url: URL) -> None:
        """Raise :class:`DestinationNotAllowed` for a literal IP address the policy refuses."""
        host = (url.host or "").strip("[]")
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        if not self.allows(ip):
            raise DestinationNotAllowed()


class PolicyResolver(AbstractResolver):
    """aiohttp's resolver, less the addresses the policy refuses; fails when none is left."""

    def __init__(self, policy: OutboundPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        allowed = [a for a in answers if self.policy.allows(a["host"].split("%", 1)[0])]
        if not allowed:
            raise DestinationNotAllowed()
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def _checked_hops(policy: OutboundPolicy) -> aiohttp.ClientMiddlewareType:
    """A client middleware: runs before the first request and before every redirect hop."""

    async def middleware(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        policy.check_url(request.url)
        return await handler(request)

    return middleware


def session(policy: OutboundPolicy, **options: Any) -> aiohttp.ClientSession:
    """A client session that reaches only what ``policy`` allows (every hop of a redirect)."""
    connector = aiohttp.TCPConnector(resolver=PolicyResolver(policy))
    return aiohttp.ClientSession(
        connector=connector, middlewares=(_checked_hops(policy),), **options
    )


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a refusal of the policy."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, DestinationNotAllowed):
            return True
        os_error = getattr(seen, "os_error", None)
        if isinstance(os_error, DestinationNotAllowed):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def failure_text(exc: BaseException) -> str:
    """What a user is told about an outbound connection that failed."""
    return NOT_ALLOWED if refused(exc) else COULD_NOT_CONNECT
