"""The reference store: dicts in memory. Unit tests use it as the fake of the interface."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace

from urbanos.core.expiry import EXPIRY_KEY
from urbanos.core.selection import EntityQuery, select_page
from urbanos.storage.base import (
    DEFAULT_TENANT,
    AttributeInfo,
    ContextEntry,
    ContextUse,
    Page,
    Plan,
    T,
    TypeInfo,
    Write,
    attribute_infos,
    type_infos,
)
from urbanos.types import JSONObject


class MemoryContextStore:
    """The @context registry in a dict: one process, so nothing to share."""

    def __init__(self) -> None:
        self._tenants: dict[str, dict[str, ContextEntry]] = {}

    async def load(self, tenant: str | None = None) -> list[tuple[str, ContextEntry]]:
        tenants = [tenant] if tenant is not None else list(self._tenants)
        return [(t, e) for t in tenants for e in self._tenants.get(t, {}).values()]

    async def get(self, tenant: str, local_id: str) -> ContextEntry | None:
        return self._tenants.get(tenant, {}).get(local_id)

    async def add(self, tenant: str, entry: ContextEntry) -> None:
        self._tenants.setdefault(tenant, {})[entry.local_id] = entry

    async def cache(self, tenant: str, entry: ContextEntry) -> ContextEntry:
        table = self._tenants.setdefault(tenant, {})
        kept = next(
            (e for e in table.values() if e.kind == "Cached" and e.url == entry.url), None
        )
        if kept is not None:
            entry = replace(kept, document=entry.document, created_at=entry.created_at,
                            expires_at=entry.expires_at)
        table[entry.local_id] = entry
        return entry

    async def delete(self, tenant: str, local_id: str) -> bool:
        return self._tenants.get(tenant, {}).pop(local_id, None) is not None

    async def count_uses(self, uses: list[ContextUse]) -> None:
        for use in uses:
            table = self._tenants.get(use.tenant, {})
            entry = table.get(use.local_id)
            if entry is not None:
                last = max(filter(None, (entry.last_usage, use.last_usage)))
                table[use.local_id] = replace(entry, hits=entry.hits + use.hits, last_usage=last)


class MemoryStore:
    def __init__(self) -> None:
        self._tenants: dict[str, dict[str, JSONObject]] = {DEFAULT_TENANT: {}}
        self.contexts = MemoryContextStore()
        #: called after each applied batch of writes (history, outbox), like the SQL
        #: stores' in-transaction hooks
        self.write_hooks: list[Callable[[str, list[Write]], None]] = []

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def try_lead(self, name: str) -> bool:
        return True  # one process: it leads everything

    async def tenant_exists(self, tenant: str) -> bool:
        return tenant in self._tenants

    async def get(self, tenant: str, entity_id: str) -> JSONObject | None:
        found = self._tenants.get(tenant, {}).get(entity_id)
        return copy.deepcopy(found) if found is not None else None

    async def get_many(self, tenant: str, ids: list[str]) -> dict[str, JSONObject]:
        table = self._tenants.get(tenant, {})
        return {i: copy.deepcopy(table[i]) for i in ids if i in table}

    async def apply(self, tenant: str, writes: list[Write]) -> None:
        if not writes:
            return
        table = self._tenants.setdefault(tenant, {})
        for w in writes:
            if w.op == "put":
                assert w.entity is not None
                table[w.entity_id] = copy.deepcopy(w.entity)
            else:
                table.pop(w.entity_id, None)
        for hook in self.write_hooks:
            hook(tenant, writes)

    async def modify(self, tenant: str, ids: list[str], plan: Plan[T]) -> T:
        table = self._tenants.get(tenant, {})
        current = {i: copy.deepcopy(table[i]) for i in ids if i in table}
        writes, result = plan(current)  # no await in between: atomic on the event loop
        await self.apply(tenant, writes)
        return result

    async def query(self, tenant: str, query: EntityQuery) -> Page:
        table = self._tenants.get(tenant, {})
        page, total = select_page(table.values(), query, table.get)
        return Page([copy.deepcopy(e) for e in page], total)

    async def expiring(self, now: str, limit: int) -> list[tuple[str, str]]:
        due = sorted(
            (at, tenant, eid)
            for tenant, table in self._tenants.items()
            for eid, e in table.items()
            if isinstance(at := e.get(EXPIRY_KEY), str) and at <= now
        )
        return [(tenant, eid) for _, tenant, eid in due[:limit]]

    async def types(self, tenant: str) -> list[TypeInfo]:
        return type_infos(self._tenants.get(tenant, {}).values())

    async def attributes(self, tenant: str) -> list[AttributeInfo]:
        return attribute_infos(self._tenants.get(tenant, {}).values())
