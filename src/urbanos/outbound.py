"""The one outbound-URL policy for every URL the broker fetches or sends to.

Remote @contexts, notification endpoints and federated brokers are all URLs chosen by
clients, so each is a server-side request forgery vector: without a policy a client can
make the broker read cloud metadata (``http://169.254.169.254/``) or poke services on the
internal network. Every outbound request goes through :func:`check_url` (scheme and
literal addresses) and, for host names, through :func:`resolve_checked`, which resolves
the name and checks *every* address it resolves to.

Address classes:

* always refused, unless covered by an ``allow`` CIDR: link-local (169.254.0.0/16,
  fe80::/10) and cloud metadata endpoints (fd00:ec2::254, 100.100.100.200,
  192.0.0.192, 168.63.129.16);
* refused by the ``strict`` policy as well: unspecified, loopback, private (RFC 1918,
  fc00::/7), CGNAT (100.64.0.0/10), multicast, documentation, benchmarking and reserved
  ranges; the ``default`` policy allows them (brokers commonly talk to neighbours on a
  private network).

Encoded forms are decoded before checking: IPv4 written as one decimal/octal/hex number
or with fewer than four parts (``http://2852039166/``, ``0xa9fea9fe``), IPv4-mapped and
-compatible IPv6 (``::ffff:169.254.169.254``), NAT64 (64:ff9b::/96, 64:ff9b:1::/48),
6to4 (2002::/16) and Teredo (2001::/32) addresses are checked against the IPv4 address
they embed as well as themselves.

DNS rebinding: checking a name and letting the HTTP client resolve it again leaves a
window in which the name can start pointing elsewhere. :class:`GuardedTransport` closes
it for httpx: its connections are opened by :class:`PinnedBackend`, which resolves the
name once, checks every address and connects to a checked one, while the connection
pool stays keyed by host name (TLS is verified against the name, a connection is never
shared between names). When a caller injects its own inner transport (tests, proxies)
the check runs at send time and that transport resolves again: the window remains, as
it does for other protocols that only call :func:`resolve_checked` before connecting.

aiohttp gets the same pinning from :class:`PinnedResolver`: its connector asks it for a
name's addresses, it answers with the checked ones, and the connection goes to one of them
(the pool, TLS and ``Host`` stay keyed by the name). aiohttp connects to a literal address
without asking the resolver, so :func:`guarded_url` checks the URL as aiohttp parses it
too; :func:`guarded_session` is a ClientSession with this resolver, no proxy from the
environment and no cookie jar.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlencode

import aiohttp
import httpcore
import httpx
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from urbanos.errors import BadRequestData

__all__ = [
    "FetchFailed",
    "fetch_limited",
    "DEFAULT_SCHEMES",
    "GuardedTransport",
    "IPAddress",
    "OutboundPolicy",
    "OutboundRefused",
    "PinnedBackend",
    "PinnedResolver",
    "Resolver",
    "check_url",
    "default_resolver",
    "guarded_session",
    "guarded_url",
    "parse_host_address",
    "resolve_checked",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: resolves (host, port) to IP address strings
Resolver = Callable[[str, int], Awaitable[list[str]]]

DEFAULT_SCHEMES: frozenset[str] = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "mqtt": 1883, "mqtts": 8883}


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


#: refused by every policy unless explicitly allowed
_ALWAYS_REFUSED = _nets(
    "169.254.0.0/16",  # IPv4 link-local, incl. 169.254.169.254 metadata
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata (inside CGNAT, which default allows)
    "192.0.0.192/32",  # Oracle Cloud legacy metadata
    "168.63.129.16/32",  # Azure WireServer
)

#: refused by the strict policy in addition
_STRICT_REFUSED = _nets(
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "100::/64",
    "2001:2::/48",
    "2001:10::/28",
    "2001:20::/28",
    "2001:db8::/32",
    "fc00::/7",
    "fec0::/10",
    "ff00::/8",
)

_NAT64 = _nets("64:ff9b::/96", "64:ff9b:1::/48")
_COMPAT = ipaddress.ip_network("::/96")
_6TO4 = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")


class OutboundRefused(BadRequestData):
    """The outbound policy refused a URL (bad scheme, forbidden address)."""


@dataclass(frozen=True)
class OutboundPolicy:
    """Which destinations the broker may contact; parsed once from settings."""

    mode: Literal["default", "strict"] = "default"
    allow: tuple[IPNetwork, ...] = field(default=())

    @classmethod
    def from_strings(cls, policy: str, allow: str) -> OutboundPolicy:
        """Parse URBANOS_OUTBOUND_POLICY and URBANOS_OUTBOUND_ALLOW; ValueError if invalid."""
        mode = (policy or "default").strip().lower()
        if mode not in ("default", "strict"):
            raise ValueError(f"outbound policy must be 'default' or 'strict', not {policy!r}")
        nets: list[IPNetwork] = []
        for item in re.split(r"[,\s]+", allow or ""):
            if not item:
                continue
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise ValueError(f"invalid CIDR in outbound allow-list: {item!r}") from exc
        return cls(mode="strict" if mode == "strict" else "default", allow=tuple(nets))

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused, or None when it may be contacted."""
        address = _unscoped(address)
        if _within(address, self.allow):
            return None
        for a in (address, *_embedded_ipv4(address)):
            if _within(a, self.allow):
                continue
            if _within(a, _ALWAYS_REFUSED):
                return f"{address} is a link-local or cloud-metadata address"
            if self.mode == "strict" and _within(a, _STRICT_REFUSED):
                return f"{address} is a loopback, private or reserved address"
        return None


