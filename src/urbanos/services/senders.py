"""Putting one prepared notification on the wire: HTTP POST (httpx) or MQTT publish (aiomqtt).

A sender returns when the receiver acknowledged (a 2xx; a PUBACK for QoS 1, PUBCOMP for
QoS 2, the socket write for QoS 0) and raises :class:`DeliveryError` otherwise, saying
whether a retry may help. The outbound-URL policy is applied when connecting (the HTTP
transport pins each connection to checked addresses; MQTT resolves, checks and connects
to a checked address), so a name that starts pointing at a forbidden address later is
refused then. Redirects are not followed, and the broker never notifies itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from urbanos.outbound import (
    GuardedTransport,
    OutboundPolicy,
    OutboundRefused,
    default_resolver,
    parse_host_address,
    resolve_checked,
)
from urbanos.storage.outbox import Envelope

log = logging.getLogger("urbanos.notifications")

MQTT_SCHEMES = frozenset({"mqtt", "mqtts"})
HTTP_SCHEMES = frozenset({"http", "https"})
_PORTS = {"http": 80, "https": 443, "mqtt": 1883, "mqtts": 8883}
#: response bodies are read (to keep the connection reusable) up to this size, then dropped
_MAX_RESPONSE = 65_536
#: HTTP statuses worth retrying besides 5xx: timeout, too early, too many requests
_TRANSIENT = {408, 425, 429}


class DeliveryError(Exception):
    """A notification was not acknowledged; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class Sender(Protocol):
    async def send(self, envelope: Envelope, lane: str) -> None: ...

    async def forget(self, lane: str) -> None:
        """Drop connections kept for ``lane`` (it has been idle)."""
        ...

    async def aclose(self) -> None: ...


@functools.lru_cache(maxsize=8192)
def lane_of(uri: str) -> str:
    """The per-endpoint queue a URI belongs to: one per origin (and MQTT user), so a
    hanging receiver holds up only the notifications that go to it."""
    try:
        url = httpx.URL(uri)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "invalid:"
    user = f"{url.username}@" if url.scheme in MQTT_SCHEMES and url.username else ""
    port = url.port or _PORTS.get(url.scheme, 0)
    return f"{url.scheme}://{user}{url.host}:{port}"


@dataclass(frozen=True)
class SelfAddress:
    """Where the broker itself listens: notifying it would loop back into its own API."""

    host: str
    port: int
    public_url: str = ""
    local: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, host: str, port: int, public_url: str) -> SelfAddress:
        local = {host}
        with contextlib.suppress(OSError):
            local.update(socket.gethostbyname_ex(socket.gethostname())[2])
        return cls(host, port, public_url.rstrip("/"), frozenset(local))

    async def contains(self, url: httpx.URL) -> bool:
        port = url.port or _PORTS.get(url.scheme, 0)
        if self.public_url:
            public = httpx.URL(self.public_url)
            if (public.host, public.port or _PORTS.get(public.scheme, 0)) == (url.host, port):
                return True
        if port != self.port:
            return False
        literal = parse_host_address(url.host)
        try:
            raw = [str(literal)] if literal is not None else await default_resolver(url.host, port)
        except OSError:
            return False
        for item in raw:
            address = ipaddress.ip_address(item.split("%", 1)[0])
            mapped = getattr(address, "ipv4_mapped", None) or address
            if mapped.is_loopback or mapped.is_unspecified or str(mapped) in self.local:
                return True
        return False


