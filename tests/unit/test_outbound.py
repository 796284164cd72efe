"""The outbound URL policy: address classes, encoded forms, policies, resolution, pinning."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from urbanos.errors import BadRequestData
from urbanos.outbound import (
    GuardedTransport,
    OutboundPolicy,
    OutboundRefused,
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


def fake_resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    calls: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return table.get(host, [])

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


async def test_every_resolved_address_is_checked() -> None:
    resolver = fake_resolver(
        {"mixed.example": ["93.184.216.34", "10.0.0.1"], "meta.example": ["8.8.8.8", "169.254.169.254"]}
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
    resolver = fake_resolver({})
    addresses = await resolve_checked("http://127.0.0.1:9/", DEFAULT, resolver=resolver)
    assert addresses == [ipaddress.ip_address("127.0.0.1")]
    assert resolver.calls == []


async def test_default_resolver_resolves_localhost() -> None:
    addresses = await resolve_checked("http://localhost:1/", DEFAULT)
    assert all(a.is_loopback for a in addresses)
    with pytest.raises(OutboundRefused):
        await resolve_checked("http://localhost:1/", STRICT)


async def test_guarded_transport_pins_the_checked_address() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    resolver = fake_resolver({"ctx.example": ["93.184.216.34"], "evil.example": ["127.0.0.1"]})
    transport = GuardedTransport(STRICT, httpx.MockTransport(handler), resolver=resolver)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get("https://ctx.example:8443/a.jsonld?x=1")
        assert response.json() == {"ok": True}
        assert response.request.url.host == "ctx.example"
        pinned = seen[-1]
        assert pinned.url == httpx.URL("https://93.184.216.34:8443/a.jsonld?x=1")
        assert pinned.headers["host"] == "ctx.example:8443"
        assert pinned.extensions["sni_hostname"] == "ctx.example"

        with pytest.raises(OutboundRefused):
            await client.get("http://evil.example/")
        with pytest.raises(OutboundRefused):
            await client.get("http://2130706433/")  # 127.0.0.1 as a number
        with pytest.raises(httpx.ConnectError):
            await client.get("http://unknown.example/")
        assert len(seen) == 1


async def test_guarded_transport_without_pinning() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(204)

    resolver = fake_resolver({"ctx.example": ["93.184.216.34"]})
    transport = GuardedTransport(
        DEFAULT, httpx.MockTransport(handler), resolver=resolver, pin=False
    )
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("http://ctx.example/x")
    assert seen == [httpx.URL("http://ctx.example/x")]
