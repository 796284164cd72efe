"""@contexts: fetching and caching remote ones, and the /jsonldContexts registry.

Every request's @context goes through :meth:`ContextService.term_map`: remote documents
are fetched once (outbound policy, timeout, size cap, at most 3 redirects, each hop
re-checked) and kept as "Cached" registry entries; the processed TermMap is kept per
distinct context value. Clause 5.13 (storing, managing and serving @contexts) and the
binding's 6.29-6.30 define the registry:

* Hosted: added by clients (POST /jsonldContexts), served on demand.
* Cached: downloaded by the broker; listed and described, never served (422), deletable
  and reloadable. They expire after the response's ``Cache-Control: max-age`` or
  ``cache_ttl``; an expired entry is re-fetched on next use and, if the origin is then
  unreachable, the stale copy keeps being used (retried a minute later) rather than
  failing requests.
* ImplicitlyCreated: made by the broker when it needs a URL for a @context that is not
  one URL (a Link header for an inline/array context, a subscription's jsonldContext);
  deduplicated by content.

``numberOfHits`` counts the times an entry was found in the registry (clause 5.13.3.5):
every request whose @context used it (a download counts as the first use) and every
Serve @context lookup, body or details. A details answer describes the entry as it was
found, so it reports the count before its own lookup is added; Add, List and handing
out an ImplicitlyCreated URL again do not count. ``lastUsage`` moves with it. The core @context is listed as a built-in
Cached entry: it cannot be deleted (BadRequestData); ``reload=true`` on it is a no-op,
since it is never downloaded. Entries are per tenant (NGSILD-Tenant), like every other
resource; the fetch of a URL is shared between tenants.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import re
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit

import httpx
import orjson

from urbanos.core.jsonld import (
    CORE_CONTEXT_URL,
    TermMap,
    build_term_map,
    canonical,
    core_context_document,
    core_term_map,
    is_core_context_url,
    refuse_scoped_contexts,
    remote_urls,
    validate_context,
)
from urbanos.errors import (
    BadRequestData,
    InvalidRequest,
    LdContextNotAvailable,
    OperationNotSupported,
    ResourceNotFound,
)
from urbanos.outbound import GuardedTransport, OutboundPolicy, OutboundRefused, Resolver
from urbanos.types import JSONObject

__all__ = [
    "CONTEXTS_PATH",
    "CORE_LOCAL_ID",
    "KINDS",
    "ContextEntry",
    "ContextRegistry",
    "ContextService",
    "MemoryContextRegistry",
]

CONTEXTS_PATH = "/ngsi-ld/v1/jsonldContexts"
CORE_LOCAL_ID = "urn:ngsi-ld:jsonldContext:core"
KINDS = ("Hosted", "Cached", "ImplicitlyCreated")
MAX_REDIRECTS = 3
_ACCEPT = "application/ld+json, application/json;q=0.9"
_MAX_AGE = re.compile(r"max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_MIN_TTL, _MAX_TTL = 60.0, 30 * 86400.0


@dataclass(frozen=True, slots=True)
class ContextEntry:
    """One stored @context; ``document`` is the whole JSON document ({"@context": ...})."""

    local_id: str
    kind: str
    document: JSONObject
    created_at: datetime
    url: str | None = None  # where a Cached entry was downloaded from
    expires_at: datetime | None = None
    last_usage: datetime | None = None
    hits: int = 0
    key: bytes | None = None  # canonical @context of an ImplicitlyCreated entry


class ContextRegistry(Protocol):
    """Storage of @context entries, per tenant ("" is the default tenant).

    Consulted on every request (lookups, hit counting), so it is synchronous: a
    persistent implementation keeps its entries in memory and writes behind.
    """

    def put(self, tenant: str, entry: ContextEntry) -> None: ...

    def get(self, tenant: str, local_id: str) -> ContextEntry | None: ...

    def by_url(self, tenant: str, url: str) -> ContextEntry | None:
        """The Cached entry downloaded from ``url``."""
        ...

    def by_key(self, tenant: str, key: bytes) -> ContextEntry | None:
        """The ImplicitlyCreated entry holding the @context with this canonical form."""
        ...

    def entries(self, tenant: str, kind: str | None = None) -> builtins.list[ContextEntry]: ...

    def remove(self, tenant: str, local_id: str) -> bool: ...

    def touch(self, tenant: str, local_ids: Iterable[str], when: datetime) -> None:
        """Count one use of each entry."""
        ...


class MemoryContextRegistry:
    """The in-memory ContextRegistry."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, ContextEntry]] = {}
        self._urls: dict[str, dict[str, str]] = {}
        self._keys: dict[bytes, dict[str, str]] = {}

    def put(self, tenant: str, entry: ContextEntry) -> None:
        self.remove(tenant, entry.local_id)
        self._entries.setdefault(tenant, {})[entry.local_id] = entry
        if entry.kind == "Cached" and entry.url:
            self._urls.setdefault(tenant, {})[entry.url] = entry.local_id
        if entry.key is not None:
            self._keys.setdefault(entry.key, {})[tenant] = entry.local_id

    def get(self, tenant: str, local_id: str) -> ContextEntry | None:
        return self._entries.get(tenant, {}).get(local_id)

    def by_url(self, tenant: str, url: str) -> ContextEntry | None:
        local_id = self._urls.get(tenant, {}).get(url)
        return self.get(tenant, local_id) if local_id else None

    def by_key(self, tenant: str, key: bytes) -> ContextEntry | None:
        local_id = self._keys.get(key, {}).get(tenant)
        return self.get(tenant, local_id) if local_id else None

    def entries(self, tenant: str, kind: str | None = None) -> list[ContextEntry]:
        found = self._entries.get(tenant, {}).values()
        return [e for e in found if kind is None or e.kind == kind]

    def remove(self, tenant: str, local_id: str) -> bool:
        entry = self._entries.get(tenant, {}).pop(local_id, None)
        if entry is None:
            return False
        if entry.url and self._urls.get(tenant, {}).get(entry.url) == local_id:
            del self._urls[tenant][entry.url]
        if entry.key is not None and self._keys.get(entry.key, {}).get(tenant) == local_id:
            del self._keys[entry.key][tenant]
        return True

    def touch(self, tenant: str, local_ids: Iterable[str], when: datetime) -> None:
        stored = self._entries.get(tenant, {})
        for local_id in local_ids:
            entry = stored.get(local_id)
            if entry is not None:
                stored[local_id] = replace(entry, hits=entry.hits + 1, last_usage=when)


