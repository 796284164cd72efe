"""Entity operations (clauses 5.6 and 5.7) over a store.

Endpoints hand in entities already expanded to the stored form. Each write here is a
*plan*: a pure function from the current documents to the writes and the result, built
from ``core.operations`` and run by the store inside one transaction (``modify``). So
read-modify-write never loses an update, on one node or many, and no lock is held here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from urbanos.core import operations as ops
from urbanos.core.expiry import canonical, live, stamp_expiry
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
from urbanos.services.guard import OPEN_GUARD, Guard
from urbanos.storage.base import (
    AttributeInfo,
    EntityStore,
    Page,
    TypeInfo,
    Write,
    attribute_infos,
    type_infos,
)
from urbanos.types import JSONObject

Current = dict[str, JSONObject]


@dataclass(slots=True)
class BatchResult:
    """BatchOperationResult (clause 5.2.16): ids that succeeded, errors per entity."""

    success: list[str] = field(default_factory=list)
    errors: list[tuple[str | None, NgsiLdError]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


def _existing(
    current: Current, entity_id: str, type_gate: TypeExpr | None = None, *, now: str
) -> JSONObject:
    """The entity a write aims at; missing, expired (clause 4.22) or failing a ``type``
    selector, it is a 404. ``now`` is canonical (``core.expiry``)."""
    entity = current.get(entity_id)
    if entity is None or live(entity, now) is None:
        raise ResourceNotFound(f"entity {entity_id} not found")
    if type_gate is not None and not matches_type(type_gate, entity.get("type", [])):
        raise ResourceNotFound(f"entity {entity_id} is not of the requested type")
    return entity


def _put(old: JSONObject | None, new: JSONObject) -> Write:
    return Write("put", new["id"], stamp_expiry(new), before=old)


def _forget_expired(current: Current, now: str) -> Current:
    """``current`` without the entities that have expired (clause 4.22): a batch treats
    them as absent, as every read does."""
    for eid in [eid for eid, e in current.items() if live(e, now) is None]:
        del current[eid]
    return current


def _replacing(current: Current, entity_id: str, now: str) -> list[Write]:
    """Before a creation: the deletion of an expired entity the sweeper has not reached
    yet, so that its id is free as every read already says; 409 if it is alive."""
    old = current.get(entity_id)
    if old is None:
        return []
    if live(old, now) is not None:
        raise AlreadyExists(f"entity {entity_id} already exists")
    del current[entity_id]
    return [Write("delete", entity_id, before=old)]


class EntityService:
    def __init__(self, store: EntityStore, clock: Callable[[], str] = now_iso) -> None:
        self.store = store
        self.clock = clock

    # -- reads -----------------------------------------------------------------------------
    async def check_tenant(self, tenant: str) -> None:
        if not await self.store.tenant_exists(tenant):
            raise NonexistentTenant(f"tenant {tenant!r} does not exist")

    async def retrieve(self, tenant: str, entity_id: str, *, guard: Guard = OPEN_GUARD
                       ) -> JSONObject:
        """The entity as the caller may see it; 404 when it may not see it at all."""
        await self.check_tenant(tenant)
        entity = await self.store.get(tenant, entity_id)
        shown = live(entity, self.now()) if entity is not None else None
        if shown is not None and not guard.open:
            shown = guard.read(shown)
        if shown is None:
            raise ResourceNotFound(f"entity {entity_id} not found")
        return shown

    async def query(self, tenant: str, query: EntityQuery, *, guard: Guard = OPEN_GUARD
                    ) -> Page:
        """Query Entities; nothing expired is selected or shown (clause 4.22), nothing the
        caller may not see is selected, counted or shown."""
        await self.check_tenant(tenant)
        now = self.now()
        page = await self.store.query(tenant, guard.query(replace(query, alive_at=now)))
        shown = [e for e in (live(e, now) for e in page.entities) if e is not None]
        return Page(shown, page.total)

    def now(self) -> str:
        """The clock, canonical: what expiresAt is compared with."""
        return canonical(self.clock())

    async def types(self, tenant: str, *, guard: Guard = OPEN_GUARD) -> list[TypeInfo]:
        await self.check_tenant(tenant)
        if guard.view.unrestricted:
            return await self.store.types(tenant)
        return type_infos(await self._visible(tenant, guard))

    async def attributes(self, tenant: str, *, guard: Guard = OPEN_GUARD
                         ) -> list[AttributeInfo]:
        await self.check_tenant(tenant)
        if guard.view.unrestricted:
            return await self.store.attributes(tenant)
        return attribute_infos(await self._visible(tenant, guard))

    async def _visible(self, tenant: str, guard: Guard, chunk: int = 1000
                       ) -> list[JSONObject]:
        """Every entity the caller may see, as it may see it: what /types and /attributes
        tell a caller who may not see everything, so they never name a type or attribute
        it could not find by a query."""
        out: list[JSONObject] = []
        while True:
            page = await self.query(tenant, EntityQuery(limit=chunk, offset=len(out)),
                                    guard=guard)
            out.extend(page.entities)
            if len(page.entities) < chunk:
                return out

    # -- single-entity writes --------------------------------------------------------------
    async def create(
        self, tenant: str, entity: JSONObject, *, guard: Guard = OPEN_GUARD
    ) -> None:
        """Create Entity (5.6.1); 409 when the id is taken."""

        def plan(current: Current) -> tuple[list[Write], None]:
            return [*_replacing(current, entity["id"], self.now()), _put(None, entity)], None

        await guard.modify(self.store, tenant, [entity["id"]], plan)

    async def delete(
        self, tenant: str, entity_id: str, *, type_gate: TypeExpr | None = None,
        guard: Guard = OPEN_GUARD,
    ) -> None:
        def plan(current: Current) -> tuple[list[Write], None]:
            old = _existing(current, entity_id, type_gate, now=self.now())
            return [Write("delete", entity_id, before=old)], None

        await guard.modify(self.store, tenant, [entity_id], plan)

    async def replace(
        self, tenant: str, entity_id: str, new: JSONObject, *, guard: Guard = OPEN_GUARD
    ) -> None:
        def plan(current: Current) -> tuple[list[Write], None]:
            old = _existing(current, entity_id, now=self.now())
            return [_put(old, ops.replace_entity(old, new, self.clock()))], None

        await guard.modify(self.store, tenant, [entity_id], plan)

    async def merge(
        self, tenant: str, entity_id: str, fragment: JSONObject, *, guard: Guard = OPEN_GUARD
    ) -> None:
        def plan(current: Current) -> tuple[list[Write], None]:
            old = _existing(current, entity_id, now=self.now())
            return [_put(old, ops.merge_entity(old, fragment, self.clock()).entity)], None

        await guard.modify(self.store, tenant, [entity_id], plan)

    async def append(
        self, tenant: str, entity_id: str, attrs: ops.Attrs, *, no_overwrite: bool,
        types: list[str] | None = None, scope: list[str] | None = None,
        type_gate: TypeExpr | None = None,
        guard: Guard = OPEN_GUARD,
    ) -> ops.Outcome:
        def plan(current: Current) -> tuple[list[Write], ops.Outcome]:
            old = _existing(current, entity_id, type_gate, now=self.now())
            result = ops.append_attrs(
                old, attrs, self.clock(), no_overwrite=no_overwrite, types=types, scope=scope
            )
            return [_put(old, result.entity)], result

        return await guard.modify(self.store, tenant, [entity_id], plan)

    async def update(
        self, tenant: str, entity_id: str, attrs: ops.Attrs, *,
        types: list[str] | None = None, scope: list[str] | None = None,
        type_gate: TypeExpr | None = None,
        guard: Guard = OPEN_GUARD,
    ) -> ops.Outcome:
        def plan(current: Current) -> tuple[list[Write], ops.Outcome]:
            old = _existing(current, entity_id, type_gate, now=self.now())
            result = ops.update_attrs(old, attrs, self.clock(), types=types, scope=scope)
            return [_put(old, result.entity)], result

        return await guard.modify(self.store, tenant, [entity_id], plan)

    async def patch_attr(
        self, tenant: str, entity_id: str, name: str, instances: list[JSONObject], *,
        type_gate: TypeExpr | None = None,
        guard: Guard = OPEN_GUARD,
    ) -> None:
        def plan(current: Current) -> tuple[list[Write], None]:
            old = _existing(current, entity_id, type_gate, now=self.now())
            result = ops.patch_attr(old, name, instances, self.clock())
            if not result.changed:
                raise ResourceNotFound(f"attribute {name} not found in {entity_id}")
            return [_put(old, result.entity)], None

        await guard.modify(self.store, tenant, [entity_id], plan)

    async def replace_attr(
        self, tenant: str, entity_id: str, name: str, instances: list[JSONObject], *,
        guard: Guard = OPEN_GUARD,
    ) -> None:
        def plan(current: Current) -> tuple[list[Write], None]:
            old = _existing(current, entity_id, now=self.now())
            result = ops.replace_attr(old, name, instances, self.clock())
            if not result.changed:
                raise ResourceNotFound(f"attribute {name} not found in {entity_id}")
            return [_put(old, result.entity)], None

        await guard.modify(self.store, tenant, [entity_id], plan)

    async def delete_attr(
        self, tenant: str, entity_id: str, name: str, *, dataset_id: str | None,
        delete_all: bool, type_gate: TypeExpr | None = None,
        guard: Guard = OPEN_GUARD,
    ) -> None:
        def plan(current: Current) -> tuple[list[Write], None]:
            old = _existing(current, entity_id, type_gate, now=self.now())
            out = ops.delete_attr(
                old, name, self.clock(), dataset_id=dataset_id, delete_all=delete_all
            )
            if out is None:
                raise ResourceNotFound(f"attribute {name} not found in {entity_id}")
            return [_put(old, out)], None

        await guard.modify(self.store, tenant, [entity_id], plan)

    async def purge(
        self, tenant: str, query: EntityQuery, *, keep: frozenset[str] | None = None,
        drop: frozenset[str] | None = None, chunk: int = 1000,
        guard: Guard = OPEN_GUARD,
    ) -> int:
        """Purge Entities (clause 5.6.21): delete what the query selects, or with ``keep`` /
        ``drop`` only trim their attributes; returns how many entities were touched."""
        await self.check_tenant(tenant)
        trim = keep is not None or drop is not None
        # every id first, then the writes by id: a trimmed entity can leave the selection,
        # so pages of a query read between writes would shift and skip entities
        ids: dict[str, None] = {}
        offset = 0
        while True:
            page = await self.store.query(tenant, guard.query(
                replace(query, limit=chunk, offset=offset, count=False, order=None)))
            ids.update(dict.fromkeys(e["id"] for e in page.entities))
            if len(page.entities) < chunk:
                break
            offset += chunk

        def plan(current: Current) -> tuple[list[Write], int]:
            now = self.clock()
            if trim:
                return [_put(e, ops.trim_attrs(e, now, keep=keep, drop=drop))
                        for e in current.values()], len(current)
            return [Write("delete", e["id"], before=e) for e in current.values()], len(current)

        touched = 0
        order = list(ids)
        for start in range(0, len(order), chunk):
            touched += await guard.modify(self.store, tenant, order[start:start + chunk], plan)
        return touched

    # -- batches (clause 5.6.7 - 5.6.10, 5.6.20) ------------------------------------------
    async def batch_create(
        self, tenant: str, entities: list[JSONObject], *, guard: Guard = OPEN_GUARD
    ) -> BatchResult:
        def plan(current: Current) -> tuple[list[Write], BatchResult]:
            result = BatchResult()
            writes: list[Write] = []
            now = self.now()
            for entity in entities:
                eid = entity["id"]
                try:
                    writes.extend(_replacing(current, eid, now))
                except AlreadyExists as exc:
                    result.errors.append((eid, exc))
                    continue
                current[eid] = entity
                writes.append(_put(None, entity))
                result.success.append(eid)
            result.created = list(result.success)
            return writes, result

        ids = [e["id"] for e in entities]
        return await guard.modify(self.store, tenant, ids, plan, batch=True)

    async def batch_upsert(
        self, tenant: str, entities: list[JSONObject], *, replace: bool,
        guard: Guard = OPEN_GUARD,
    ) -> BatchResult:
        def plan(current: Current) -> tuple[list[Write], BatchResult]:
            _forget_expired(current, self.now())
            result = BatchResult()
            before = dict(current)
            now = self.clock()
            for entity in entities:
                eid = entity["id"]
                old = current.get(eid)
                if old is None:
                    current[eid] = entity
                    result.created.append(eid)
                elif replace:
                    current[eid] = ops.replace_entity(old, entity, now)
                else:
                    current[eid] = ops.append_attrs(
                        old, entity["attrs"], now, no_overwrite=False,
                        types=entity.get("type"), scope=entity.get("scope"),
                    ).entity
                    if "expiresAt" in entity:
                        current[eid]["expiresAt"] = entity["expiresAt"]
            result.success = list(dict.fromkeys(e["id"] for e in entities))  # in first order
            writes = [_put(before.get(eid), current[eid]) for eid in result.success]
            return writes, result

        ids = [e["id"] for e in entities]
        return await guard.modify(self.store, tenant, ids, plan, batch=True)

    async def batch_update(
        self, tenant: str, entities: list[JSONObject], *, no_overwrite: bool,
        guard: Guard = OPEN_GUARD,
    ) -> BatchResult:
        def plan(current: Current) -> tuple[list[Write], BatchResult]:
            _forget_expired(current, self.now())
            result = BatchResult()
            before = dict(current)
            now = self.clock()
            touched: list[str] = []
            for entity in entities:
                eid = entity["id"]
                old = current.get(eid)
                if old is None:
                    result.errors.append((eid, ResourceNotFound(f"entity {eid} not found")))
                    continue
                out = ops.append_attrs(
                    old, entity["attrs"], now, no_overwrite=no_overwrite,
                    types=entity.get("type"), scope=entity.get("scope"),
                )
                current[eid] = out.entity
                touched.append(eid)
                if out.not_updated:
                    names = ", ".join(sorted({n for n, _ in out.not_updated}))
                    result.errors.append(
                        (eid, BadRequestData(f"attributes not overwritten: {names}"))
                    )
                else:
                    result.success.append(eid)
            writes = [_put(before[eid], current[eid]) for eid in dict.fromkeys(touched)]
            return writes, result

        ids = [e["id"] for e in entities]
        return await guard.modify(self.store, tenant, ids, plan, batch=True)

    async def batch_merge(
        self, tenant: str, entities: list[JSONObject], *, guard: Guard = OPEN_GUARD
    ) -> BatchResult:
        def plan(current: Current) -> tuple[list[Write], BatchResult]:
            _forget_expired(current, self.now())
            result = BatchResult()
            before = dict(current)
            now = self.clock()
            for entity in entities:
                eid = entity["id"]
                old = current.get(eid)
                if old is None:
                    result.errors.append((eid, ResourceNotFound(f"entity {eid} not found")))
                    continue
                current[eid] = ops.merge_entity(old, entity, now).entity
                result.success.append(eid)
            writes = [_put(before[eid], current[eid]) for eid in dict.fromkeys(result.success)]
            return writes, result

        ids = [e["id"] for e in entities]
        return await guard.modify(self.store, tenant, ids, plan, batch=True)

    async def batch_delete(
        self, tenant: str, ids: list[str], *, guard: Guard = OPEN_GUARD
    ) -> BatchResult:
        def plan(current: Current) -> tuple[list[Write], BatchResult]:
            _forget_expired(current, self.now())
            result = BatchResult()
            writes: list[Write] = []
            for eid in ids:
                old = current.pop(eid, None)
                if old is None:
                    result.errors.append((eid, ResourceNotFound(f"entity {eid} not found")))
                    continue
                writes.append(Write("delete", eid, before=old))
                result.success.append(eid)
            return writes, result

        return await guard.modify(self.store, tenant, ids, plan, batch=True)