def _within(address: IPAddress, nets: Iterable[IPNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in nets)


def _unscoped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return ipaddress.IPv6Address(str(address).split("%", 1)[0])
    return address


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    address = _unscoped(address)
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    elif address in _COMPAT and int(address) > 1:
        found.append(low32)
    if any(address in net for net in _NAT64):
        found.append(low32)
    if address in _6TO4 and address.sixtofour is not None:
        found.append(address.sixtofour)
    if address in _TEREDO and address.teredo is not None:
        found.extend(address.teredo)
    return found


_IPV4_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")


def _parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """inet_aton semantics: 1-4 parts, each decimal, octal (0...) or hex (0x...)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_IPV4_PART.match(p) for p in parts):
        return None
    values = []
    for p in parts:
        if p[:2].lower() == "0x":
            values.append(int(p[2:] or "0", 16))
        elif len(p) > 1 and p[0] == "0":
            values.append(int(p, 8))
        else:
            values.append(int(p))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        return None
    number = 0
    for v in head:
        number = number << 8 | v
    number = number << (8 * (5 - len(values))) | last
    return ipaddress.IPv4Address(number)


def parse_host_address(host: str) -> IPAddress | None:
    """The IP address a URL host denotes literally (any encoding), or None for a name."""
    host = unquote(host).strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.endswith("."):
        host = host[:-1]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    return _parse_ipv4_loose(host)


def _parse(url: str | httpx.URL, schemes: Iterable[str]) -> httpx.URL:
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise OutboundRefused(f"invalid URL {url!s}: {exc}") from exc
    if parsed.scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise OutboundRefused(f"URL {url!s} has a scheme other than {allowed}")
    if not parsed.host:
        raise OutboundRefused(f"URL {url!s} has no host")
    return parsed


def check_url(
    url: str | httpx.URL, policy: OutboundPolicy, *, schemes: Iterable[str] = DEFAULT_SCHEMES
) -> None:
    """Refuse (OutboundRefused) a URL whose scheme or literal address the policy forbids.

    Host names pass here; :func:`resolve_checked` checks what they resolve to.
    """
    parsed = _parse(url, frozenset(schemes))
    address = parse_host_address(parsed.host)
    if address is not None:
        reason = policy.refusal(address)
        if reason:
            raise OutboundRefused(f"refused to contact {url!s}: {reason}")


async def default_resolver(host: str, port: int) -> list[str]:
    """Resolve with the event loop's getaddrinfo (the OS resolver, run in a thread)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


async def _checked_addresses(
    host: str, port: int, policy: OutboundPolicy, resolver: Resolver | None
) -> list[IPAddress]:
    literal = parse_host_address(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        raw = await (resolver or default_resolver)(host, port)
        if not raw:
            raise OSError(f"{host} did not resolve to any address")
        addresses = []
        for item in raw:
            try:
                addresses.append(ipaddress.ip_address(item))
            except ValueError as exc:
                raise OutboundRefused(f"{host} resolved to {item!r}") from exc
    for address in addresses:
        reason = policy.refusal(address)
        if reason:
            raise OutboundRefused(f"refused to contact {host}: {reason}")
    return addresses


async def resolve_checked(
    url: str | httpx.URL,
    policy: OutboundPolicy,
    *,
    resolver: Resolver | None = None,
    schemes: Iterable[str] = DEFAULT_SCHEMES,
) -> list[IPAddress]:
    """Check ``url`` and return the addresses to connect to, all of them allowed.

    Raises OutboundRefused when any resolved address is forbidden (a name resolving to
    one public and one internal address is refused: the client may pick either) and
    OSError when the name does not resolve.
    """
    parsed = _parse(url, frozenset(schemes))
    port = parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 0)
    try:
        return await _checked_addresses(parsed.host, port, policy, resolver)
    except OutboundRefused as exc:
        raise OutboundRefused(f"refused to contact {url!s}: {exc.detail}") from exc


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to checked addresses of the requested host."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await _checked_addresses(host, port, self.policy, self.resolver)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:  # every one was checked: try them in resolver order
            try:
                return await self.inner.connect_tcp(
                    str(_unscoped(address)),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("unix sockets are not outbound destinations")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _PinnedHTTPTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, its connection pool opening sockets via PinnedBackend."""

    def __init__(self, backend: PinnedBackend) -> None:
        super().__init__()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=backend,
        )


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport enforcing the policy on every request, redirects included.

    By default it sends through httpx's transport with a :class:`PinnedBackend`, so the
    connection goes to the address that was checked. With an injected ``inner``
    transport, URLs are checked (and names resolved) at send time instead.
    OutboundRefused propagates to the caller; an unresolvable name is an
    httpx.ConnectError like any unreachable host.
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        resolver: Resolver | None = None,
        schemes: Iterable[str] = DEFAULT_SCHEMES,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.schemes = frozenset(schemes)
        self.pinned = inner is None
        self.inner = inner or _PinnedHTTPTransport(PinnedBackend(policy, resolver=resolver))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.pinned:
            check_url(request.url, self.policy, schemes=self.schemes)  # names: at connect
        else:
            try:
                await resolve_checked(
                    request.url, self.policy, resolver=self.resolver, schemes=self.schemes
                )
            except OSError as exc:
                message = f"cannot resolve {request.url.host}: {exc}"
                raise httpx.ConnectError(message, request=request) from exc
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver under the policy: a name resolves to its checked addresses only
    (every address it has must be allowed), so the connection goes to an address that was
    checked, as :class:`PinnedBackend` does for httpx. OutboundRefused propagates through
    aiohttp to the caller; a name that does not resolve is an OSError (aiohttp: a
    ClientConnectorDNSError)."""

    def __init__(self, policy: OutboundPolicy, *, resolver: Resolver | None = None) -> None:
        self.policy = policy
        self.resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found: list[ResolveResult] = []
        for address in await _checked_addresses(host, port, self.policy, self.resolver):
            plain = _unscoped(address)
            kind = socket.AF_INET6 if plain.version == 6 else socket.AF_INET
            if family in (socket.AF_UNSPEC, kind):
                found.append({"hostname": host, "host": str(plain), "port": port,
                              "family": kind, "proto": 0, "flags": socket.AI_NUMERICHOST})
        if not found:
            raise OSError(f"{host} has no address of family {family!r}")
        return found

    async def close(self) -> None:
        return None


#: URLs whose form httpx would send unchanged: lower-case host, optional port, a path of
#: unreserved, sub-delim, ':' '@' characters and valid %-escapes, no dot segment, no query
_PLAIN_URL = re.compile(
    r"(https?://(?:[a-z0-9.\-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?)"
    r"(?!.*/\.\.?(?:/|$))(?:/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*)?"
)


@functools.lru_cache(maxsize=1024)
def _check_origin(origin: str, policy: OutboundPolicy, schemes: frozenset[str]) -> None:
    """:func:`check_url` of a plain URL's origin; a refusal raises, so is never cached."""
    check_url(origin, policy, schemes=schemes)


def guarded_url(
    url: str, params: Sequence[tuple[str, str]], policy: OutboundPolicy, *,
    schemes: Iterable[str] = DEFAULT_SCHEMES,
) -> yarl.URL:
    """``url`` with ``params`` as aiohttp is to request it, byte for byte what httpx sent
    (``urlencode`` query replacing any in ``url``, path kept as given), checked twice:
    :func:`check_url` (of the origin alone, memoised, when the URL is plain) and the host
    aiohttp parsed, since aiohttp connects to a literal address without resolving. Names
    are checked when :class:`PinnedResolver` resolves them."""
    plain = _PLAIN_URL.fullmatch(url)
    if plain:  # the check depends on scheme and host only: once per origin
        _check_origin(plain.group(1), policy, frozenset(schemes))
        text = f"{url}?{urlencode(params)}" if params else url
    else:  # httpx's normalisation of anything else (rare: the fast path is 15x cheaper)
        check_url(url, policy, schemes=schemes)
        text = str(httpx.URL(url, params=tuple(params)))
    try:
        parsed = yarl.URL(text, encoded=True)
    except ValueError as exc:
        raise OutboundRefused(f"invalid URL {url}: {exc}") from exc
    if parsed.scheme not in schemes or not parsed.raw_host:
        raise OutboundRefused(f"refused to contact {url}: not an allowed URL")
    address = parse_host_address(parsed.raw_host)
    if address is not None:
        reason = policy.refusal(address)
        if reason:
            raise OutboundRefused(f"refused to contact {url}: {reason}")
    return parsed


def guarded_session(
    policy: OutboundPolicy, *, resolver: Resolver | None = None, limit: int = 100,
    keepalive: float = 5.0,
) -> aiohttp.ClientSession:
    """An aiohttp session for outbound requests under ``policy`` (call it in the running
    loop; send with :func:`guarded_url` URLs and ``allow_redirects=False``): names resolve
    through :class:`PinnedResolver`; keep-alive pool of ``limit`` connections; no proxy
    from the environment; no cookie jar (a source's cookie would go back to it on other
    tenants' requests); no aiohttp timeouts (the caller bounds each request); no
    Content-Type added to a body sent without one (httpx added none either)."""
    connector = aiohttp.TCPConnector(
        resolver=PinnedResolver(policy, resolver=resolver), limit=limit,
        keepalive_timeout=keepalive, ssl=httpx.create_ssl_context(),
    )
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None), auto_decompress=True,
        skip_auto_headers=("Content-Type",),
    )