@dataclass(frozen=True, slots=True)
class _Built:
    term_map: TermMap
    entry_ids: tuple[str, ...]
    expires_at: datetime | None


def _iso(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise BadRequestData(f"Invalid @context: {url!r} is not a URL ({exc})") from exc


def _unavailable(url: str, why: str) -> LdContextNotAvailable:
    return LdContextNotAvailable(f"@context {url} could not be retrieved: {why}")


class ContextService:
    """Resolves request @contexts to TermMaps and runs the /jsonldContexts operations."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        timeout: float = 5.0,
        max_bytes: int = 1_048_576,
        max_depth: int = 8,
        max_cached: int = 1000,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver | None = None,
        registry: ContextRegistry | None = None,
        public_url: str = "",
        cache_ttl: float = 86400.0,
    ) -> None:
        self.policy = policy
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.max_cached = max_cached
        self.cache_ttl = cache_ttl
        self.public_url = public_url.rstrip("/")
        self.registry: ContextRegistry = (
            registry if registry is not None else MemoryContextRegistry()
        )
        self.started_at = self._now()
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(policy, transport, resolver=resolver),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )
        self._maps: OrderedDict[tuple[str, bytes], _Built] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[tuple[JSONObject, float]]] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> ContextService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @staticmethod
    def _now() -> datetime:
        return datetime.now(UTC)

    # -- request @contexts ------------------------------------------------------------

    async def term_map(self, context: Any, *, tenant: str | None = None) -> TermMap:
        """The processed @context of a request (None: core only), fetching what it needs.

        LdContextNotAvailable when a remote document cannot be fetched; BadRequestData
        when the value or a fetched document is not a valid @context.
        """
        if context is None:
            return core_term_map()
        t = tenant or ""
        key = (t, canonical(context))
        now = self._now()
        built = self._maps.get(key)
        if built is not None and (built.expires_at is None or built.expires_at > now):
            self._maps.move_to_end(key)
        else:
            documents, ids, expires = await self._gather(context, t, now)
            built = _Built(build_term_map(context, documents), ids, expires)
            self._maps[key] = built
            while len(self._maps) > self.max_cached:
                self._maps.popitem(last=False)
        if built.entry_ids:
            self.registry.touch(t, built.entry_ids, now)
        return built.term_map

    async def _gather(
        self, context: Any, tenant: str, now: datetime
    ) -> tuple[dict[str, object], tuple[str, ...], datetime | None]:
        """Every document reachable from ``context``, breadth first, depth-capped."""
        documents: dict[str, object] = {}
        ids: list[str] = []
        expires: datetime | None = None
        refuse_scoped_contexts(context)  # refused anyway: do not fetch what it names
        level = [u for u in remote_urls(context) if not is_core_context_url(u)]
        for url in level:
            if not _split(url).scheme:
                raise BadRequestData(f"Invalid @context: {url!r} is not an absolute URL")
        seen = set(level)
        depth = 0
        while level:
            if depth >= self.max_depth:
                raise BadRequestData(
                    f"Invalid @context: more than {self.max_depth} levels of nested @context URLs"
                )
            results = await asyncio.gather(
                *(self._document(u, tenant, now) for u in level), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            following: list[str] = []
            for url, result in zip(level, results, strict=True):
                assert not isinstance(result, BaseException)
                entry = result
                documents[url] = entry.document
                ids.append(entry.local_id)
                refuse_scoped_contexts(entry.document.get("@context"), f" (in {url})")
                if entry.expires_at is not None and (expires is None or entry.expires_at < expires):
                    expires = entry.expires_at
                for ref in remote_urls(entry.document.get("@context")):
                    absolute = urljoin(url, ref)
                    if not is_core_context_url(absolute) and absolute not in seen:
                        seen.add(absolute)
                        following.append(absolute)
            level = following
            depth += 1
        return documents, tuple(ids), expires

    async def _document(self, url: str, tenant: str, now: datetime) -> ContextEntry:
        """The registry entry holding ``url``'s document, downloading it if needed."""
        local = self._local_entry(url, tenant)
        if local is not None:
            return local
        entry = self.registry.by_url(tenant, url)
        if entry is not None and (entry.expires_at is None or entry.expires_at > now):
            return entry
        try:
            document, ttl = await self._fetch_shared(url)
        except LdContextNotAvailable:
            if entry is None:
                raise
            # stale beats failing every request while the origin is down; retry later
            stale = replace(entry, expires_at=now + timedelta(seconds=_MIN_TTL))
            self.registry.put(tenant, stale)
            return stale
        fresh = ContextEntry(
            local_id=entry.local_id if entry else self._new_id(),
            kind="Cached",
            document=document,
            created_at=now,
            url=url,
            expires_at=now + timedelta(seconds=ttl),
            last_usage=entry.last_usage if entry else None,
            hits=entry.hits if entry else 0,
        )
        self.registry.put(tenant, fresh)
        if entry is not None:
            self._forget(tenant)
        self._evict(tenant)
        return fresh

    def _local_entry(self, url: str, tenant: str) -> ContextEntry | None:
        """A Hosted/ImplicitlyCreated entry addressed by its own URL (no self-fetch)."""
        path = _split(url).path
        marker = CONTEXTS_PATH + "/"
        if marker not in path:
            return None
        entry = self.registry.get(tenant, unquote(path.rsplit(marker, 1)[1]))
        return entry if entry is not None and entry.kind != "Cached" else None

    def _evict(self, tenant: str) -> None:
        cached = self.registry.entries(tenant, "Cached")
        if len(cached) <= self.max_cached:
            return
        cached.sort(key=lambda e: e.last_usage or e.created_at)
        for entry in cached[: len(cached) - self.max_cached]:
            self.registry.remove(tenant, entry.local_id)
        self._forget(tenant)

    def _forget(self, tenant: str) -> None:
        """Drop the tenant's processed contexts after a document changed or went away."""
        for key in [k for k in self._maps if k[0] == tenant]:
            del self._maps[key]

    async def _fetch_shared(self, url: str) -> tuple[JSONObject, float]:
        """One download per URL at a time, whoever asks (other requests await it)."""
        future = self._inflight.get(url)
        if future is None:
            future = asyncio.ensure_future(self._fetch(url))
            self._inflight[url] = future
            future.add_done_callback(lambda f: self._settled(url, f))
        return await asyncio.shield(future)

    def _settled(self, url: str, future: asyncio.Future[tuple[JSONObject, float]]) -> None:
        if self._inflight.get(url) is future:
            del self._inflight[url]
        if not future.cancelled():
            future.exception()  # retrieved: the awaiting requests report it

    async def _fetch(self, url: str) -> tuple[JSONObject, float]:
        """Download and check a context document; the TTL comes from Cache-Control."""
        body, cache_control = await self._download(url)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:  # reachable, but not a context (clause 5.5.6)
            raise BadRequestData(f"Invalid @context: {url} is not JSON ({exc})") from exc
        if not isinstance(document, dict) or "@context" not in document:
            raise BadRequestData(f"Invalid @context: {url} is not a JSON-LD context document")
        try:
            remote_urls(document.get("@context"))
        except BadRequestData as exc:
            raise BadRequestData(f"{exc.detail} (in {url})") from exc
        ttl = self.cache_ttl
        match = _MAX_AGE.search(cache_control or "")
        if match:
            ttl = min(max(float(match.group(1)), _MIN_TTL), _MAX_TTL)
        return document, ttl

    async def _download(self, url: str) -> tuple[bytes, str | None]:
        headers = {"Accept": _ACCEPT, "Accept-Encoding": "identity"}
        current = url
        try:
            async with asyncio.timeout(self.timeout):
                for _hop in range(MAX_REDIRECTS + 1):
                    async with self._client.stream("GET", current, headers=headers) as response:
                        location = response.headers.get("location")
                        if response.is_redirect and location:
                            current = str(httpx.URL(current).join(location))
                            continue
                        if not response.is_success:
                            raise _unavailable(url, f"HTTP status {response.status_code}")
                        declared = response.headers.get("content-length", "")
                        if declared.isdigit() and int(declared) > self.max_bytes:
                            raise _unavailable(url, f"larger than {self.max_bytes} bytes")
                        chunks: list[bytes] = []
                        size = 0
                        async for chunk in response.aiter_bytes():
                            size += len(chunk)
                            if size > self.max_bytes:
                                raise _unavailable(url, f"larger than {self.max_bytes} bytes")
                            chunks.append(chunk)
                        return b"".join(chunks), response.headers.get("cache-control")
        except TimeoutError as exc:
            raise _unavailable(url, f"no complete answer within {self.timeout:g} s") from exc
        except OutboundRefused as exc:
            raise _unavailable(url, exc.detail) from exc
        except httpx.HTTPError as exc:
            raise _unavailable(url, f"{type(exc).__name__}: {exc}") from exc
        raise _unavailable(url, f"more than {MAX_REDIRECTS} redirects")

    # -- the registry (clause 5.13) -----------------------------------------------------

    def url(self, local_id: str) -> str:
        """The URL serving a Hosted/ImplicitlyCreated entry (relative without public_url)."""
        return f"{self.public_url}{self.path(local_id)}"

    @staticmethod
    def path(local_id: str) -> str:
        """The broker-relative path of an entry, for Location headers (like /entities)."""
        return f"{CONTEXTS_PATH}/{quote(local_id, safe=':')}"

    def link_url(self, context: Any, *, tenant: str | None = None) -> str:
        """A URL a client can fetch ``context`` from, for Link headers and jsonldContext.

        A single URL (or a one-URL array) is itself; no context is the core; anything
        else is stored as an ImplicitlyCreated entry (one per distinct value and tenant).
        """
        if isinstance(context, list) and len(context) == 1 and isinstance(context[0], str):
            context = context[0]
        if context is None or context == []:
            return CORE_CONTEXT_URL
        if isinstance(context, str):
            return context
        t = tenant or ""
        key = canonical(context)
        entry = self.registry.by_key(t, key)
        if entry is None:
            validate_context(context)
            entry = ContextEntry(
                local_id=self._new_id(),
                kind="ImplicitlyCreated",
                document={"@context": copy.deepcopy(context)},
                created_at=self._now(),
                key=key,
            )
            self.registry.put(t, entry)
        return self.url(entry.local_id)

    async def add(self, document: Any, *, tenant: str | None = None) -> str:
        """Add @context (5.13.2): store a Hosted entry; returns its local id."""
        if not isinstance(document, dict) or "@context" not in document:
            raise InvalidRequest("The payload must be a JSON object with an @context member")
        context = document["@context"]
        if context is None:
            raise BadRequestData("Invalid @context: null")
        validate_context(context)
        entry = ContextEntry(
            local_id=self._new_id(),
            kind="Hosted",
            document={"@context": copy.deepcopy(context)},  # other members are discarded
            created_at=self._now(),
        )
        self.registry.put(tenant or "", entry)
        return entry.local_id

    async def list(
        self, *, details: bool = False, kind: str | None = None, tenant: str | None = None
    ) -> builtins.list[Any]:
        """List @contexts (5.13.3): URLs, or detail objects, optionally of one kind."""
        if kind is not None and kind not in KINDS:
            raise BadRequestData(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        found = sorted(self.registry.entries(tenant or "", kind), key=lambda e: e.created_at)
        if kind in (None, "Cached"):
            found.insert(0, self._core_entry())
        return [self._details(e) if details else self._entry_url(e) for e in found]

    async def get(
        self, id_or_url: str, *, details: bool = False, tenant: str | None = None
    ) -> JSONObject:
        """Serve @context (5.13.4): a Hosted/ImplicitlyCreated document, or any details."""
        t = tenant or ""
        entry = self._find(id_or_url, t)
        if entry is None:
            raise ResourceNotFound(f"No @context {id_or_url}")
        if details:
            described = self._details(entry)  # as found: this lookup is counted after
            self.registry.touch(t, [entry.local_id], self._now())
            return described
        if entry.kind == "Cached":
            raise OperationNotSupported(
                f"@context {id_or_url} is a Cached copy; only its details can be served"
            )
        self.registry.touch(t, [entry.local_id], self._now())
        return copy.deepcopy(entry.document)

    async def delete(
        self, id_or_url: str, *, reload: bool = False, tenant: str | None = None
    ) -> None:
        """Delete and Reload @context (5.13.5)."""
        if not id_or_url:
            raise BadRequestData("A @context identifier is required")
        t = tenant or ""
        entry = self._find(id_or_url, t)
        if entry is not None and entry.local_id == CORE_LOCAL_ID:
            if reload:
                return  # built in, never downloaded: nothing to reload
            raise BadRequestData("The core @context cannot be deleted")
        if reload:
            if entry is None or entry.kind != "Cached" or not entry.url:
                raise BadRequestData(f"Only a Cached @context can be reloaded: {id_or_url}")
            await self._reload(entry, t)
            return
        if entry is None:
            raise ResourceNotFound(f"No @context {id_or_url}")
        self.registry.remove(t, entry.local_id)
        self._forget(t)

    async def _reload(self, entry: ContextEntry, tenant: str) -> None:
        """Re-download a Cached entry; on any failure keep the old copy (5.13.5.4)."""
        assert entry.url is not None
        try:
            document, ttl = await self._fetch(entry.url)
            validate_context(document.get("@context", {}))
        except BadRequestData as exc:
            raise _unavailable(entry.url, f"the new document is invalid: {exc.detail}") from exc
        now = self._now()
        expires = now + timedelta(seconds=ttl)
        self.registry.put(
            tenant, replace(entry, document=document, created_at=now, expires_at=expires)
        )
        self._forget(tenant)

    def _find(self, id_or_url: str, tenant: str) -> ContextEntry | None:
        if id_or_url == CORE_LOCAL_ID or is_core_context_url(id_or_url):
            return self._core_entry()
        return (
            self.registry.get(tenant, id_or_url)
            or self.registry.by_url(tenant, id_or_url)
            or self._local_entry(id_or_url, tenant)
        )

    def _core_entry(self) -> ContextEntry:
        return ContextEntry(
            local_id=CORE_LOCAL_ID,
            kind="Cached",
            document=core_context_document(),
            created_at=self.started_at,
            url=CORE_CONTEXT_URL,
        )

    def _entry_url(self, entry: ContextEntry) -> str:
        return entry.url if entry.kind == "Cached" and entry.url else self.url(entry.local_id)

    def _details(self, entry: ContextEntry) -> JSONObject:
        out: JSONObject = {
            "URL": self._entry_url(entry),
            "localId": entry.local_id,
            "kind": entry.kind,
            "createdAt": _iso(entry.created_at),
        }
        if entry.expires_at is not None:
            out["expiresAt"] = _iso(entry.expires_at)
        if entry.local_id == CORE_LOCAL_ID:
            out["extraInfo"] = {"builtIn": True}
            return out
        if entry.last_usage is not None:
            out["lastUsage"] = _iso(entry.last_usage)
        out["numberOfHits"] = entry.hits
        return out

    @staticmethod
    def _new_id() -> str:
        return f"urn:ngsi-ld:jsonldContext:{uuid.uuid4()}"
