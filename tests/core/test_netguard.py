"""The callback destination guard: which addresses a subscription URL may reach."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import httpx
import pytest

from core.errors import DestinationRefused
from core.netguard import (
    SETTING,
    DestinationUnresolvable,
    check_destination,
    forbidden_reason,
    pinned_request,
    resolve_destination,
)
from tests.core.callback_support import keep_alive_server

FORBIDDEN = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("[::1]", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.20", "private"),
    ("169.254.169.254", "link-local"),  # cloud metadata endpoint
    ("[fe80::1]", "link-local"),
    ("224.0.0.251", "multicast"),
    ("[ff02::1]", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("[::]", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
    ("[fc00::1]", "private"),  # unique local
    ("[::ffff:10.0.0.1]", "IPv4-mapped private"),
    ("[::ffff:127.0.0.1]", "IPv4-mapped loopback"),
]


@pytest.mark.parametrize(("host", "reason"), FORBIDDEN)
async def test_non_public_addresses_are_refused_with_a_clear_message(
    host: str, reason: str
) -> None:
    with pytest.raises(DestinationRefused) as caught:
        await check_destination(f"http://{host}:8080/hook", [])
    message = caught.value.detail
    assert host.strip("[]") in message
    assert f"a {reason} address" in message
    assert SETTING in message


@pytest.mark.parametrize("host", ["93.184.216.34", "8.8.8.8", "[2606:4700:4700::1111]"])
async def test_public_addresses_are_accepted(host: str) -> None:
    await check_destination(f"https://{host}/hook", [])


async def test_an_allowed_network_lets_its_addresses_through_and_only_those() -> None:
    await check_destination("http://127.0.0.1:9/hook", ["127.0.0.0/8"])
    # The IPv4-mapped form of an allowed address is allowed as well.
    await check_destination("http://[::ffff:127.0.0.1]:9/hook", ["127.0.0.0/8"])
    with pytest.raises(DestinationRefused):
        await check_destination("http://10.0.0.5/hook", ["127.0.0.0/8"])
    with pytest.raises(DestinationRefused):
        await check_destination("http://[::1]/hook", ["127.0.0.0/8"])


@pytest.mark.parametrize(
    "url",
    ["ftp://93.184.216.34/x", "file:///etc/passwd", "gopher://8.8.8.8/", "not a url", "http://"],
)
async def test_only_http_urls_with_a_host_are_accepted(url: str) -> None:
    with pytest.raises(DestinationRefused):
        await check_destination(url, ["0.0.0.0/0"])


async def test_a_bad_port_or_host_name_is_refused() -> None:
    with pytest.raises(DestinationRefused, match="malformed"):
        await check_destination("http://8.8.8.8:99999/", [])
    with pytest.raises(DestinationRefused, match="not a valid name"):
        await check_destination(f"http://{'a' * 64}.example/", [])


def _fake_resolver(
    monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]
) -> list[tuple[str, int]]:
    """Replace this loop's getaddrinfo with a table, so no test depends on real DNS."""
    asked: list[tuple[str, int]] = []

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        asked.append((host, port))
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        infos: list[tuple[Any, ...]] = []
        for address in answers[host]:
            if ipaddress.ip_address(address.split("%")[0]).version == 6:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return infos

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    return asked


async def test_a_name_is_refused_when_any_of_its_addresses_is_private(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = _fake_resolver(
        monkeypatch,
        {"mixed.example": ["93.184.216.34", "10.0.0.7"], "public.example": ["93.184.216.34"]},
    )
    with pytest.raises(DestinationRefused, match=r"10\.0\.0\.7, a private address"):
        await check_destination("https://mixed.example/hook", [])
    destination = await resolve_destination("https://public.example/hook", [])
    assert destination.addresses == (ipaddress.ip_address("93.184.216.34"),)
    assert asked == [("mixed.example", 443), ("public.example", 443)]


async def test_scoped_ipv6_answers_are_judged_by_their_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_resolver(monkeypatch, {"scoped.example": ["fe80::1%eth0"]})
    with pytest.raises(DestinationRefused, match="link-local"):
        await check_destination("http://scoped.example/", [])


async def test_an_unresolvable_name_is_refused_with_its_own_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_resolver(monkeypatch, {})
    with pytest.raises(DestinationUnresolvable, match="cannot resolve"):
        await check_destination("https://nowhere.example/hook", [])


async def test_localhost_resolves_to_loopback_and_is_refused() -> None:
    # Resolved from the hosts file; no network involved.
    with pytest.raises(DestinationRefused, match="loopback"):
        await check_destination("http://localhost:8080/", [])


def test_forbidden_reason_is_none_for_public_addresses() -> None:
    assert forbidden_reason(ipaddress.ip_address("1.1.1.1")) is None
    assert forbidden_reason(ipaddress.ip_address("::ffff:1.1.1.1")) is None
    assert forbidden_reason(ipaddress.ip_address("::ffff:192.168.0.1")) == "IPv4-mapped private"


async def test_pinned_request_targets_the_vetted_address_and_keeps_the_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_resolver(
        monkeypatch,
        {
            "hooks.example": ["93.184.216.34"],
            "v6.example": ["2606:4700::1"],
            "xn--bcher-kva.example": ["93.184.216.34"],
        },
    )
    destination = await resolve_destination("https://u:p@hooks.example:8443/in?x=1", [])
    url, headers, extensions = pinned_request(destination, destination.addresses[0])
    assert url == "https://u:p@93.184.216.34:8443/in?x=1"
    assert headers == {"Host": "hooks.example:8443", "Connection": "close"}
    assert extensions == {"sni_hostname": "hooks.example"}

    destination = await resolve_destination("http://v6.example/", [])
    url, headers, extensions = pinned_request(destination, destination.addresses[0])
    assert url == "http://[2606:4700::1]:80/"
    assert headers == {"Host": "v6.example", "Connection": "close"}
    assert extensions == {}

    # An internationalised name is resolved and sent in its ASCII (punycode) form.
    destination = await resolve_destination("https://bücher.example/", [])
    assert destination.host == "xn--bcher-kva.example"
    assert pinned_request(destination, destination.addresses[0])[1]["Host"] == (
        "xn--bcher-kva.example"
    )


async def test_pinned_request_reaches_each_vetted_address_and_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_resolver(monkeypatch, {"two.example": ["93.184.216.34", "2606:4700::1"]})
    destination = await resolve_destination("https://two.example/in", [])
    first, second = destination.addresses
    assert pinned_request(destination, first)[0] == "https://93.184.216.34:443/in"
    assert pinned_request(destination, second)[0] == "https://[2606:4700::1]:443/in"
    with pytest.raises(ValueError, match="not a vetted address"):
        pinned_request(destination, ipaddress.ip_address("10.0.0.1"))


async def test_pinned_requests_for_two_names_at_one_address_never_share_a_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpcore pools by IP and port; a connection one name opened (and, over TLS,
    verified a certificate for) must never carry another name's request."""
    _fake_resolver(monkeypatch, {"a.example": ["127.0.0.1"], "b.example": ["127.0.0.1"]})
    async with keep_alive_server() as (port, connections), httpx.AsyncClient() as client:
        for name in ["a.example", "b.example", "a.example"]:  # one client, as services.http
            destination = await resolve_destination(f"http://{name}:{port}/", ["127.0.0.0/8"])
            url, headers, extensions = pinned_request(destination, destination.addresses[0])
            response = await client.post(url, headers=headers, extensions=extensions)
            assert response.status_code == 200
    assert connections == [[f"{name}.example:{port}"] for name in "aba"]
