"""The outbound URL policy: address classes, encoded forms, policies, resolution, pinning
(httpx and aiohttp), and the federation's client under it against real local servers."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
import pytest

from urbanos.core.federation import Target
from urbanos.errors import BadRequestData
from urbanos.outbound import (
    GuardedTransport,
    OutboundPolicy,
    OutboundRefused,
    PinnedBackend,
    PinnedResolver,
    check_url,
    guarded_session,
    guarded_url,
    parse_host_address,
    resolve_checked,
)
from urbanos.services.federation import Federation
from urbanos.storage.memory_registrations import MemoryRegistrationStore

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


# -- aiohttp: PinnedResolver, guarded_url, guarded_session and the federation's client -------


class RawServer:
    """A real HTTP/1.1 server on 127.0.0.1 answering each path with canned bytes; records
    each request's head (request line and headers) and how many connections it accepted."""

    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}
        self.heads: list[str] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    def answer(self, path: str, status: str, headers: dict[str, str], body: bytes = b"",
               *, chunked: bool = False) -> None:
        lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
        if chunked:
            lines.append("Transfer-Encoding: chunked")
            payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 100]), body[i:i + 100])
                               for i in range(0, len(body), 100)) + b"0\r\n\r\n"
        else:
            lines.append(f"Content-Length: {len(body)}")
            payload = body
        self.answers[path] = "\r\n".join(lines).encode() + b"\r\n\r\n" + payload

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                self.heads.append(head)
                path = head.split(" ")[1].split("?")[0]
                writer.write(self.answers.get(path, b"HTTP/1.1 204 No Content\r\n\r\n"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def header(self, index: int, name: str) -> str | None:
        for line in self.heads[index].split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


async def test_pinned_resolver_answers_checked_addresses_only() -> None:
    resolver = FakeResolver({
        "ctx.example": ["127.0.0.1", "::1"], "meta.example": ["169.254.169.254"],
        "mixed.example": ["93.184.216.34", "169.254.169.254"], "lan.example": ["10.0.0.7"],
    })
    pinned = PinnedResolver(DEFAULT, resolver=resolver)
    found = await pinned.resolve("ctx.example", 80, socket.AF_UNSPEC)
    assert [(r["host"], r["port"], r["family"]) for r in found] == [
        ("127.0.0.1", 80, socket.AF_INET), ("::1", 80, socket.AF_INET6)]
    assert [r["host"] for r in await pinned.resolve("ctx.example", 80)] == ["127.0.0.1"]
    for name in ("meta.example", "mixed.example"):  # every address is checked
        with pytest.raises(OutboundRefused, match="169.254.169.254"):
            await pinned.resolve(name, 80, socket.AF_UNSPEC)
    assert (await pinned.resolve("lan.example", 80))[0]["host"] == "10.0.0.7"
    with pytest.raises(OutboundRefused, match="10.0.0.7"):
        await PinnedResolver(STRICT, resolver=resolver).resolve("lan.example", 80)
    with pytest.raises(OSError):
        await pinned.resolve("nowhere.example", 80)
    with pytest.raises(OutboundRefused):  # a literal in any encoding is checked, not resolved
        await pinned.resolve("0xa9fea9fe", 80)


def test_guarded_url_is_what_httpx_sent_and_checks_the_host_aiohttp_sees() -> None:
    params = [("type", "https://example.org/Vehicle"), ("q", 'speed>10;brand=="a b"'),
              ("attrs", "a,b"), ("local", "true")]
    for url in ("http://ctx.example:8080/ngsi-ld/v1/entities/urn:a%3Bb%20c%25d",
                "http://ctx.example/x/../ngsi-ld/v1/entities/urn:ü",  # httpx normalises
                "http://CTX.example:8080/base?keep=1"):
        sent = httpx.Request("GET", url, params=tuple(params)).url
        assert guarded_url(url, params, DEFAULT).raw_path_qs == sent.raw_path.decode()
    assert str(guarded_url("http://ctx.example/a", [], DEFAULT)) == "http://ctx.example/a"
    for url in ("http://169.254.169.254/latest", "http://[::ffff:a9fe:a9fe]/", "ftp://x/"):
        with pytest.raises(OutboundRefused):
            guarded_url(url, [], DEFAULT)
    for _ in range(2):  # the check of an origin is memoised per policy; refusals never
        assert guarded_url("http://127.0.0.1:9/a", [], DEFAULT).port == 9
        with pytest.raises(OutboundRefused):
            guarded_url("http://127.0.0.1:9/a", [], STRICT)


async def test_guarded_session_connects_to_the_checked_address_of_a_name() -> None:
    """``ctx.example`` exists only in the test's resolver: the request reaches the local
    server because the connection goes to the address the resolver gave and the policy
    allowed, while the Host header keeps the name; refused names open no connection."""
    resolver = FakeResolver({"ctx.example": ["127.0.0.1"], "meta.example": ["169.254.169.254"],
                             "both.example": ["127.0.0.1", "169.254.169.254"]})
    async with RawServer() as server:
        server.answer("/ok", "200 OK", {"Content-Type": "application/json"}, b'{"ok":true}')
        async with guarded_session(DEFAULT, resolver=resolver) as session:
            url = guarded_url(f"http://ctx.example:{server.port}/ok", [], DEFAULT)
            async with session.get(url, allow_redirects=False) as response:
                assert response.status == 200 and await response.read() == b'{"ok":true}'
            assert server.header(0, "Host") == f"ctx.example:{server.port}"
            for name in ("meta.example", "both.example"):
                url = guarded_url(f"http://{name}:{server.port}/ok", [], DEFAULT)
                with pytest.raises(OutboundRefused, match="169.254.169.254"):
                    await session.get(url)
        async with guarded_session(STRICT, resolver=resolver) as session:
            url = guarded_url(f"http://ctx.example:{server.port}/ok", [], STRICT)
            with pytest.raises(OutboundRefused, match="127.0.0.1"):
                await session.get(url)
        assert len(server.heads) == 1 and server.connections == 1


def _federation(policy: OutboundPolicy, resolver: FakeResolver, **kwargs: Any) -> Federation:
    return Federation(MemoryRegistrationStore(), policy, alias=lambda tenant: "me",
                      resolver=resolver, **kwargs)


def _target(endpoint: str, **management: Any) -> Target:
    doc: dict[str, Any] = {"id": "urn:ngsi-ld:R:1", "endpoint": endpoint, "mode": "inclusive",
                           "information": [{"entities": [{"type": "https://ex.org/V"}]}]}
    if management:
        doc["management"] = management
    return Target(doc, "inclusive", None)


async def test_the_federation_refuses_forbidden_names_and_literals_with_299() -> None:
    resolver = FakeResolver({"meta.example": ["169.254.169.254"], "ctx.example": ["127.0.0.1"]})
    async with RawServer() as server:
        server.answer("/x", "200 OK", {}, b"{}")
        default = _federation(DEFAULT, resolver)
        strict = _federation(STRICT, resolver)
        try:
            for federation, endpoint in (
                (default, f"http://meta.example:{server.port}"),
                (default, f"http://2852039166:{server.port}"),
                (strict, f"http://ctx.example:{server.port}"),  # loopback: strict refuses
                (strict, f"http://127.0.0.1:{server.port}"),
                (strict, f"http://0x7f000001:{server.port}"),
            ):
                (reply,) = await federation.send("t", [_target(endpoint)], "GET", "/x")
                assert reply.warning is not None and reply.warning.startswith("299 "), endpoint
            assert server.heads == []
            (reply,) = await default.send(
                "t", [_target(f"http://ctx.example:{server.port}")], "GET", "/x")
            assert reply.ok and reply.body == {}
        finally:
            await default.aclose()
            await strict.aclose()


async def test_the_federation_follows_no_redirect_and_keeps_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 3xx is the source's answer (a 299 warning), never followed; the proxy variables of
    the environment are ignored; answer headers come back with lower-case names; a
    connection is kept alive for the next request; no cookie goes back to a source."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    async with RawServer() as server:
        elsewhere = f"http://127.0.0.1:{server.port}/elsewhere"
        server.answer("/moved", "302 Found", {"Location": elsewhere})
        server.answer("/ok", "200 OK", {"Link": "<http://ctx/c.jsonld>", "X-Twice": "a",
                                        "x-twice": "b", "Set-Cookie": "s=1"}, b"[]")
        federation = _federation(DEFAULT, FakeResolver({"ctx.example": ["127.0.0.1"]}))
        try:
            target = _target(f"http://ctx.example:{server.port}")  # a name: cookies apply
            (moved,) = await federation.send("t", [target], "GET", "/moved")
            assert moved.status == 302 and moved.warning is not None
            assert moved.warning.startswith("299 ") and "not followed" in moved.warning
            (ok,) = await federation.send("t", [target], "GET", "/ok")
            assert ok.ok and ok.body == []
            assert ok.headers["link"] == "<http://ctx/c.jsonld>"
            assert ok.headers["x-twice"] == "a, b"
            (again,) = await federation.send("t", [target], "POST", "/ok", body=b"[1]")
            assert again.ok
        finally:
            await federation.aclose()
        assert [h.split(" ")[1] for h in server.heads] == ["/moved", "/ok", "/ok"]
        assert server.connections == 1
        assert server.header(2, "Cookie") is None
        assert server.header(2, "Content-Type") is None  # none given, none added


async def test_the_federation_caps_the_answer_size_declared_or_streamed() -> None:
    async with RawServer() as server:
        server.answer("/declared", "200 OK", {}, b"[" + b"1," * 600 + b"1]")
        server.answer("/streamed", "200 OK", {}, b"[" + b"1," * 600 + b"1]", chunked=True)
        server.answer("/small", "200 OK", {}, b"[" + b"1," * 400 + b"1]", chunked=True)
        federation = _federation(DEFAULT, FakeResolver({}), max_bytes=1000)
        try:
            target = _target(f"http://127.0.0.1:{server.port}")
            for path in ("/declared", "/streamed"):
                (reply,) = await federation.send("t", [target], "GET", path)
                assert reply.warning is not None and reply.warning.startswith("111 "), path
                assert reply.body is None
            (small,) = await federation.send("t", [target], "GET", "/small")
            assert small.ok and len(small.body) == 401
        finally:
            await federation.aclose()


async def test_the_federation_bounds_each_request_by_the_registration_timeout() -> None:
    held: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda r, w: held.append(w), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    federation = _federation(DEFAULT, FakeResolver({}))
    try:
        started = time.monotonic()
        (reply,) = await federation.send(
            "t", [_target(f"http://127.0.0.1:{port}", timeout=200)], "GET", "/x")
        assert reply.warning is not None and reply.warning.startswith("199 ")
        assert time.monotonic() - started < 2
        (closed,) = await federation.send("t", [_target("http://127.0.0.1:9")], "GET", "/x")
        assert closed.warning is not None and closed.warning.startswith("199 ")
    finally:
        await federation.aclose()
        silent.close()
        for writer in held:
            writer.close()
        await silent.wait_closed()