class HttpSender:
    """POSTs notifications; one connection pool per lane, so lanes cannot starve each other."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        timeout: float,
        itself: SelfAddress | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.policy = policy
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))
        self.itself = itself
        self._inner = transport  # tests inject one; by default each lane pins its own
        self._clients: dict[str, httpx.AsyncClient] = {}

    def _client(self, lane: str) -> httpx.AsyncClient:
        client = self._clients.get(lane)
        if client is None:
            transport = GuardedTransport(self.policy, self._inner, schemes=HTTP_SCHEMES)
            client = httpx.AsyncClient(
                transport=transport, timeout=self.timeout, follow_redirects=False
            )
            self._clients[lane] = client
        return client

    async def send(self, envelope: Envelope, lane: str) -> None:
        try:
            url = httpx.URL(envelope.uri)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise DeliveryError(f"invalid endpoint {envelope.uri!r}", retry=False) from exc
        if self.itself is not None and await self.itself.contains(url):
            raise DeliveryError("the endpoint is the broker itself", retry=False)
        try:
            async with self._client(lane).stream(
                "POST", url, content=envelope.payload, headers=envelope.headers
            ) as response:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read > _MAX_RESPONSE:
                        break
        except OutboundRefused as exc:
            raise DeliveryError(exc.detail, retry=False) from exc
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"timed out: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if not 200 <= status < 300:
            retry = status >= 500 or status in _TRANSIENT
            raise DeliveryError(f"HTTP {status} from the receiver", retry=retry)

    async def forget(self, lane: str) -> None:
        client = self._clients.pop(lane, None)
        if client is not None and self._inner is None:  # an injected transport is shared
            await client.aclose()

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        if self._inner is not None:
            await self._inner.aclose()
            return
        for client in clients:
            await client.aclose()


class MqttSender:
    """Publishes to MQTT brokers, keeping one connection per (broker, user, version)."""

    def __init__(self, policy: OutboundPolicy, *, timeout: float) -> None:
        self.policy = policy
        self.timeout = timeout
        self._clients: dict[tuple[Any, ...], Any] = {}
        self._locks: dict[tuple[Any, ...], asyncio.Lock] = {}

    async def _connect(self, url: httpx.URL, version: str) -> tuple[tuple[Any, ...], Any]:
        import aiomqtt

        key = (url.scheme, url.host, url.port, url.username, url.password, version)
        client = self._clients.get(key)
        if client is not None:
            return key, client
        async with self._locks.setdefault(key, asyncio.Lock()):
            client = self._clients.get(key)
            if client is not None:
                return key, client
            addresses = await resolve_checked(url, self.policy, schemes=MQTT_SCHEMES)
            tls = url.scheme == "mqtts"
            # plain MQTT connects to the checked address; TLS needs the name to verify
            host = url.host if tls else str(addresses[0]).split("%", 1)[0]
            protocol = (
                aiomqtt.ProtocolVersion.V5 if version.startswith("mqtt5")
                else aiomqtt.ProtocolVersion.V311
            )
            client = aiomqtt.Client(
                host,
                url.port or _PORTS[url.scheme],
                username=url.username or None,
                password=url.password or None,
                protocol=protocol,
                timeout=self.timeout,
                tls_context=ssl.create_default_context() if tls else None,
            )
            async with asyncio.timeout(self.timeout):
                await client.__aenter__()
            self._clients[key] = client
            return key, client

    async def send(self, envelope: Envelope, lane: str) -> None:
        import aiomqtt

        try:
            url = httpx.URL(envelope.uri)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise DeliveryError(f"invalid endpoint {envelope.uri!r}", retry=False) from exc
        topic = url.path.lstrip("/")
        if not topic:
            raise DeliveryError("the MQTT endpoint names no topic", retry=False)
        for fresh_try in (False, True):
            key: tuple[Any, ...] | None = None
            try:
                reused = self._cached(url, envelope.mqtt_version)
                key, client = await self._connect(url, envelope.mqtt_version)
                await client.publish(
                    topic, envelope.payload, qos=envelope.qos, timeout=self.timeout
                )
                return
            except OutboundRefused as exc:
                raise DeliveryError(exc.detail, retry=False) from exc
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                if key is not None:
                    await self._drop(key)
                if reused and not fresh_try:
                    continue  # the kept connection had gone stale: reconnect once
                raise DeliveryError(f"MQTT: {type(exc).__name__}: {exc}") from exc

    def _cached(self, url: httpx.URL, version: str) -> bool:
        return (url.scheme, url.host, url.port, url.username, url.password, version) in self._clients

    async def _drop(self, key: tuple[Any, ...]) -> None:
        client = self._clients.pop(key, None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def forget(self, lane: str) -> None:
        return None  # connections are per broker and shared by lanes

    async def aclose(self) -> None:
        for key in list(self._clients):
            await self._drop(key)


class Senders:
    """Routes each envelope to the sender for its URI scheme."""

    def __init__(self, http: Sender, mqtt: Sender) -> None:
        self.http = http
        self.mqtt = mqtt

    def _for(self, lane: str) -> Sender:
        return self.mqtt if lane.split(":", 1)[0] in MQTT_SCHEMES else self.http

    async def send(self, envelope: Envelope, lane: str) -> None:
        if lane.startswith("invalid:"):
            raise DeliveryError(f"invalid endpoint {envelope.uri!r}", retry=False)
        await self._for(lane).send(envelope, lane)

    async def forget(self, lane: str) -> None:
        await self._for(lane).forget(lane)

    async def aclose(self) -> None:
        for sender in self._all():
            await sender.aclose()

    def _all(self) -> Iterable[Sender]:
        return (self.http, self.mqtt)
