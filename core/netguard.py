"""Where outbound requests (callbacks, connection URLs) may go: a guard against
server-side request forgery.

A subscription URL is chosen by a tenant, but the request is sent from inside our network.
Without this guard a tenant could make Switchyard POST to ``http://169.254.169.254/`` (cloud
metadata), ``http://localhost:5432/`` or any internal service. So a destination is refused
when ANY address its host resolves to is not publicly routable (private, loopback,
link-local, multicast, reserved, unspecified, or an IPv4-mapped IPv6 form of those), unless
the address lies in a network an operator listed in ``SWITCHYARD_CALLBACK_ALLOW_NETWORKS``.

The check runs at subscription creation and again before every delivery attempt, because
DNS answers change. :func:`resolve_destination` also returns the vetted addresses so the
sender can connect to exactly those (see :func:`pinned_request`), which closes the window
in which a second, different DNS answer (rebinding) would otherwise be used. The sender
tries them in order, moving on only when a connection could not be made.
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
        raise DestinationRefused(f"URL is malformed: {exc}") from None
    if parts.scheme not in _SCHEMES:
        raise DestinationRefused(f"URL must use http or https, not {parts.scheme or 'nothing'!r}")
    if not parts.hostname:
        raise DestinationRefused("URL has no host")
    try:  # an internationalised name travels (in Host, in DNS) in its ASCII form
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise DestinationRefused(f"host {parts.hostname!r} is not a valid name") from None
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
        raise DestinationUnresolvable(f"cannot resolve host {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        # Scoped IPv6 answers carry "%zone"; the zone does not change the address class.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise DestinationUnresolvable(f"host {host!r} resolved to no address")
    return addresses


async def resolve_destination(
    url: str, allow_networks: Sequence[str], *, setting: str = SETTING
) -> Destination:
    """Resolve ``url``'s host and vet every address; raise ``DestinationRefused`` if any fails.

    ``setting`` names the variable that holds ``allow_networks``, for the error message.
    """
    _parts, host, port = _parse(url)
    networks = _networks(allow_networks)
    addresses = await _resolve(host, port)
    for address in addresses:
        reason = forbidden_reason(address)
        if reason is not None and not _allowed(address, networks):
            raise DestinationRefused(
                f"host {host!r} resolves to {address}, a {reason} address; such addresses "
                f"may be reached only inside a network listed in {setting}"
            )
    return Destination(url=url, host=host, port=port, addresses=tuple(addresses))


async def check_destination(
    url: str, allow_networks: Sequence[str], *, setting: str = SETTING
) -> None:
    """Raise ``DestinationRefused`` unless every address of ``url``'s host may be reached."""
    await resolve_destination(url, allow_networks, setting=setting)


def pinned_request(
    destination: Destination, address: IPAddress
) -> tuple[str, dict[str, str], dict[str, str]]:
    """URL, extra headers and httpx extensions that send to ``address``, one of the vetted
    ``destination.addresses``.

    The host name travels in ``Host`` and, for https, as the TLS server name (httpx's
    ``sni_hostname`` extension), so virtual hosting and certificate checks still see it.
    """
    if address not in destination.addresses:
        raise ValueError(f"{address} is not a vetted address of {destination.host!r}")
    parts = urlsplit(destination.url)
    literal = f"[{address}]" if address.version == 6 else str(address)
    userinfo, at, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}{at}{literal}:{destination.port}"
    url = parts._replace(netloc=netloc).geturl()
    default_port = _SCHEMES[parts.scheme] == destination.port
    host = destination.host if ":" not in destination.host else f"[{destination.host}]"
    headers = {
        "Host": host if default_port else f"{host}:{destination.port}",
        # httpcore pools connections by origin, here the IP and port, not the name: a
        # request for host B at the same IP could reuse a TLS connection whose
        # certificate was checked only for host A. With ``Connection: close`` httpcore
        # closes the connection when the response ends instead of pooling it, so each
        # pinned request makes its own connection and TLS handshake for its own name.
        # Simpler than a pool per name (a client cache with its own lifecycle), at the
        # cost of one handshake per callback. It holds because the callback client speaks
        # HTTP/1.1 only and sends nothing unpinned, so its pool never has an idle one.
        "Connection": "close",
    }
    extensions = {"sni_hostname": destination.host} if parts.scheme == "https" else {}
    return url, headers, extensions
