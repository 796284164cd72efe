"""The storage interface every backend implements.

Services compute new entity states with ``core.operations`` and hand the stores whole
documents; stores keep them, index them and select them. A batch of writes is atomic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, TypeVar

from urbanos.core.selection import EntityQuery
from urbanos.types import JSONObject

DEFAULT_TENANT = ""
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Write:
    """One entity write: ``put`` stores the document (insert or replace), ``delete`` removes it.

    ``before`` is the state it replaces (None for a creation): history and notifications
    are derived from the pair, in the same transaction as the write.
    """

    op: Literal["put", "delete"]
    entity_id: str
    entity: JSONObject | None = None
    before: JSONObject | None = None


#: decides the writes from the current documents of the ids asked for (absent ids are
#: missing from the mapping); runs inside the store's transaction, so it must be pure
Plan = Callable[[dict[str, JSONObject]], tuple[list[Write], T]]


@dataclass(frozen=True, slots=True)
class Page:
    entities: list[JSONObject]
    total: int | None = None


@dataclass(frozen=True, slots=True)
class TypeInfo:
    type: str
    count: int
    attributes: dict[str, set[str]]  # attribute IRI -> attribute kinds seen


@dataclass(frozen=True, slots=True)
class AttributeInfo:
    attr: str
    count: int  # entities that have it
    kinds: set[str]
    types: set[str]  # entity types that have it


def type_infos(entities: Iterable[JSONObject]) -> list[TypeInfo]:
    """/types details (clause 5.7.5) of documents held in memory: the memory store's, and
    what a caller who may see only some entities is told."""
    infos: dict[str, TypeInfo] = {}
    for entity in entities:
        for t in entity.get("type", []):
            info = infos.setdefault(t, TypeInfo(t, 0, {}))
            infos[t] = TypeInfo(t, info.count + 1, info.attributes)
            for name, instances in entity["attrs"].items():
                kinds = info.attributes.setdefault(name, set())
                kinds.update(i.get("type", "Property") for i in instances)
    return list(infos.values())


def attribute_infos(entities: Iterable[JSONObject]) -> list[AttributeInfo]:
    """/attributes details (clause 5.7.8) of documents held in memory, as ``type_infos``."""
    infos: dict[str, AttributeInfo] = {}
    for entity in entities:
        for name, instances in entity["attrs"].items():
            info = infos.get(name) or AttributeInfo(name, 0, set(), set())
            info.kinds.update(i.get("type", "Property") for i in instances)
            info.types.update(entity.get("type", []))
            infos[name] = AttributeInfo(name, info.count + 1, info.kinds, info.types)
    return list(infos.values())


@dataclass(frozen=True, slots=True)
class ContextEntry:
    """One @context of the /jsonldContexts registry (clause 5.13); ``document`` is the whole
    JSON document ({"@context": ...}), ``kind`` Hosted, Cached or ImplicitlyCreated."""

    local_id: str
    kind: str
    document: JSONObject
    created_at: datetime
    url: str | None = None  # where a Cached entry was downloaded from
    expires_at: datetime | None = None
    last_usage: datetime | None = None
    hits: int = 0
    key: bytes | None = None  # canonical @context of an ImplicitlyCreated entry


@dataclass(frozen=True, slots=True)
class ContextUse:
    """Uses of one entry counted by a node since its last flush (added, never replaced)."""

    tenant: str
    local_id: str
    hits: int
    last_usage: datetime


class ContextStore(Protocol):
    """The /jsonldContexts registry of every tenant, shared by the nodes of one database.

    Hosted and ImplicitlyCreated entries never change once added; a Cached entry is kept
    per download URL, so two nodes downloading the same URL share one entry.
    """

    async def load(self, tenant: str | None = None) -> list[tuple[str, ContextEntry]]:
        """(tenant, entry) for every entry of ``tenant`` (of all tenants with None)."""
        ...

    async def get(self, tenant: str, local_id: str) -> ContextEntry | None: ...

    async def add(self, tenant: str, entry: ContextEntry) -> None:
        """Store a new Hosted or ImplicitlyCreated entry."""
        ...

    async def cache(self, tenant: str, entry: ContextEntry) -> ContextEntry:
        """Store a downloaded (Cached) document: a new entry, or the document, created_at
        and expires_at of the entry already kept for its URL. Returns the stored entry,
        whose id and counts may be another node's."""
        ...

    async def delete(self, tenant: str, local_id: str) -> bool: ...

    async def count_uses(self, uses: list[ContextUse]) -> None:
        """Add hits and move lastUsage forward; unknown entries are skipped."""
        ...


class EntityStore(Protocol):
    @property
    def contexts(self) -> ContextStore:
        """The @context registry kept beside the entities."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool: ...

    async def tenant_exists(self, tenant: str) -> bool: ...

    async def get(self, tenant: str, entity_id: str) -> JSONObject | None: ...

    async def get_many(self, tenant: str, ids: list[str]) -> dict[str, JSONObject]: ...

    async def apply(self, tenant: str, writes: list[Write]) -> None:
        """Apply all writes in one transaction; creates the tenant on its first write."""
        ...

    async def modify(self, tenant: str, ids: list[str], plan: Plan[T]) -> T:
        """Read ``ids``, let ``plan`` decide the writes, apply them: one atomic step, so
        concurrent read-modify-writes never lose an update. ``plan``'s errors roll back."""
        ...

    async def query(self, tenant: str, query: EntityQuery) -> Page: ...

    async def types(self, tenant: str) -> list[TypeInfo]: ...

    async def attributes(self, tenant: str) -> list[AttributeInfo]: ...

    async def expiring(self, now: str, limit: int) -> list[tuple[str, str]]:
        """(tenant, id) of at most ``limit`` entities whose ``core.expiry.EXPIRY_KEY`` is
        at or before ``now`` (canonical), earliest first, over every tenant."""
        ...

    async def try_lead(self, name: str) -> bool:
        """Whether this node leads the cluster-wide job ``name`` (one node fires it). Ask
        before every run: leadership moves to another node when its holder dies."""
        ...
