"""The outbound URL policy: address classes, encoded forms, policies, resolution, pinning."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
import pytest

from urbanos.errors import BadRequestData
from urbanos.outbound import (
    GuardedTransport,
    OutboundPolicy,
    OutboundRefused,
    PinnedBackend,
    check_url,
    parse_host_address,
    resolve_checked,
)

DEFAULT = OutboundPolicy()
STRICT = OutboundPolicy.from_strings("strict", "")


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("169.254.169.254", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),  # one decimal number
        ("0xa9fea9fe", "169.254.169.254"),  # one hex number
        ("0251.0376.0251.0376", "169.254.169.254"),  # octal parts
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),  # hex parts
        ("169.254.43518", "169.254.169.254"),  # three parts
        ("169.16689662", "169.254.169.254"),  # two parts
        ("127.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("[::ffff:169.254.169.254]", "::ffff:a9fe:a9fe"),
        ("[fe80::1%25eth0]", "fe80::1%eth0"),
        ("10.0.0.1.", "10.0.0.1"),
    ],
)
def test_literal_hosts_in_every_encoding(host: str, address: str) -> None:
    assert parse_host_address(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["example.org", "1.2.3.4.5", "256.1.1.1", "08.1.1.1", "0x1g"])
def test_names_are_not_addresses(host: str) -> None:
    assert parse_host_address(host) is None


ALWAYS = [
    "169.254.169.254",
    "169.254.0.1",
    "fe80::1",
    "fd00:ec2::254",
    "100.100.100.200",
    "::ffff:169.254.169.254",  # IPv4-mapped
    "::a9fe:a9fe",  # IPv4-compatible
    "64:ff9b::169.254.169.254",  # NAT64
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
    "2002:a9fe:a9fe::1",  # 6to4
    "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo, client 169.254.169.254
]
STRICT_ONLY = [
    "127.0.0.1",
    "::1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "fd12:3456::1",
    "100.64.0.1",
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "ff02::1",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "198.18.0.1",
    "2001:db8::1",
    "::ffff:10.0.0.1",
    "64:ff9b::7f00:1",
]
PUBLIC = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", ALWAYS)
def test_link_local_and_metadata_are_always_refused(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert DEFAULT.refusal(ip) and STRICT.refusal(ip)


@pytest.mark.parametrize("address", STRICT_ONLY)
def test_internal_ranges_are_refused_by_strict_only(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert DEFAULT.refusal(ip) is None
    assert STRICT.refusal(ip)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert DEFAULT.refusal(ip) is None and STRICT.refusal(ip) is None


def test_allow_list_makes_exceptions() -> None:
    policy = OutboundPolicy.from_strings("strict", "10.0.0.0/8, 169.254.169.254/32 fd00::/8")
    assert policy.refusal(ipaddress.ip_address("10.9.8.7")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:10.9.8.7")) is None
    assert policy.refusal(ipaddress.ip_address("169.254.169.254")) is None
    assert policy.refusal(ipaddress.ip_address("fd00:ec2::254")) is None
    assert policy.refusal(ipaddress.ip_address("169.254.1.1"))
    assert policy.refusal(ipaddress.ip_address("192.168.0.1"))


def test_from_strings() -> None:
    assert OutboundPolicy.from_strings("", "") == OutboundPolicy()
    assert OutboundPolicy.from_strings(" STRICT ", "").mode == "strict"
    assert OutboundPolicy.from_strings("default", "10.1.2.3/8").allow == (
        ipaddress.ip_network("10.0.0.0/8"),
    )
    with pytest.raises(ValueError, match="policy"):
        OutboundPolicy.from_strings("lenient", "")
    with pytest.raises(ValueError, match="CIDR"):
        OutboundPolicy.from_strings("default", "10.0.0.0/8,not-a-net")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/",
        "ftp://example.org/ctx.jsonld",
        "file:///etc/passwd",
        "gopher://example.org/",
        "http:///nohost",
        "not a url at all",
    ],
)
def test_check_url_refuses(url: str) -> None:
    with pytest.raises(OutboundRefused) as info:
        check_url(url, DEFAULT)
    assert isinstance(info.value, BadRequestData)


def test_check_url_accepts_and_extra_schemes() -> None:
    check_url("https://example.org/ctx.jsonld", STRICT)
    check_url("http://127.0.0.1:8080/ctx", DEFAULT)
    check_url("http://localhost/ctx", STRICT)  # names are checked once resolved
    with pytest.raises(OutboundRefused):
        check_url("http://127.0.0.1:8080/ctx", STRICT)
    with pytest.raises(OutboundRefused):
        check_url("mqtt://broker.example:1883/t", DEFAULT)
    check_url("mqtt://broker.example:1883/t", DEFAULT, schemes={"mqtt", "mqtts"})


class FakeResolver:
    """Answers from a table and records what it was asked."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.table.get(host, [])


