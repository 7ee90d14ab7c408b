"""Where outbound callbacks may go: a guard against server-side request forgery.

A subscription URL is chosen by a tenant, but the request is sent from inside our network.
Without this guard a tenant could make Switchyard POST to ``http://169.254.169.254/`` (cloud
metadata), ``http://localhost:5432/`` or any internal service. So a destination is refused
when ANY address its host resolves to is not publicly routable (private, loopback,
link-local, multicast, reserved, unspecified, or an IPv4-mapped IPv6 form of those), unless
the address lies in a network an operator listed in ``SWITCHYARD_CALLBACK_ALLOW_NETWORKS``.

The check runs at subscription creation and again before every delivery attempt, because
DNS answers change. :func:`resolve_destination` also returns the vetted addresses so the
sender can connect to exactly those (see :func:`pinned_request`), which closes the window
in which a second, different DNS answer (rebinding) would otherwise be used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from core.errors import DestinationRefused

SETTING = "SWITCHYARD_CALLBACK_ALLOW_NETWORKS"
RESOLVE_TIMEOUT_SECONDS = 10.0
_SCHEMES = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class DestinationUnresolvable(DestinationRefused):
    """The host has no address right now. Refused at creation; a delivery retries it,
    since a DNS failure is usually temporary."""


@dataclass(frozen=True)
class Destination:
    """A URL whose every resolved address passed the guard."""

    url: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def _parse(url: str) -> tuple[SplitResult, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DestinationRefused(f"callback URL is malformed: {exc}") from None
    if parts.scheme not in _SCHEMES:
        raise DestinationRefused(
            f"callback URL must use http or https, not {parts.scheme or 'nothing'!r}"
        )
    if not parts.hostname:
        raise DestinationRefused("callback URL has no host")
    try:  # an internationalised name travels (in Host, in DNS) in its ASCII form
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise DestinationRefused(f"callback host {parts.hostname!r} is not a valid name") from None
    return parts, host, port or _SCHEMES[parts.scheme]


def _networks(allow_networks: Sequence[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in allow_networks]


def forbidden_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination, or None when it is one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # ::ffff:10.0.0.1 reaches 10.0.0.1; judge the address it maps to.
        reason = forbidden_reason(address.ipv4_mapped)
        return f"IPv4-mapped {reason}" if reason else None
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        # Catch-all for ranges none of the above name (e.g. carrier-grade NAT 100.64/10).
        ("not globally routable", not address.is_global),
    )
    for name, hit in checks:
        if hit:
            return name
    return None


def _allowed(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(
        candidate.version == network.version and candidate in network
        for candidate in candidates
        for network in networks
    )


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM),
            timeout=RESOLVE_TIMEOUT_SECONDS,
        )
    except (OSError, TimeoutError) as exc:
        raise DestinationUnresolvable(f"cannot resolve callback host {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        # Scoped IPv6 answers carry "%zone"; the zone does not change the address class.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise DestinationUnresolvable(f"callback host {host!r} resolved to no address")
    return addresses


async def resolve_destination(url: str, allow_networks: Sequence[str]) -> Destination:
    """Resolve ``url``'s host and vet every address; raise ``DestinationRefused`` if any fails."""
    _parts, host, port = _parse(url)
    networks = _networks(allow_networks)
    addresses = await _resolve(host, port)
    for address in addresses:
        reason = forbidden_reason(address)
        if reason is not None and not _allowed(address, networks):
            raise DestinationRefused(
                f"callback host {host!r} resolves to {address}, a {reason} address; "
                f"callbacks may reach such addresses only inside a network listed in {SETTING}"
            )
    return Destination(url=url, host=host, port=port, addresses=tuple(addresses))


async def check_destination(url: str, allow_networks: Sequence[str]) -> None:
    """Raise ``DestinationRefused`` unless every address of ``url``'s host may be reached."""
    await resolve_destination(url, allow_networks)


def pinned_request(destination: Destination) -> tuple[str, dict[str, str], dict[str, str]]:
    """URL, extra headers and httpx extensions that send to the first vetted address.

    The host name travels in ``Host`` and, for https, as the TLS server name (httpx's
    ``sni_hostname`` extension), so virtual hosting and certificate checks still see it.
    """
    parts = urlsplit(destination.url)
    address = destination.addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    userinfo, at, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}{at}{literal}:{destination.port}"
    url = parts._replace(netloc=netloc).geturl()
    default_port = _SCHEMES[parts.scheme] == destination.port
    host = destination.host if ":" not in destination.host else f"[{destination.host}]"
    headers = {"Host": host if default_port else f"{host}:{destination.port}"}
    extensions = {"sni_hostname": destination.host} if parts.scheme == "https" else {}
    return url, headers, extensions
