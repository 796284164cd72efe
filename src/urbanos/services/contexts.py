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
  A download that fails (unreachable, error status, not a context) is remembered for
  ``failure_ttl`` seconds: requests needing that URL meanwhile fail at once with the
  same error instead of each waiting for the origin again.
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

What is stored (``storage.base.ContextStore``), so that the nodes of one database act as
one registry and a restart forgets nothing a client may rely on:

* Hosted and ImplicitlyCreated entries, written before their URL is handed out (``add``
  and ``link_url`` return once the store has committed them): clients and stored
  subscriptions (``jsonldContext``) keep these URLs and fetch them from any node, later;
* Cached entries (document, download URL, expiry): one listing on every node, a Delete
  or Reload on one node holds for all, a copy one node downloaded serves the others
  while it is fresh, and a stale copy outlives a restart while its origin is down;
* deletions, which is why List, Serve and Delete read the store, not the cache.

``numberOfHits`` and ``lastUsage`` change on every request that uses an entry: writing them
each time would turn every read into a write, so each node counts in memory and adds its
counts to the stored ones every ``flush_interval`` seconds (and when it stops). Details add
the node's unflushed counts to the stored ones: a node's own counts are exact, the other
nodes' lag by at most the interval, and a crash loses at most that interval of counts.

Each node keeps a cache of the entries (the per-request lookups are synchronous: by URL,
by content, hit counting) and of the processed TermMaps. A write on this node updates its
cache; another node's write reaches it through ``invalidate(tenant)`` (PostgreSQL
LISTEN/NOTIFY), which reloads the tenant's entries and drops its TermMaps. Loads follow the
one rule of every cache (``services.cluster``): what was read while an entry of the tenant
changed, here or elsewhere, is not installed but read again. The "retry a
minute later" mark on a stale Cached entry stays in the node's cache only.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import functools
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
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
    NgsiLdError,
    OperationNotSupported,
    ResourceNotFound,
)
from urbanos.outbound import (
    FetchFailed,
    GuardedTransport,
    OutboundPolicy,
    Resolver,
    fetch_limited,
)
from urbanos.services.cluster import Generations
from urbanos.storage.base import ContextEntry, ContextStore, ContextUse
from urbanos.storage.memory import MemoryContextStore
from urbanos.types import JSONObject

__all__ = [
    "CONTEXTS_PATH",
    "CORE_LOCAL_ID",
    "KINDS",
    "ContextEntry",
    "ContextService",
    "RegistryCache",
]

log = logging.getLogger("urbanos.contexts")

