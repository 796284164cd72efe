"""History in memory, beside ``MemoryStore``: the reference for the SQLite store's semantics.

``MemoryTemporalStore(store)`` registers its hook on ``store.write_hooks``, so every entity
write records its instances before the write returns, as the SQL stores do inside their
transaction. Aggregates use ``core.temporal_render.aggregate_series`` on plain lists.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from urbanos.core.temporal import (
    NewInstance,
    TemporalQuery,
    derive_instances,
    instance_id,
    instance_number,
    time_of,
)
from urbanos.core.temporal_render import (
    AggregatedSeries,
    EntityHistory,
    Series,
    aggregate_series,
    kind_of,
)
from urbanos.core.timeutil import now_iso
from urbanos.storage.base import Write
from urbanos.storage.memory import MemoryStore
from urbanos.storage.temporal import (
    ALL_DATASETS,
    Directive,
    Directives,
    HistoryRequest,
    TemporalEntity,
)
from urbanos.storage.temporal_rows import entity_row
from urbanos.types import JSONObject

Key = tuple[str, str | None]


@dataclass(slots=True)
class _Entity:
    head: TemporalEntity
    series: dict[Key, list[JSONObject]] = field(default_factory=dict)

    def header(self) -> TemporalEntity:
        return replace(self.head, types=list(self.head.types))


def _selected(key: Key, request: HistoryRequest) -> bool:
    attr, dataset = key
    if request.attrs is not None and attr not in request.attrs:
        return False
    return request.datasets is None or (dataset or "@none") in request.datasets


def _in_window(instances: list[JSONObject], query: TemporalQuery) -> list[JSONObject]:
    prop = query.timeproperty
    timed: list[tuple[int, JSONObject]] = []
    for inst in instances:
        t = time_of(inst, prop)
        if t is not None and query.contains(t):
            timed.append((t, inst))
    timed.sort(key=lambda pair: pair[0])
    return [i for _, i in timed]


class MemoryTemporalStore:
    def __init__(self, store: MemoryStore | None = None,
                 clock: Callable[[], str] = now_iso) -> None:
        self.directives = Directives()
        self.clock = clock
        self._tenants: dict[str, dict[str, _Entity]] = {}
        self._numbers = itertools.count(1)
        if store is not None:
            store.write_hooks.append(self.record)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- the write hook ------------------------------------------------------------------
    def record(self, tenant: str, writes: list[Write]) -> None:
        for w in writes:
            self._record_one(tenant, w, self.directives.take(w))

    def _record_one(self, tenant: str, w: Write, d: Directive | None) -> None:
        table = self._tenants.setdefault(tenant, {})
        if d is not None and d.purge_entity:
            table.pop(w.entity_id, None)
            return
        after, before = w.entity, w.before
        now, types, scope, created, deleted = entity_row(w, self.clock())
        entity = table.get(w.entity_id)
        if entity is not None:
            created = entity.head.created_at
        head = TemporalEntity(w.entity_id, list(types), scope, created, now, deleted)
        if entity is None:
            entity = table[w.entity_id] = _Entity(head)
        entity.head = head
        d = d or Directive()
        for attr, dataset in d.purge:
            self._purge(entity, attr, dataset)
        for new in derive_instances(before, after, now, skip=d.skip):
            self._add(entity, new, replace_observed=False)
        for new in d.explicit:
            self._add(entity, new, replace_observed=d.replace_observed)

    def _add(self, entity: _Entity, new: NewInstance, *, replace_observed: bool) -> None:
        instances = entity.series.setdefault((new.attr, new.dataset_id), [])
        inst = copy.deepcopy(new.instance)
        if replace_observed and "observedAt" in inst:
            stamp = time_of(inst, "observedAt")
            instances[:] = [i for i in instances if time_of(i, "observedAt") != stamp]
        inst["instanceId"] = instance_id(next(self._numbers))
        instances.append(inst)

    @staticmethod
    def _purge(entity: _Entity, attr: str, dataset: str | None) -> bool:
        keys = [k for k in entity.series
                if k[0] == attr and (dataset == ALL_DATASETS or k[1] == dataset)]
        for k in keys:
            del entity.series[k]
        return bool(keys)

    # -- reads ---------------------------------------------------------------------------
    def _entity(self, tenant: str, entity_id: str) -> _Entity | None:
        return self._tenants.get(tenant, {}).get(entity_id)

    async def entity(self, tenant: str, entity_id: str) -> TemporalEntity | None:
        found = self._entity(tenant, entity_id)
        return found.header() if found else None

    async def select(
        self, tenant: str, ids: tuple[str, ...] | None, types: frozenset[str] | None
    ) -> list[TemporalEntity]:
        out = []
        for e in self._tenants.get(tenant, {}).values():
            if ids is not None and e.head.id not in ids:
                continue
            if types is not None and not types.intersection(e.head.types):
                continue
            out.append(e.header())
        return out

    async def series_names(self, tenant: str, entity_id: str) -> set[tuple[str, str | None]]:
        found = self._entity(tenant, entity_id)
        return {k for k, v in found.series.items() if v} if found else set()

    async def window(
        self, tenant: str, entity_ids: list[str], request: HistoryRequest
    ) -> dict[str, dict[str, list[JSONObject]]]:
        out: dict[str, dict[str, list[JSONObject]]] = {}
        for eid in entity_ids:
            found = self._entity(tenant, eid)
            if found is None:
                continue
            attrs = out.setdefault(eid, {})
            for key, instances in found.series.items():
                if _selected(key, request):
                    kept = _in_window(instances, request.query)
                    if kept:
                        attrs.setdefault(key[0], []).extend(copy.deepcopy(kept))
        return out

    async def with_instances(
        self, tenant: str, entity_ids: list[str], request: HistoryRequest
    ) -> set[str]:
        found = await self.window(tenant, entity_ids, request)
        return {eid for eid, attrs in found.items() if attrs}

    async def history(
        self, tenant: str, entity_ids: list[str], request: HistoryRequest
    ) -> list[EntityHistory]:
        out = []
        query, limit = request.query, request.limit
        keep, cut_by_limit = request.page_size()
        for eid in entity_ids:
            found = self._entity(tenant, eid)
            if found is None:
                continue
            history = EntityHistory(found.head.id, list(found.head.types))
            for key, instances in found.series.items():
                if not _selected(key, request):
                    continue
                kept = _in_window(instances, query)
                if not kept:
                    continue
                if request.aggregation is not None:
                    buckets = aggregate_series(kept, request.aggregation, query)
                    periods = buckets[-keep:] if query.last_n else buckets[:keep]
                    history.aggregated.append(AggregatedSeries(
                        key[0], key[1], kind_of(kept), periods,
                        cut_by_limit and len(buckets) > limit))
                    continue
                page = kept[-keep:] if query.last_n else kept[:keep]
                history.series.append(Series(key[0], key[1], copy.deepcopy(page),
                                             cut_by_limit and len(kept) > limit))
            out.append(history)
        return out

    # -- temporal API writes -------------------------------------------------------------
    def _find(self, tenant: str, entity_id: str, attr: str,
              number: int) -> tuple[list[JSONObject], int] | None:
        found = self._entity(tenant, entity_id)
        if found is None:
            return None
        for (name, _), instances in found.series.items():
            if name != attr:
                continue
            for pos, inst in enumerate(instances):
                if instance_number(inst.get("instanceId", "")) == number:
                    return instances, pos
        return None

    async def update_instance(
        self, tenant: str, entity_id: str, attr: str, number: int,
        change: Callable[[JSONObject], JSONObject],
    ) -> bool:
        hit = self._find(tenant, entity_id, attr, number)
        if hit is None:
            return False
        instances, pos = hit
        new = change(copy.deepcopy(instances[pos]))
        new["instanceId"] = instances[pos]["instanceId"]
        instances[pos] = new
        return True

    async def delete_instance(self, tenant: str, entity_id: str, attr: str, number: int) -> bool:
        hit = self._find(tenant, entity_id, attr, number)
        if hit is None:
            return False
        instances, pos = hit
        del instances[pos]
        return True

    async def delete_series(
        self, tenant: str, entity_id: str, attr: str, dataset_id: str | None
    ) -> bool:
        found = self._entity(tenant, entity_id)
        return found is not None and self._purge(found, attr, dataset_id)

    async def delete_entity(self, tenant: str, entity_id: str) -> bool:
        return self._tenants.get(tenant, {}).pop(entity_id, None) is not None

    async def tenants(self) -> list[str]:
        return list(self._tenants)

    async def expire(self, tenant: str, before: int, *, batch: int = 5000) -> int:
        gone = 0
        for entity in self._tenants.get(tenant, {}).values():
            for instances in entity.series.values():
                kept = [i for i in instances
                        if (time_of(i, "observedAt") or time_of(i, "createdAt") or 0) >= before]
                gone += len(instances) - len(kept)
                instances[:] = kept
        return gone
