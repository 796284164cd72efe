"""ContextService against a real HTTP server on 127.0.0.1, and the /jsonldContexts registry."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from urbanos.core.jsonld import CORE_CONTEXT_URL
from urbanos.errors import (
    BadRequestData,
    InvalidRequest,
    LdContextNotAvailable,
    OperationNotSupported,
    ResourceNotFound,
)
from urbanos.outbound import OutboundPolicy
from urbanos.services.contexts import CORE_LOCAL_ID, ContextService
from urbanos.storage.sqlite import SqliteStore

EX = "http://example.org/"
MAX_BYTES = 2000


class ContextServer:
    """A tiny context server: fixed routes, request counting, a switchable origin."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.down = False
        self.version = 1
        self.routes: dict[str, Any] = {
            "/ctx.jsonld": lambda: (200, {"@context": {"speed": EX + "speed"}}, {}),
            "/nested.jsonld": lambda: (
                200, {"@context": ["ctx.jsonld", {"Vehicle": EX + "Vehicle"}]}, {}
            ),
            "/versioned.jsonld": lambda: (
                200, {"@context": {"speed": f"{EX}v{self.version}/speed"}}, {}
            ),
            "/slow.jsonld": self._slow,
            "/big.jsonld": lambda: (200, {"@context": {"pad": "x" * (MAX_BYTES * 2)}}, {}),
            "/loop": lambda: (302, None, {"Location": "/loop"}),
            "/hop": lambda: (302, None, {"Location": "/ctx.jsonld"}),
            "/to-metadata": lambda: (302, None, {"Location": "http://169.254.169.254/"}),
            "/invalid.jsonld": lambda: (200, b"{not json", {}),
            "/array.jsonld": lambda: (200, [1, 2], {}),
            "/bad-def.jsonld": lambda: (200, {"@context": {"speed": {"@id": 5}}}, {}),
            "/scoped.jsonld": lambda: (
                200, {"@context": {"T": {"@id": EX + "T", "@context": {"a": EX + "a"}}}}, {}
            ),
            "/imports-scoped.jsonld": lambda: (200, {"@context": ["scoped.jsonld"]}, {}),
            "/cycle-a.jsonld": lambda: (200, {"@context": "cycle-b.jsonld"}, {}),
            "/cycle-b.jsonld": lambda: (200, {"@context": ["cycle-a.jsonld"]}, {}),
            "/short-lived.jsonld": lambda: (
                200, {"@context": {"t": EX + "t"}}, {"Cache-Control": "max-age=0"}
            ),
        }
        for i in range(12):  # /chain-0 -> /chain-1 -> ... -> /chain-11
            self.routes[f"/chain-{i}.jsonld"] = lambda i=i: (
                200, {"@context": [f"chain-{i + 1}.jsonld"] if i < 11 else {"end": EX}}, {}
            )
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _slow(self) -> tuple[int, Any, dict[str, str]]:
        time.sleep(2)
        return 200, {"@context": {}}, {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.hits[self.path] += 1
                route = server.routes.get(self.path)
                if route is None or server.down:
                    status, body, headers = 404, {"error": "not found"}, {}
                else:
                    status, body, headers = route()
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/ld+json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout tests)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self) -> ContextServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def server() -> Iterator[ContextServer]:
    with ContextServer() as srv:
        yield srv


@pytest.fixture
async def service(server: ContextServer) -> AsyncIterator[ContextService]:
    server.down = False
    async with ContextService(
        OutboundPolicy(), timeout=0.5, max_bytes=MAX_BYTES, public_url="http://broker:1026"
    ) as svc:
        yield svc


async def test_fetch_then_cache_hit(service: ContextService, server: ContextServer) -> None:
    url = server.url("/ctx.jsonld")
    before = server.hits["/ctx.jsonld"]
    terms = await service.term_map(url)
    assert terms.expand("speed") == EX + "speed"
    assert terms.compact(EX + "speed") == "speed"
    assert (await service.term_map(url)) is terms
    assert (await service.term_map([url, CORE_CONTEXT_URL])).expand("speed") == EX + "speed"
    assert server.hits["/ctx.jsonld"] == before + 1  # fetched once, cached since
    details = await service.get(url, details=True)
    assert details["kind"] == "Cached" and details["URL"] == url
    assert details["numberOfHits"] == 3
    assert details["createdAt"].endswith("Z") and "expiresAt" in details