CONTEXTS_PATH = "/ngsi-ld/v1/jsonldContexts"
CORE_LOCAL_ID = "urn:ngsi-ld:jsonldContext:core"
_ID_PREFIX = "urn:ngsi-ld:jsonldContext:"
KINDS = ("Hosted", "Cached", "ImplicitlyCreated")
MAX_REDIRECTS = 3
_ACCEPT = "application/ld+json, application/json;q=0.9"
_MAX_AGE = re.compile(r"max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_MIN_TTL, _MAX_TTL = 60.0, 30 * 86400.0


class RegistryCache:
    """This node's cache of the registry, per tenant ("" is the default tenant): the
    lookups every request makes, without a round trip to the store."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, ContextEntry]] = {}
        self._urls: dict[str, dict[str, str]] = {}
        self._keys: dict[bytes, dict[str, str]] = {}

    def put(self, tenant: str, entry: ContextEntry) -> None:
        self.remove(tenant, entry.local_id)
        if entry.kind == "Cached" and entry.url:  # one per URL: the stored one wins
            self.remove(tenant, self._urls.get(tenant, {}).get(entry.url, ""))
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

    def reset(self, tenant: str | None, rows: Iterable[tuple[str, ContextEntry]]) -> None:
        """Replace the entries of ``tenant`` (of every tenant with None) by ``rows``."""
        for t in [tenant] if tenant is not None else builtins.list(self._entries):
            for entry in self.entries(t):
                self.remove(t, entry.local_id)
        for t, entry in rows:
            self.put(t, entry)

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


def _issued(local_id: str) -> bool:
    """Whether ``local_id`` may be one this registry gave out (``_new_id``): anything else,
    a NUL byte that PostgreSQL text refuses included, is not looked for in the store."""
    return local_id.startswith(_ID_PREFIX) and "\x00" not in local_id


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
        store: ContextStore | None = None,
        public_url: str = "",
        cache_ttl: float = 86400.0,
        flush_interval: float = 5.0,
        failure_ttl: float = 10.0,
    ) -> None:
        """``store`` keeps the registry (in memory without one); call ``open`` to load it."""
        self.policy = policy
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.max_cached = max_cached
        self.cache_ttl = cache_ttl
        self.public_url = public_url.rstrip("/")
        self.store: ContextStore = store if store is not None else MemoryContextStore()
        self.registry = RegistryCache()
        self.flush_interval = flush_interval
        self._uses: dict[tuple[str, str], tuple[int, datetime]] = {}  # not yet flushed
        self._generations = Generations()  # bumped by every change: see _refresh
        self._tasks: set[asyncio.Future[None]] = set()  # refreshes
        #: ImplicitlyCreated entries being stored, by (tenant, canonical context)
        self._adding: dict[tuple[str, bytes], asyncio.Future[ContextEntry]] = {}
        self.started_at = self._now()
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(policy, transport, resolver=resolver),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )
        self._maps: OrderedDict[tuple[str, bytes], _Built] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[tuple[JSONObject, float]]] = {}
        self.failure_ttl = failure_ttl
        #: URL -> (monotonic time until which its failure stands, the error), oldest first
        self._failures: OrderedDict[str, tuple[float, NgsiLdError]] = OrderedDict()

    async def open(self) -> None:
        """Load the stored entries of every tenant into the cache (once the changes of
        other nodes are heard: ``services.cluster``)."""
        self._generations.bump(None)
        await self._refresh(None)

    async def aclose(self) -> None:
        """Finish the background work and flush the counts (the store must still be open)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.flush()
        except Exception:  # noqa: BLE001 - closing goes on; the counts are lost, say so
            log.exception("@context registry: the last use counts could not be stored")
        await self._client.aclose()

    # -- sharing with the other nodes -------------------------------------------------

    def invalidate(self, tenant: str | None) -> None:
        """Another node changed the entries of ``tenant`` (None: of any tenant): reload
        them in the background and drop the TermMaps built from the old ones."""
        self._generations.bump(tenant)
        self._forget(tenant)
        self._later(self._refresh(tenant))

    async def _refresh(self, tenant: str | None) -> None:
        """Replace the cached entries of ``tenant`` (None: of all) by the stored ones."""
        while True:
            token = self._generations.token()
            rows = await self.store.load(tenant)
            if self._generations.fresh(token, tenant):
                break  # else a change meanwhile may be missing from what was read
        self.registry.reset(tenant, rows)
        self._forget(tenant)  # maps built while the reload ran used the old entries

    def _later(self, work: Awaitable[None]) -> None:
        """Run ``work`` in the background; ``aclose`` waits for it, failures are logged."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("@context registry: background work failed", exc_info=task.exception())

    def _cached(self, tenant: str, entry: ContextEntry) -> None:
        """Record a change this node made (and stored) in its cache."""
        self.registry.put(tenant, entry)
        self._generations.bump(tenant)

    def _count(self, tenant: str, local_ids: tuple[str, ...] | list[str], when: datetime) -> None:
        """One use of each entry: in the cache now, in the store at the next ``flush``."""
        self.registry.touch(tenant, local_ids, when)
        for local_id in local_ids:
            hits, _ = self._uses.get((tenant, local_id), (0, when))
            self._uses[(tenant, local_id)] = (hits + 1, when)

    def _counted(self, tenant: str, entry: ContextEntry) -> ContextEntry:
        """A stored entry with this node's counts not flushed yet."""
        hits, when = self._uses.get((tenant, entry.local_id), (0, None))
        if not hits or when is None:
            return entry
        last = max(when, entry.last_usage) if entry.last_usage else when
        return replace(entry, hits=entry.hits + hits, last_usage=last)

    async def flush(self) -> None:
        """Add the counts of this node to the stored ones."""
        uses, self._uses = self._uses, {}
        if not uses:
            return
        try:
            await self.store.count_uses(
                [ContextUse(t, i, hits, when) for (t, i), (hits, when) in uses.items()]
            )
        except BaseException:
            for key, (hits, when) in uses.items():  # kept for the next flush
                more, later = self._uses.get(key, (0, when))
                self._uses[key] = (hits + more, max(when, later))
            raise

    async def run_flush(self) -> None:
        """The worker loop: ``flush`` every ``flush_interval`` seconds."""
        while True:
            await asyncio.sleep(self.flush_interval)
            await self.flush()

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
            self._count(t, built.entry_ids, now)
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
        local = await self._local_entry(url, tenant)
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
        fresh = await self.store.cache(tenant, fresh)  # may be another node's entry
        self._cached(tenant, fresh)
        if entry is not None:
            self._forget(tenant)
        await self._evict(tenant)
        return fresh

    async def _local_entry(self, url: str, tenant: str) -> ContextEntry | None:
        """A Hosted/ImplicitlyCreated entry addressed by its own URL (no self-fetch); one
        this node has not seen yet (just added on another) is read from the store."""
        path = _split(url).path
        marker = CONTEXTS_PATH + "/"
        if marker not in path:
            return None
        local_id = unquote(path.rsplit(marker, 1)[1])
        entry = self.registry.get(tenant, local_id)
        if entry is None and _issued(local_id):
            entry = await self.store.get(tenant, local_id)
            if entry is not None and entry.kind != "Cached":
                self._cached(tenant, entry)
        return entry if entry is not None and entry.kind != "Cached" else None

    async def _evict(self, tenant: str) -> None:
        cached = self.registry.entries(tenant, "Cached")
        if len(cached) <= self.max_cached:
            return
        cached.sort(key=lambda e: e.last_usage or e.created_at)
        for entry in cached[: len(cached) - self.max_cached]:
            await self.store.delete(tenant, entry.local_id)
            self.registry.remove(tenant, entry.local_id)
        self._generations.bump(tenant)
        self._forget(tenant)

    def _forget(self, tenant: str | None) -> None:
        """Drop the processed contexts of ``tenant`` (of all with None) after a document
        changed or went away."""
        if tenant is None:
            self._maps.clear()
            return
        for key in [k for k in self._maps if k[0] == tenant]:
            del self._maps[key]

    async def _fetch_shared(self, url: str) -> tuple[JSONObject, float]:
        """One download per URL at a time, whoever asks (other requests await it); a URL
        whose download failed less than ``failure_ttl`` seconds ago fails again at once."""
        failed = self._failures.get(url)
        if failed is not None:
            until, error = failed
            if time.monotonic() < until:
                raise type(error)(error.detail, **error.extra)
            del self._failures[url]
        future = self._inflight.get(url)
        if future is None:
            future = asyncio.ensure_future(self._fetch(url))
            self._inflight[url] = future
            future.add_done_callback(lambda f: self._settled(url, f))
        return await asyncio.shield(future)

    def _settled(self, url: str, future: asyncio.Future[tuple[JSONObject, float]]) -> None:
        if self._inflight.get(url) is future:
            del self._inflight[url]
        if future.cancelled():
            return
        error = future.exception()  # retrieved: the awaiting requests report it
        if isinstance(error, NgsiLdError) and self.failure_ttl > 0:
            self._failures[url] = (time.monotonic() + self.failure_ttl, error)
            self._failures.move_to_end(url)
            while len(self._failures) > self.max_cached:
                self._failures.popitem(last=False)

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
        try:
            body, headers = await fetch_limited(
                self._client, url, headers={"Accept": _ACCEPT, "Accept-Encoding": "identity"},
                timeout=self.timeout, max_bytes=self.max_bytes, max_redirects=MAX_REDIRECTS)
        except FetchFailed as exc:
            raise _unavailable(url, exc.reason) from exc
        return body, headers.get("cache-control")

    # -- the registry (clause 5.13) -----------------------------------------------------

    def url(self, local_id: str) -> str:
        """The URL serving a Hosted/ImplicitlyCreated entry (relative without public_url)."""
        return f"{self.public_url}{self.path(local_id)}"

    @staticmethod
    def path(local_id: str) -> str:
        """The broker-relative path of an entry, for Location headers (like /entities)."""
        return f"{CONTEXTS_PATH}/{quote(local_id, safe=':')}"

    async def link_url(self, context: Any, *, tenant: str | None = None) -> str:
        """A URL a client can fetch ``context`` from, for Link headers and jsonldContext.

        A single URL (or a one-URL array) is itself; no context is the core; anything
        else is stored as an ImplicitlyCreated entry (one per distinct value and tenant),
        committed before its URL is returned, so whoever is given the URL can fetch it
        from any node, also after a crash.
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
            adding = self._adding.get((t, key))
            if adding is None:  # the first request with this context stores it
                validate_context(context)
                adding = asyncio.ensure_future(self._add_implicit(t, key, context))
                self._adding[(t, key)] = adding
                adding.add_done_callback(functools.partial(self._added, (t, key)))
            entry = await asyncio.shield(adding)  # the others wait for the same entry
        return self.url(entry.local_id)

    def _added(self, key: tuple[str, bytes], future: asyncio.Future[ContextEntry]) -> None:
        if self._adding.get(key) is future:
            del self._adding[key]
        if not future.cancelled():
            future.exception()  # retrieved: the awaiting requests report it

    async def _add_implicit(self, tenant: str, key: bytes, context: Any) -> ContextEntry:
        entry = ContextEntry(
            local_id=self._new_id(),
            kind="ImplicitlyCreated",
            document={"@context": copy.deepcopy(context)},
            created_at=self._now(),
            key=key,
        )
        await self.store.add(tenant, entry)
        self._cached(tenant, entry)
        return entry

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
        await self.store.add(tenant or "", entry)
        self._cached(tenant or "", entry)
        return entry.local_id

    async def list(
        self, *, details: bool = False, kind: str | None = None, tenant: str | None = None
    ) -> builtins.list[Any]:
        """List @contexts (5.13.3): URLs, or detail objects, optionally of one kind."""
        if kind is not None and kind not in KINDS:
            raise BadRequestData(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        t = tenant or ""
        stored = [self._counted(t, e) for _, e in await self.store.load(t)]
        found = sorted((e for e in stored if kind is None or e.kind == kind),
                       key=lambda e: e.created_at)
        if kind in (None, "Cached"):
            found.insert(0, self._core_entry())
        return [self._details(e) if details else self._entry_url(e) for e in found]

    async def get(
        self, id_or_url: str, *, details: bool = False, tenant: str | None = None
    ) -> JSONObject:
        """Serve @context (5.13.4): a Hosted/ImplicitlyCreated document, or any details."""
        t = tenant or ""
        entry = await self._find(id_or_url, t)
        if entry is None:
            raise ResourceNotFound(f"No @context {id_or_url}")
        if details:
            described = self._details(self._counted(t, entry))  # this lookup counts after
            self._count(t, [entry.local_id], self._now())
            return described
        if entry.kind == "Cached":
            raise OperationNotSupported(
                f"@context {id_or_url} is a Cached copy; only its details can be served"
            )
        self._count(t, [entry.local_id], self._now())
        return copy.deepcopy(entry.document)

    async def delete(
        self, id_or_url: str, *, reload: bool = False, tenant: str | None = None
    ) -> None:
        """Delete and Reload @context (5.13.5)."""
        if not id_or_url:
            raise BadRequestData("A @context identifier is required")
        t = tenant or ""
        entry = await self._find(id_or_url, t)
        if entry is not None and entry.local_id == CORE_LOCAL_ID:
            if reload:
                return  # built in, never downloaded: nothing to reload
            raise BadRequestData("The core @context cannot be deleted")
        if reload:
            if entry is None or entry.kind != "Cached" or not entry.url:
                raise BadRequestData(f"Only a Cached @context can be reloaded: {id_or_url}")
            await self._reload(entry, t)
            return
        if entry is None or not await self.store.delete(t, entry.local_id):
            raise ResourceNotFound(f"No @context {id_or_url}")
        self.registry.remove(t, entry.local_id)
        self._generations.bump(t)
        self._forget(t)

    async def _reload(self, entry: ContextEntry, tenant: str) -> None:
        """Re-download a Cached entry; on any failure keep the old copy (5.13.5.4)."""
        assert entry.url is not None
        try:
            document, ttl = await self._fetch(entry.url)
            validate_context(document.get("@context", {}))
        except BadRequestData as exc:
            raise _unavailable(entry.url, f"the new document is invalid: {exc.detail}") from exc
        self._failures.pop(entry.url, None)  # reachable again
        now = self._now()
        expires = now + timedelta(seconds=ttl)
        stored = await self.store.cache(
            tenant, replace(entry, document=document, created_at=now, expires_at=expires)
        )
        self._cached(tenant, stored)
        self._forget(tenant)

    async def _find(self, id_or_url: str, tenant: str) -> ContextEntry | None:
        """The stored entry with this id, download URL or own URL: read from the store,
        so a change made on another node a moment ago already counts."""
        if id_or_url == CORE_LOCAL_ID or is_core_context_url(id_or_url):
            return self._core_entry()
        entry = await self.store.get(tenant, id_or_url) if _issued(id_or_url) else None
        if entry is not None:
            return entry
        cached = self.registry.by_url(tenant, id_or_url)
        if cached is not None:
            return await self.store.get(tenant, cached.local_id)
        return await self._local_entry(id_or_url, tenant)

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
        return f"{_ID_PREFIX}{uuid.uuid4()}"
