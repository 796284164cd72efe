"""Entity operations (clauses 5.6 and 5.7) over a store.

Endpoints hand in entities already expanded to the stored form; this module decides what
the new state is (``core.operations``), writes it, and raises the spec's errors. Writes to
one tenant are serialised by a lock so that read-modify-write never loses an update.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from urbanos.core import operations as ops
from urbanos.core.query.ast import TypeExpr
from urbanos.core.query.evaluate import matches_type
from urbanos.core.selection import EntityQuery
from urbanos.core.timeutil import now_iso
from urbanos.errors import (
    AlreadyExists,
    BadRequestData,
    NgsiLdError,
    NonexistentTenant,
    ResourceNotFound,
)
from urbanos.storage.base import AttributeInfo, EntityStore, Page, TypeInfo, Write
from urbanos.types import JSONObject


@dataclass(slots=True)
class BatchResult:
    """BatchOperationResult (clause 5.2.16): ids that succeeded, errors per entity."""

    success: list[str] = field(default_factory=list)
    errors: list[tuple[str | None, NgsiLdError]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


class EntityService:
    def __init__(self, store: EntityStore, clock: Callable[[], str] = now_iso) -> None:
        self.store = store
        self.clock = clock
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # -- reads -----------------------------------------------------------------------------
    async def check_tenant(self, tenant: str) -> None:
        if not await self.store.tenant_exists(tenant):
            raise NonexistentTenant(f"tenant {tenant!r} does not exist")

    async def retrieve(self, tenant: str, entity_id: str) -> JSONObject:
        await self.check_tenant(tenant)
        entity = await self.store.get(tenant, entity_id)
        if entity is None:
            raise ResourceNotFound(f"entity {entity_id} not found")
        return entity

    async def query(self, tenant: str, query: EntityQuery) -> Page:
        await self.check_tenant(tenant)
        return await self.store.query(tenant, query)

    async def types(self, tenant: str) -> list[TypeInfo]:
        await self.check_tenant(tenant)
        return await self.store.types(tenant)

    async def attributes(self, tenant: str) -> list[AttributeInfo]:
        await self.check_tenant(tenant)
        return await self.store.attributes(tenant)

    # -- single-entity writes --------------------------------------------------------------
    async def create(self, tenant: str, entity: JSONObject) -> None:
        async with self._locks[tenant]:
            if await self.store.get(tenant, entity["id"]) is not None:
                raise AlreadyExists(f"entity {entity['id']} already exists")
            await self.store.apply(tenant, [Write("put", entity["id"], entity)])

    async def delete(
        self, tenant: str, entity_id: str, *, type_gate: TypeExpr | None = None
    ) -> None:
        async with self._locks[tenant]:
            await self._target(tenant, entity_id, type_gate)
            await self.store.apply(tenant, [Write("delete", entity_id)])

    async def replace(self, tenant: str, entity_id: str, new: JSONObject) -> None:
        async with self._locks[tenant]:
            old = await self.retrieve(tenant, entity_id)
            out = ops.replace_entity(old, new, self.clock())
            await self.store.apply(tenant, [Write("put", entity_id, out)])

    async def merge(self, tenant: str, entity_id: str, fragment: JSONObject) -> None:
        async with self._locks[tenant]:
            old = await self.retrieve(tenant, entity_id)
            result = ops.merge_entity(old, fragment, self.clock())
            await self.store.apply(tenant, [Write("put", entity_id, result.entity)])

    async def _target(
        self, tenant: str, entity_id: str, type_gate: TypeExpr | None
    ) -> JSONObject:
        """The entity a write aims at; a ``type`` selector that it fails means 404."""
        entity = await self.retrieve(tenant, entity_id)
        if type_gate is not None and not matches_type(type_gate, entity.get("type", [])):
            raise ResourceNotFound(f"entity {entity_id} is not of the requested type")
        return entity

    async def append(
        self, tenant: str, entity_id: str, attrs: ops.Attrs, *, no_overwrite: bool,
        types: list[str] | None = None, scope: list[str] | None = None,
        type_gate: TypeExpr | None = None,
    ) -> ops.Outcome:
        async with self._locks[tenant]:
            old = await self._target(tenant, entity_id, type_gate)
            result = ops.append_attrs(
                old, attrs, self.clock(), no_overwrite=no_overwrite, types=types, scope=scope
            )
            await self.store.apply(tenant, [Write("put", entity_id, result.entity)])
            return result

    async def update(
        self, tenant: str, entity_id: str, attrs: ops.Attrs, *,
        types: list[str] | None = None, scope: list[str] | None = None,
        type_gate: TypeExpr | None = None,
    ) -> ops.Outcome:
        async with self._locks[tenant]:
            old = await self._target(tenant, entity_id, type_gate)
            result = ops.update_attrs(old, attrs, self.clock(), types=types, scope=scope)
            await self.store.apply(tenant, [Write("put", entity_id, result.entity)])
            return result

    async def patch_attr(
        self, tenant: str, entity_id: str, name: str, instances: list[JSONObject], *,
        type_gate: TypeExpr | None = None,
    ) -> None:
        async with self._locks[tenant]:
            old = await self._target(tenant, entity_id, type_gate)
            result = ops.patch_attr(old, name, instances, self.clock())
            if not result.changed:
                raise ResourceNotFound(f"attribute {name} not found in {entity_id}")
            await self.store.apply(tenant, [Write("put", entity_id, result.entity)])

    async def replace_attr(
        self, tenant: str, entity_id: str, name: str, instances: list[JSONObject]
    ) -> None:
        async with self._locks[tenant]:
            old = await self.retrieve(tenant, entity_id)
            result = ops.replace_attr(old, name, instances, self.clock())
            if not result.changed:
                raise ResourceNotFound(f"attribute {name} not found in {entity_id}")
            await self.store.apply(tenant, [Write("put", entity_id, result.entity)])

    async def delete_attr(
        self, tenant: str, entity_id: str, name: str, *, dataset_id: str | None,
        delete_all: bool, type_gate: TypeExpr | None = None,
    ) -> None:
        async with self._locks[tenant]:
            old = await self._target(tenant, entity_id, type_gate)
            out = ops.delete_attr(
                old, name, self.clock(), dataset_id=dataset_id, delete_all=delete_all
            )
            if out is None:
                raise ResourceNotFound(f"attribute {name} not found in {entity_id}")
            await self.store.apply(tenant, [Write("put", entity_id, out)])

    async def purge(
        self, tenant: str, query: EntityQuery, *, keep: frozenset[str] | None = None,
        drop: frozenset[str] | None = None, chunk: int = 1000,
    ) -> int:
        """Purge Entities (clause 5.6.21): delete what the query selects, or with ``keep`` /
        ``drop`` only trim their attributes; returns how many entities were touched."""
        await self.check_tenant(tenant)
        touched = 0
        offset = 0
        trim = keep is not None or drop is not None
        async with self._locks[tenant]:
            while True:
                page = await self.store.query(
                    tenant, replace(query, limit=chunk, offset=offset, count=False)
                )
                if not page.entities:
                    return touched
                if trim:
                    now = self.clock()
                    writes = [
                        Write("put", e["id"], ops.trim_attrs(e, now, keep=keep, drop=drop))
                        for e in page.entities
                    ]
                    offset += len(page.entities)
                else:
                    writes = [Write("delete", e["id"]) for e in page.entities]
                await self.store.apply(tenant, writes)
                touched += len(page.entities)

    # -- batches (clause 5.6.7 - 5.6.10, 5.6.20) ------------------------------------------
    async def batch_create(self, tenant: str, entities: list[JSONObject]) -> BatchResult:
        result = BatchResult()
        async with self._locks[tenant]:
            existing = await self.store.get_many(tenant, [e["id"] for e in entities])
            writes: list[Write] = []
            seen: set[str] = set()
            for entity in entities:
                eid = entity["id"]
                if eid in existing or eid in seen:
                    result.errors.append((eid, AlreadyExists(f"entity {eid} already exists")))
                    continue
                seen.add(eid)
                writes.append(Write("put", eid, entity))
                result.success.append(eid)
            if writes:
                await self.store.apply(tenant, writes)
        result.created = list(result.success)
        return result

    async def batch_upsert(
        self, tenant: str, entities: list[JSONObject], *, replace: bool
    ) -> BatchResult:
        result = BatchResult()
        async with self._locks[tenant]:
            existing = await self.store.get_many(tenant, [e["id"] for e in entities])
            current: dict[str, JSONObject] = {}
            now = self.clock()
            for entity in entities:
                eid = entity["id"]
                old = current.get(eid) or existing.get(eid)
                if old is None:
                    current[eid] = entity
                    result.created.append(eid)
                elif replace:
                    current[eid] = ops.replace_entity(old, entity, now)
                else:
                    out = ops.append_attrs(old, entity["attrs"], now, no_overwrite=False).entity
                    out["type"] = list(dict.fromkeys(old["type"] + entity.get("type", [])))
                    if "scope" in entity:
                        out["scope"] = entity["scope"]
                    current[eid] = out
                if eid not in result.success:
                    result.success.append(eid)
            if current:
                await self.store.apply(tenant, [Write("put", k, v) for k, v in current.items()])
        return result

    async def batch_update(
        self, tenant: str, entities: list[JSONObject], *, no_overwrite: bool
    ) -> BatchResult:
        result = BatchResult()
        async with self._locks[tenant]:
            existing = await self.store.get_many(tenant, [e["id"] for e in entities])
            current: dict[str, JSONObject] = {}
            now = self.clock()
            for entity in entities:
                eid = entity["id"]
                old = current.get(eid) or existing.get(eid)
                if old is None:
                    result.errors.append((eid, ResourceNotFound(f"entity {eid} not found")))
                    continue
                out = ops.append_attrs(
                    old, entity["attrs"], now, no_overwrite=no_overwrite,
                    types=entity.get("type"), scope=entity.get("scope"),
                )
                current[eid] = out.entity
                if out.not_updated:
                    names = ", ".join(sorted({n for n, _ in out.not_updated}))
                    result.errors.append(
                        (eid, BadRequestData(f"attributes not overwritten: {names}"))
                    )
                else:
                    result.success.append(eid)
            if current:
                await self.store.apply(tenant, [Write("put", k, v) for k, v in current.items()])
        return result

    async def batch_merge(self, tenant: str, entities: list[JSONObject]) -> BatchResult:
        result = BatchResult()
        async with self._locks[tenant]:
            existing = await self.store.get_many(tenant, [e["id"] for e in entities])
            current: dict[str, JSONObject] = {}
            now = self.clock()
            for entity in entities:
                eid = entity["id"]
                old = current.get(eid) or existing.get(eid)
                if old is None:
                    result.errors.append((eid, ResourceNotFound(f"entity {eid} not found")))
                    continue
                current[eid] = ops.merge_entity(old, entity, now).entity
                result.success.append(eid)
            if current:
                await self.store.apply(tenant, [Write("put", k, v) for k, v in current.items()])
        return result

    async def batch_delete(self, tenant: str, ids: list[str]) -> BatchResult:
        result = BatchResult()
        async with self._locks[tenant]:
            existing = await self.store.get_many(tenant, ids)
            writes: list[Write] = []
            for eid in ids:
                if eid not in existing:
                    result.errors.append((eid, ResourceNotFound(f"entity {eid} not found")))
                    continue
                writes.append(Write("delete", eid))
                existing.pop(eid)
                result.success.append(eid)
            if writes:
                await self.store.apply(tenant, writes)
        return result