class FetchFailed(Exception):
    """Why a bounded fetch gave nothing (``reason``: short, for the caller's own error)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def fetch_limited(
    client: httpx.AsyncClient, url: str, *, headers: dict[str, str], timeout: float,
    max_bytes: int, max_redirects: int = 0,
) -> tuple[bytes, httpx.Headers]:
    """GET ``url`` through ``client`` (its transport applies the outbound policy): the body
    of a 2xx answer and its headers, within ``timeout`` seconds for everything, at most
    ``max_bytes`` read, following at most ``max_redirects`` redirects. Every failure is a
    ``FetchFailed``: the one way every document the broker fetches is bounded."""
    current = url
    try:
        async with asyncio.timeout(timeout):
            for _hop in range(max_redirects + 1):
                async with client.stream("GET", current, headers=headers) as response:
                    location = response.headers.get("location")
                    if response.is_redirect and location and max_redirects:
                        current = str(httpx.URL(current).join(location))
                        continue
                    if not response.is_success:
                        raise FetchFailed(f"HTTP status {response.status_code}")
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > max_bytes:
                        raise FetchFailed(f"larger than {max_bytes} bytes")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise FetchFailed(f"larger than {max_bytes} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks), response.headers
    except TimeoutError as exc:
        raise FetchFailed(f"no complete answer within {timeout:g} s") from exc
    except OutboundRefused as exc:
        raise FetchFailed(exc.detail) from exc
    except httpx.HTTPError as exc:
        raise FetchFailed(f"{type(exc).__name__}: {exc}") from exc
    raise FetchFailed(f"more than {max_redirects} redirects")