async def test_hits_count_uses_and_lookups(
    service: ContextService, server: ContextServer
) -> None:
    """A details answer reports the hits before its own lookup, then counts it."""
    url = server.url("/ctx.jsonld")
    await service.term_map(url)  # the download is the first use
    first = await service.get(url, details=True)
    assert first["numberOfHits"] == 1 and "lastUsage" in first
    await service.term_map(url)
    assert (await service.get(url, details=True))["numberOfHits"] == 3
    assert (await service.list(details=True, kind="Cached"))[1]["numberOfHits"] == 4


async def test_scoped_contexts_are_refused_where_used(
    service: ContextService, server: ContextServer
) -> None:
    for path in ("/scoped.jsonld", "/imports-scoped.jsonld"):
        with pytest.raises(BadRequestData, match="scoped"):
            await service.term_map(server.url(path))
    # hosting one is plain JSON-LD (clause 5.13.2.4); using it is refused (5.5.7)
    local_id = await service.add({"@context": {"T": {"@id": EX + "T", "@context": {}}}})
    with pytest.raises(BadRequestData, match="scoped"):
        await service.term_map(service.url(local_id))


async def test_nested_context_urls(service: ContextService, server: ContextServer) -> None:
    terms = await service.term_map(server.url("/nested.jsonld"))
    assert terms.expand("Vehicle") == EX + "Vehicle"
    assert terms.expand("speed") == EX + "speed"  # from the relative nested reference
    cached = await service.list(kind="Cached")
    assert server.url("/ctx.jsonld") in cached and server.url("/nested.jsonld") in cached
    assert CORE_CONTEXT_URL in cached


async def test_redirects_are_followed_and_rechecked(
    service: ContextService, server: ContextServer
) -> None:
    assert (await service.term_map(server.url("/hop"))).expand("speed") == EX + "speed"
    with pytest.raises(LdContextNotAvailable, match="169.254.169.254"):
        await service.term_map(server.url("/to-metadata"))


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/slow.jsonld", "within 0.5 s"),
        ("/big.jsonld", f"larger than {MAX_BYTES} bytes"),
        ("/loop", "more than 3 redirects"),
        ("/missing.jsonld", "HTTP status 404"),
    ],
)
async def test_fetch_failures_are_not_available(
    service: ContextService, server: ContextServer, path: str, why: str
) -> None:
    with pytest.raises(LdContextNotAvailable) as info:
        await service.term_map([server.url(path)])
    assert server.url(path) in info.value.detail and why in info.value.detail


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/array.jsonld", "not a JSON-LD context document"),
        ("/invalid.jsonld", "is not JSON"),
        ("/bad-def.jsonld", "@id must be a string"),
        ("/cycle-a.jsonld", "cyclic"),
        ("/chain-0.jsonld", "more than 8 levels"),
    ],
)
async def test_invalid_remote_contexts_are_bad_request_data(
    service: ContextService, server: ContextServer, path: str, why: str
) -> None:
    with pytest.raises(BadRequestData, match=why):
        await service.term_map(server.url(path))


async def test_outbound_policy_applies(server: ContextServer) -> None:
    async with ContextService(OutboundPolicy.from_strings("strict", "")) as strict:
        with pytest.raises(LdContextNotAvailable, match="loopback"):
            await strict.term_map(server.url("/ctx.jsonld"))
    allowed = OutboundPolicy.from_strings("strict", "127.0.0.0/8")
    async with ContextService(allowed) as svc:
        assert (await svc.term_map(server.url("/ctx.jsonld"))).expand("speed") == EX + "speed"


async def test_relative_and_inline_contexts(service: ContextService) -> None:
    with pytest.raises(BadRequestData, match="absolute"):
        await service.term_map("/api/v1/context.jsonld")
    terms = await service.term_map({"A1": "urn:ngsi-ld:attributes:A1"})
    assert terms.expand("A1") == "urn:ngsi-ld:attributes:A1"
    assert (await service.term_map(None)).core_only


async def test_expired_entries_are_refetched(server: ContextServer) -> None:
    url = server.url("/versioned.jsonld")
    server.version = 1
    async with ContextService(OutboundPolicy(), cache_ttl=0.0) as svc:
        count = server.hits["/versioned.jsonld"]
        assert (await svc.term_map(url)).expand("speed") == EX + "v1/speed"
        server.version = 3
        assert (await svc.term_map(url)).expand("speed") == EX + "v3/speed"
        assert server.hits["/versioned.jsonld"] == count + 2
        server.down = True  # origin gone: the stale copy keeps requests working
        try:
            assert (await svc.term_map(url)).expand("speed") == EX + "v3/speed"
            count = server.hits["/versioned.jsonld"]
            assert (await svc.term_map(url)).expand("speed") == EX + "v3/speed"
            assert server.hits["/versioned.jsonld"] == count  # not retried at once
        finally:
            server.down = False