async def test_every_resolved_address_is_checked() -> None:
    resolver = FakeResolver(
        {
            "mixed.example": ["93.184.216.34", "10.0.0.1"],
            "meta.example": ["8.8.8.8", "169.254.169.254"],
        }
    )
    assert await resolve_checked("http://mixed.example/", DEFAULT, resolver=resolver)
    with pytest.raises(OutboundRefused, match="10.0.0.1"):
        await resolve_checked("http://mixed.example/", STRICT, resolver=resolver)
    with pytest.raises(OutboundRefused, match="169.254.169.254"):
        await resolve_checked("https://meta.example/", DEFAULT, resolver=resolver)
    with pytest.raises(OSError):
        await resolve_checked("http://nowhere.example/", DEFAULT, resolver=resolver)
    assert resolver.calls[0] == ("mixed.example", 80)
    assert ("meta.example", 443) in resolver.calls


async def test_literal_addresses_are_not_resolved() -> None:
    resolver = FakeResolver({})
    addresses = await resolve_checked("http://127.0.0.1:9/", DEFAULT, resolver=resolver)
    assert addresses == [ipaddress.ip_address("127.0.0.1")]
    assert resolver.calls == []


async def test_default_resolver_resolves_localhost() -> None:
    addresses = await resolve_checked("http://localhost:1/", DEFAULT)
    assert all(a.is_loopback for a in addresses)
    with pytest.raises(OutboundRefused):
        await resolve_checked("http://localhost:1/", STRICT)


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Stands in for the socket layer: records where connections go."""

    def __init__(self, refuse: Iterable[str] = ()) -> None:
        self.connects: list[tuple[str, int]] = []
        self.refuse = set(refuse)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if host in self.refuse:
            raise httpcore.ConnectError(f"{host} refused")
        return httpcore.AsyncMockStream([b"HTTP/1.1 204 No Content\r\n\r\n"])


async def test_pinned_backend_connects_to_a_checked_address() -> None:
    resolver = FakeResolver(
        {"ctx.example": ["2001:db8::1", "93.184.216.34"], "evil.example": ["127.0.0.1"]}
    )
    inner = RecordingBackend(refuse={"2001:db8::1"})
    backend = PinnedBackend(DEFAULT, resolver=resolver, inner=inner)
    await backend.connect_tcp("ctx.example", 443)
    assert inner.connects == [("2001:db8::1", 443), ("93.184.216.34", 443)]  # next address
    strict = PinnedBackend(STRICT, resolver=resolver, inner=inner)
    with pytest.raises(OutboundRefused):
        await strict.connect_tcp("evil.example", 80)
    with pytest.raises(OutboundRefused):
        await strict.connect_tcp("ctx.example", 80)  # one address is documentation space
    with pytest.raises(OutboundRefused):
        await backend.connect_tcp("2852039166", 80)
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("unknown.example", 80)
    assert len(inner.connects) == 2


async def test_guarded_transport_checks_every_request() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"ok": True})

    resolver = FakeResolver({"ctx.example": ["93.184.216.34"], "evil.example": ["127.0.0.1"]})
    transport = GuardedTransport(STRICT, httpx.MockTransport(handler), resolver=resolver)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get("https://ctx.example:8443/a.jsonld")).json() == {"ok": True}
        with pytest.raises(OutboundRefused):
            await client.get("http://evil.example/")
        with pytest.raises(OutboundRefused):
            await client.get("http://2130706433/")  # 127.0.0.1 as a number
        with pytest.raises(OutboundRefused):
            await client.get("ftp://ctx.example/")
        with pytest.raises(httpx.ConnectError):
            await client.get("http://unknown.example/")
    assert seen == [httpx.URL("https://ctx.example:8443/a.jsonld")]


async def test_guarded_transport_refuses_before_connecting() -> None:
    transport = GuardedTransport(STRICT)
    async with httpx.AsyncClient(transport=transport) as client:
        for url in ("http://127.0.0.1:9/", "http://[::ffff:7f00:1]:9/", "http://0x7f000001:9/"):
            with pytest.raises(OutboundRefused):
                await client.get(url)
