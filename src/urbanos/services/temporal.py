"""The Temporal API (clauses 5.6.11 - 5.6.16, 5.7.3, 5.7.4) over an entity and a history store.

History and current state stay one entity: a temporal write is planned like any entity
write (``EntityStore.modify``), moving the current state to the most recent instances it
carries, and attaches a ``Directive`` so the history hook records every instance of the
payload in the same transaction. Deleting a temporal entity deletes the entity too;
deleting an entity through the core API keeps its history, closed with deletion instances.

Reads select entities on identity first (ids, types, idPattern, scopeQ), then judge ``q``
and ``geoQ`` on the instances inside the temporal window (clause 5.7.4.4), then page and
fetch the series, at most ``instance_limit`` instances (or periods) each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from urbanos.core import operations as ops
from urbanos.core.model import is_null
from urbanos.core.query import attribute_names
from urbanos.core.query.ast import ScopeExpr
from urbanos.core.selection import EntityQuery, matches, simple_type_set
from urbanos.core.temporal import (
    SCOPE,
    Interval,
    NewInstance,
    TemporalQuery,
    instance_number,
    latest_instances,
    newer_than,
    scope_intervals,
    to_micros,
    valid_scope_instances,
)
from urbanos.core.temporal_input import SCOPE_HISTORY
from urbanos.core.temporal_render import EntityHistory, during_scope
from urbanos.core.timeutil import now_iso
from urbanos.errors import NonexistentTenant, ResourceNotFound
from urbanos.services.guard import OPEN_GUARD, Guard
from urbanos.storage.base import EntityStore, Write
from urbanos.storage.temporal import (
    ALL_DATASETS,
    Directive,
    HistoryRequest,
    TemporalEntity,
    TemporalStore,
)
from urbanos.types import JSONObject

log = logging.getLogger("urbanos.temporal")
Current = dict[str, JSONObject]


@dataclass(frozen=True, slots=True)
class Retention:
    """How many days of history to keep: a default and per-tenant overrides (0 = forever).

    Written ``"30"`` or ``"30,cityA=7,cityB=0"``; an empty text keeps everything.
    """

    default: int = 0
    tenants: tuple[tuple[str, int], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Retention:
        default, tenants = 0, []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            name, sep, days = part.rpartition("=")
            try:
                value = int(days)
            except ValueError as exc:
                raise ValueError(f"temporal retention: {part!r} is not DAYS or TENANT=DAYS") from exc
            if value < 0:
                raise ValueError(f"temporal retention: {part!r} is negative")
            if sep:
                tenants.append((name.strip(), value))
            else:
                default = value
        return cls(default, tuple(tenants))

    def days(self, tenant: str) -> int:
        return dict(self.tenants).get(tenant, self.default)

    @property
    def active(self) -> bool:
        return self.default > 0 or any(days > 0 for _, days in self.tenants)


class TemporalService:
    def __init__(
        self, store: EntityStore, history: TemporalStore, *, instance_limit: int = 10,
        retention: Retention = Retention(), clock: Callable[[], str] = now_iso,
    ) -> None:
        self.store = store
        self.history = history
        self.instance_limit = max(1, instance_limit)
        self.retention = retention
        self.clock = clock

    async def check_tenant(self, tenant: str) -> None:
        if not await self.store.tenant_exists(tenant):
            raise NonexistentTenant(f"tenant {tenant!r} does not exist")

    async def _existing(self, tenant: str, entity_id: str) -> TemporalEntity:
        found = await self.history.entity(tenant, entity_id)
        if found is None:
            raise ResourceNotFound(f"no temporal representation of {entity_id}")
        return found

    # -- writes --------------------------------------------------------------------------
    def _mirror(self, old: JSONObject | None, entity: JSONObject, now: str) -> JSONObject:
        """The current state after a temporal write: the latest instance of each attribute
        and datasetId, unless the entity already holds a more recent one."""
        latest = latest_instances(entity["attrs"])
        if old is None:
            attrs = {n: [i for i in insts if not is_null(i)] for n, insts in latest.items()}
            out: JSONObject = {"id": entity["id"], "type": list(entity["type"]),
                               "attrs": {n: v for n, v in attrs.items() if v},
                               "createdAt": now, "modifiedAt": now}
            if entity.get("scope"):
                out["scope"] = entity["scope"]
            return out
        chosen: dict[str, list[JSONObject]] = {}
        for name, instances in latest.items():
            current = {i.get("datasetId"): i for i in old["attrs"].get(name, ())}
            fresh = [i for i in instances if newer_than(i, current.get(i.get("datasetId")))]
            if fresh:
                chosen[name] = fresh
        return ops.append_attrs(old, chosen, now, no_overwrite=False, types=entity.get("type"),
                                scope=entity.get("scope")).entity

    async def _write(self, tenant: str, entity_id: str,
                     decide: Callable[[JSONObject | None, str], tuple[Write, Directive] | None],
                     guard: Guard = OPEN_GUARD) -> bool:
        """Plan one write on the entity with a directive for the history hook; False when
        ``decide`` chose not to write (the entity has no current state)."""
        attached: list[Write] = []

        def plan(current: Current) -> tuple[list[Write], bool]:
            found = decide(current.get(entity_id), self.clock())
            if found is None:
                return [], False
            write, directive = found
            self.history.directives.attach(write, directive)
            attached.append(write)
            return [write], True

        try:
            return await guard.modify(self.store, tenant, [entity_id], plan)
        finally:
            self.history.directives.discard(attached)

    async def _may_write(self, tenant: str, entity_id: str, attributes: frozenset[str],
                         guard: Guard) -> None:
        """Writes to history alone (no current state to plan on) are checked against the
        entity as it stands, or as its history names it."""
        if guard.open:
            return
        entity = await self.store.get(tenant, entity_id)
        if entity is None:
            header = await self._existing(tenant, entity_id)
            entity = _as_entity(header, {})
        guard.check_write(entity, attributes)

    async def upsert(self, tenant: str, entity: JSONObject, *, guard: Guard = OPEN_GUARD
                     ) -> bool:
        """Create or Update Temporal Representation of an Entity (clause 5.6.11); True when
        it was created."""
        created = await self.history.entity(tenant, entity["id"]) is None

        def decide(old: JSONObject | None, now: str) -> tuple[Write, Directive]:
            new = self._mirror(old, entity, now)
            explicit = [NewInstance(n, i) for n, insts in entity["attrs"].items() for i in insts]
            explicit += [NewInstance(SCOPE, i) for i in entity.get(SCOPE_HISTORY, ())]
            return Write("put", entity["id"], new, before=old), Directive(explicit=explicit)

        await self._write(tenant, entity["id"], decide, guard)
        return created

    async def add_attributes(self, tenant: str, entity_id: str,
                             attrs: dict[str, list[JSONObject]], *,
                             guard: Guard = OPEN_GUARD) -> None:
        """Add Attributes to Temporal Representation of an Entity (clause 5.6.12)."""
        header = await self._existing(tenant, entity_id)
        entity = {"id": entity_id, "type": header.types, "attrs": attrs}

        def decide(old: JSONObject | None, now: str) -> tuple[Write, Directive]:
            new = self._mirror(old, {**entity, "type": None} if old else entity, now)
            explicit = [NewInstance(n, i) for n, insts in attrs.items() for i in insts]
            return Write("put", entity_id, new, before=old), Directive(explicit=explicit)

        await self._may_write(tenant, entity_id, frozenset(attrs), guard)
        await self._write(tenant, entity_id, decide, guard)

    async def delete_entity(self, tenant: str, entity_id: str, *, guard: Guard = OPEN_GUARD
                            ) -> None:
        """Delete Temporal Representation of an Entity (clause 5.6.16): history and entity."""

        def decide(old: JSONObject | None, now: str) -> tuple[Write, Directive] | None:
            if old is None:
                return None
            return Write("delete", entity_id, before=old), Directive(purge_entity=True)

        await self.check_tenant(tenant)
        if not guard.open:
            names = {a for a, _ in await self.history.series_names(tenant, entity_id)}
            await self._may_write(tenant, entity_id, frozenset(names), guard)
        if not await self._write(tenant, entity_id, decide, guard) and not (
            await self.history.delete_entity(tenant, entity_id)
        ):
            raise ResourceNotFound(f"no temporal representation of {entity_id}")

    async def delete_attribute(self, tenant: str, entity_id: str, attr: str, *,
                               dataset_id: str | None, delete_all: bool,
                               guard: Guard = OPEN_GUARD) -> None:
        """Delete Attribute from Temporal Representation of an Entity (clause 5.6.13): the
        history of the attribute (one datasetId, the default instance, or all of them) and
        the attribute itself."""
        await self._existing(tenant, entity_id)
        await self._may_write(tenant, entity_id, frozenset({attr}), guard)
        names = await self.history.series_names(tenant, entity_id)
        if not any(a == attr and (delete_all or d == dataset_id) for a, d in names):
            raise ResourceNotFound(f"{entity_id} has no history of {attr} for this datasetId")
        target = ALL_DATASETS if delete_all else dataset_id

        def decide(old: JSONObject | None, now: str) -> tuple[Write, Directive] | None:
            if old is None:
                return None
            new = ops.delete_attr(old, attr, now, dataset_id=dataset_id,
                                  delete_all=delete_all) or old
            return Write("put", entity_id, new, before=old), Directive(purge=[(attr, target)])

        if not await self._write(tenant, entity_id, decide, guard):
            await self.history.delete_series(tenant, entity_id, attr, target)

    async def modify_instance(self, tenant: str, entity_id: str, attr: str,
                              instance_id: str, fragment: JSONObject, *,
                              guard: Guard = OPEN_GUARD) -> None:
        """Modify Attribute Instance (clause 5.6.14): members replaced, instanceId kept."""
        number = instance_number(instance_id)
        await self._existing(tenant, entity_id)
        await self._may_write(tenant, entity_id, frozenset({attr}), guard)
        now = self.clock()

        def change(old: JSONObject) -> JSONObject:
            merged = ops.merge_instance(old, fragment, now) or old
            merged["createdAt"] = old.get("createdAt", now)
            merged["modifiedAt"] = now
            return merged

        if number is None or not await self.history.update_instance(
            tenant, entity_id, attr, number, change
        ):
            raise ResourceNotFound(f"{entity_id} has no instance {instance_id} of {attr}")

    async def delete_instance(self, tenant: str, entity_id: str, attr: str,
                              instance_id: str, *, guard: Guard = OPEN_GUARD) -> None:
        """Delete Attribute Instance (clause 5.6.15)."""
        number = instance_number(instance_id)
        await self._existing(tenant, entity_id)
        await self._may_write(tenant, entity_id, frozenset({attr}), guard)
        if number is None or not await self.history.delete_instance(
            tenant, entity_id, attr, number
        ):
            raise ResourceNotFound(f"{entity_id} has no instance {instance_id} of {attr}")

    # -- reads ---------------------------------------------------------------------------
    def request(self, **fields: object) -> HistoryRequest:
        return HistoryRequest(limit=self.instance_limit, **fields)  # type: ignore[arg-type]

    async def retrieve(self, tenant: str, entity_id: str,
                       request: HistoryRequest, *, guard: Guard = OPEN_GUARD) -> EntityHistory:
        """Retrieve Temporal Evolution of an Entity (clause 5.7.3), as the caller may see
        it: 404 when it may not see the entity, hidden attributes left out."""
        await self.check_tenant(tenant)
        if not guard.view.unrestricted:
            header = await self.history.entity(tenant, entity_id)
            if header is None or not (await self._seen(tenant, [header], guard)):
                raise ResourceNotFound(f"no temporal representation of {entity_id}")
        if request.attrs is not None:
            names = await self.history.series_names(tenant, entity_id)
            if names and not any(a in request.attrs for a, _ in names):
                raise ResourceNotFound(f"{entity_id} has none of the attributes asked for")
        found = await self.history.history(tenant, [entity_id], request)
        if not found:
            raise ResourceNotFound(f"no temporal representation of {entity_id}")
        if not guard.view.unrestricted:
            found = await self._masked(tenant, found, guard)
        return found[0]

    async def query(self, tenant: str, selection: EntityQuery, request: HistoryRequest,
                    *, fetch: HistoryRequest | None = None, order: str | None = None,
                    only: frozenset[str] | None = None, guard: Guard = OPEN_GUARD,
                    ) -> tuple[list[EntityHistory], int | None]:
        """Query Temporal Evolution of Entities (clause 5.7.4): the page of entities that
        match and have instances in the window (in creation order, or by id when ``order``
        is ``asc``/``desc``), and their total when counting. ``fetch`` narrows what is
        read for the page; ``only`` fixes the candidates (an EntityMap)."""
        await self.check_tenant(tenant)
        types = simple_type_set(selection.types) if selection.types is not None else None
        candidates = await self.history.select(tenant, selection.ids, types)
        if only is not None:
            candidates = [c for c in candidates if c.id in only]
        identity = replace(selection, q=None, geo=None, attrs=None, scope_q=None)
        chosen = [c for c in candidates if matches(_as_entity(c, {}), identity)]
        seen: dict[str, JSONObject] | None = None
        if chosen and not guard.view.unrestricted:
            seen = await self._seen(tenant, chosen, guard)
            chosen = [c for c in chosen if c.id in seen]
        ids = [c.id for c in chosen]
        if ids and (selection.q is not None or selection.geo is not None):
            ids = await self._judge(tenant, chosen, selection, request, seen, guard)
        scoped: dict[str, tuple[list[Interval], list[JSONObject]]] = {}
        if ids and selection.scope_q is not None:
            scoped = await self._scoped(tenant, ids, selection.scope_q, request.query)
            ids = [i for i in ids if i in scoped]
        if ids:
            present = await self.history.with_instances(tenant, ids, request)
            ids = [i for i in ids if i in present]
        if order is not None:
            ids.sort(reverse=order == "desc")
        total = len(ids) if selection.count else None
        page = ids[selection.offset:selection.offset + selection.limit]
        found = await self.history.history(tenant, page, fetch or request)
        if selection.scope_q is not None:
            wants_scope = (fetch or request).attrs is None or SCOPE in (fetch or request).attrs
            found = [during_scope(h, *scoped[h.id], request.query.timeproperty,
                                  with_scope=wants_scope) for h in found]
        if seen is not None:
            found = await self._masked(tenant, found, guard, seen)
        return found, total

    async def _seen(self, tenant: str, headers: list[TemporalEntity], guard: Guard
                    ) -> dict[str, JSONObject]:
        """The entities of ``headers`` the caller may see, by id: their current state
        (who owns them, their access policy) or, once deleted, what history says."""
        current = await self.store.get_many(tenant, [h.id for h in headers])
        out: dict[str, JSONObject] = {}
        for h in headers:
            base = current.get(h.id) or _as_entity(h, {})
            if guard.read(base) is not None:
                out[h.id] = base
        return out

    async def _masked(self, tenant: str, found: list[EntityHistory], guard: Guard,
                      seen: dict[str, JSONObject] | None = None) -> list[EntityHistory]:
        """Each history without the series of attributes hidden from the caller."""
        if seen is None:
            current = await self.store.get_many(tenant, [h.id for h in found])
            seen = {h.id: current.get(h.id) or {"id": h.id, "type": h.types, "attrs": {}}
                    for h in found}
        out: list[EntityHistory] = []
        for h in found:
            names = {s.attr for s in h.series} | {a.attr for a in h.aggregated}
            allowed = guard.readable(seen[h.id], names)
            if allowed is None:
                continue
            out.append(replace(h, series=[s for s in h.series if s.attr in allowed],
                               aggregated=[a for a in h.aggregated if a.attr in allowed]))
        return out

    async def _scoped(self, tenant: str, ids: list[str], expr: ScopeExpr,
                      query: TemporalQuery) -> dict[str, tuple[list[Interval], list[JSONObject]]]:
        """The entities whose scope matched ``expr`` at some time of the window (clause
        5.7.4.4 with the validity of clause 4.18): when it did, and the scope instances in
        force during the window."""
        everything = HistoryRequest(query=TemporalQuery(timeproperty="createdAt"),
                                    attrs=frozenset({SCOPE}))
        windows = await self.history.window(tenant, ids, everything)
        out: dict[str, tuple[list[Interval], list[JSONObject]]] = {}
        for eid in ids:
            instances = windows.get(eid, {}).get(SCOPE, [])
            intervals = scope_intervals(instances, expr, query.start, query.end)
            if intervals:
                out[eid] = (intervals, valid_scope_instances(instances, query))
        return out

    async def _judge(self, tenant: str, chosen: list[TemporalEntity], selection: EntityQuery,
                     request: HistoryRequest, seen: dict[str, JSONObject] | None = None,
                     guard: Guard = OPEN_GUARD) -> list[str]:
        """Keep the entities whose in-window instances satisfy ``q`` and ``geoQ``; an
        attribute hidden from the caller counts as absent."""
        names: set[str] = set(attribute_names(selection.q)) if selection.q is not None else set()
        if selection.geo is not None:
            names.add(selection.geo.geoproperty)
        windows = await self.history.window(
            tenant, [c.id for c in chosen],
            replace(request, attrs=frozenset(names), datasets=None, aggregation=None),
        )
        test = EntityQuery(q=selection.q, geo=selection.geo, lang=selection.lang)
        kept: list[str] = []
        for c in chosen:
            attrs = windows.get(c.id, {})
            if seen is not None:
                allowed = guard.readable(seen[c.id], attrs) or frozenset()
                attrs = {n: v for n, v in attrs.items() if n in allowed}
            if matches(_as_entity(c, attrs), test):
                kept.append(c.id)
        return kept

    # -- retention -----------------------------------------------------------------------
    async def expire(self) -> int:
        """Forget history older than each tenant's retention; returns instances removed."""
        if not self.retention.active:
            return 0
        now = to_micros(self.clock())
        gone = 0
        for tenant in await self.history.tenants():
            days = self.retention.days(tenant)
            if days > 0:
                gone += await self.history.expire(tenant, now - days * 86_400_000_000)
        return gone

    async def run_retention(self, interval: float = 3600.0) -> None:
        """A worker loop: apply the retention now and then every ``interval`` seconds."""
        while True:
            gone = await self.expire()
            if gone:
                log.info("temporal retention removed %d instances", gone)
            await asyncio.sleep(interval)


def _as_entity(header: TemporalEntity, attrs: dict[str, list[JSONObject]]) -> JSONObject:
    """An entity in the stored form for ``core.selection.matches``: identity and the
    in-window instances (every instance counts, as if each were a datasetId)."""
    out: JSONObject = {"id": header.id, "type": header.types, "attrs": attrs,
                       "createdAt": header.created_at, "modifiedAt": header.modified_at}
    if header.scope:
        out["scope"] = header.scope
    return out