async def test_max_age_sets_the_lifetime(service: ContextService, server: ContextServer) -> None:
    url = server.url("/short-lived.jsonld")
    await service.term_map(url)
    count = server.hits["/short-lived.jsonld"]
    await service.term_map([url])  # max-age=0 is raised to a one-minute minimum
    assert server.hits["/short-lived.jsonld"] == count
    details = await service.get(url, details=True)
    assert details["expiresAt"] > details["createdAt"]


async def test_hosted_contexts(service: ContextService, server: ContextServer) -> None:
    local_id = await service.add({"@context": {"A1": "urn:a:A1"}, "ignored": 1})
    assert await service.get(local_id) == {"@context": {"A1": "urn:a:A1"}}
    details = await service.get(local_id, details=True)
    assert details["kind"] == "Hosted" and details["localId"] == local_id
    assert details["URL"] == f"http://broker:1026/ngsi-ld/v1/jsonldContexts/{local_id}"
    assert await service.list(kind="Hosted") == [details["URL"]]
    # the broker's own URL is resolved locally, never fetched
    terms = await service.term_map(details["URL"])
    assert terms.expand("A1") == "urn:a:A1"
    # served body, the details lookup above, this use: the details report 3 of them
    assert (await service.get(local_id, details=True))["numberOfHits"] == 3
    with pytest.raises(BadRequestData):
        await service.delete(local_id, reload=True)
    await service.delete(local_id)
    with pytest.raises(ResourceNotFound):
        await service.get(local_id)
    with pytest.raises(ResourceNotFound):
        await service.delete(local_id)
    with pytest.raises(LdContextNotAvailable):  # now a plain (unreachable) remote URL
        await service.term_map(details["URL"])


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ({"A1": "urn:a:A1"}, InvalidRequest),
        ([{"@context": {}}], InvalidRequest),
        ({"@context": 42}, BadRequestData),
        ({"@context": True}, BadRequestData),
        ({"@context": ["https://example.org/ctx.jsonld", 7]}, BadRequestData),
        ({"@context": {"x": {"@id": 3}}}, BadRequestData),
    ],
)
async def test_add_rejects_invalid_documents(
    service: ContextService, document: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await service.add(document)
    assert await service.list(kind="Hosted") == []


async def test_hosted_context_with_urls_caches_them(
    service: ContextService, server: ContextServer
) -> None:
    local_id = await service.add({"@context": [server.url("/ctx.jsonld")]})
    await service.term_map(service.url(local_id))
    assert (await service.get(server.url("/ctx.jsonld"), details=True))["kind"] == "Cached"


async def test_cached_contexts_are_described_not_served(
    service: ContextService, server: ContextServer
) -> None:
    url = server.url("/ctx.jsonld")
    await service.term_map(url)
    with pytest.raises(OperationNotSupported):
        await service.get(url)
    local_id = (await service.get(url, details=True))["localId"]
    assert (await service.get(local_id, details=True))["URL"] == url
    await service.delete(local_id)
    with pytest.raises(ResourceNotFound):
        await service.get(url, details=True)


async def test_reload(service: ContextService, server: ContextServer) -> None:
    url = server.url("/versioned.jsonld")
    server.version = 1
    assert (await service.term_map(url)).expand("speed") == EX + "v1/speed"
    server.version = 2
    await service.delete(url, reload=True)
    assert (await service.term_map(url)).expand("speed") == EX + "v2/speed"
    server.down = True
    with pytest.raises(LdContextNotAvailable):
        await service.delete(url, reload=True)
    details = await service.get(url, details=True)  # the failed reload kept the entry
    assert details["kind"] == "Cached"
    assert (await service.term_map(url)).expand("speed") == EX + "v2/speed"
    await service.delete(url)
    with pytest.raises(ResourceNotFound):
        await service.get(url, details=True)


async def test_core_context_entry(service: ContextService) -> None:
    for ident in (CORE_CONTEXT_URL, CORE_LOCAL_ID,
                  "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld"):
        details = await service.get(ident, details=True)
        assert details["kind"] == "Cached" and details["URL"] == CORE_CONTEXT_URL
        with pytest.raises(BadRequestData, match="core"):
            await service.delete(ident)
        await service.delete(ident, reload=True)  # nothing to reload: a no-op
    assert await service.list() == [CORE_CONTEXT_URL]
    assert await service.list(kind="Hosted") == []


async def test_unknown_identifiers(service: ContextService) -> None:
    with pytest.raises(ResourceNotFound):
        await service.get("wrong_id_context", details=True)
    with pytest.raises(ResourceNotFound):
        await service.delete("1234567890123456")
    with pytest.raises(BadRequestData):
        await service.delete("wrong_id_context", reload=True)
    with pytest.raises(BadRequestData):
        await service.delete("")
    with pytest.raises(BadRequestData):
        await service.list(kind="other")


async def test_implicitly_created_contexts(service: ContextService, server: ContextServer) -> None:
    context = [server.url("/ctx.jsonld"), {"Vehicle": EX + "Vehicle"}]
    url = await service.link_url(context)
    assert url == await service.link_url(list(context))  # one entry per distinct @context
    assert await service.link_url(server.url("/ctx.jsonld")) == server.url("/ctx.jsonld")
    assert await service.link_url(None) == CORE_CONTEXT_URL
    assert await service.link_url([server.url("/ctx.jsonld")]) == server.url("/ctx.jsonld")
    [details] = await service.list(details=True, kind="ImplicitlyCreated")
    assert details["URL"] == url and details["kind"] == "ImplicitlyCreated"
    assert await service.get(details["localId"]) == {"@context": context}
    await service.link_url(context)  # handing out the URL again is not a hit
    assert (await service.get(details["localId"], details=True))["numberOfHits"] == 1
    terms = await service.term_map(url)
    assert terms.expand("Vehicle") == EX + "Vehicle" and terms.expand("speed") == EX + "speed"
    with pytest.raises(BadRequestData):
        await service.delete(details["localId"], reload=True)
    await service.delete(details["localId"])
    assert await service.list(kind="ImplicitlyCreated") == []
    with pytest.raises(BadRequestData):
        await service.link_url({"bad": {"@id": 1}})


async def test_tenants_are_isolated(service: ContextService) -> None:
    local_id = await service.add({"@context": {"secret": "urn:a:secret"}}, tenant="a")
    assert await service.get(local_id, tenant="a")
    with pytest.raises(ResourceNotFound):
        await service.get(local_id, tenant="b")
    with pytest.raises(ResourceNotFound):
        await service.get(local_id, details=True)
    with pytest.raises(ResourceNotFound):
        await service.delete(local_id, tenant="b")
    assert local_id not in json.dumps(await service.list(details=True, tenant="b"))
    terms = await service.term_map(service.url(local_id), tenant="a")
    assert terms.expand("secret") == "urn:a:secret"
    await service.delete(local_id, tenant="a")


async def test_concurrent_requests_share_one_download(
    service: ContextService, server: ContextServer
) -> None:
    def slowish() -> tuple[int, Any, dict[str, str]]:
        time.sleep(0.2)
        return 200, {"@context": {}}, {}

    server.routes["/shared.jsonld"] = slowish
    results = await asyncio.gather(
        *(service.term_map([server.url("/shared.jsonld"), {"n": f"urn:n:{i}"}]) for i in range(5))
    )
    assert len({id(r) for r in results}) == 5
    assert server.hits["/shared.jsonld"] == 1


async def test_connections_go_to_the_checked_address(server: ContextServer) -> None:
    """The name resolves only through the injected resolver: connecting proves pinning."""
    calls: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"] if host == "contexts.test" else []

    url = server.url("/ctx.jsonld").replace("127.0.0.1", "contexts.test")
    async with ContextService(OutboundPolicy(), resolver=resolver) as svc:
        assert (await svc.term_map(url)).expand("speed") == EX + "speed"
    assert calls == ["contexts.test"]
    strict = OutboundPolicy.from_strings("strict", "")
    async with ContextService(strict, resolver=resolver) as svc:
        with pytest.raises(LdContextNotAvailable, match="loopback"):
            await svc.term_map(url)


async def test_use_counts_that_cannot_be_stored_at_shutdown_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore(tmp_path / "c.db")
    await store.open()
    service = ContextService(OutboundPolicy(), store=store.contexts)
    local_id = await service.add({"@context": {"a": "urn:a"}})
    await service.get(local_id)  # one use, counted in memory until the next flush
    await store.close()  # the store goes away first
    with caplog.at_level(logging.ERROR, logger="urbanos.contexts"):
        await service.aclose()
    assert [r.getMessage() for r in caplog.records if r.exc_info] == [
        "@context registry: the last use counts could not be stored"]
