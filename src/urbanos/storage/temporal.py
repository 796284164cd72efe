"""The temporal store interface: attribute-instance history beside an entity store.

History is written by a hook the entity store calls inside its write transaction
(``write_hooks``): the hook derives instances from each ``Write``'s before and after with
``core.temporal.derive_instances``, so every create, update, merge, replace, batch and
delete lands in history atomically with the change itself.

Temporal API writes (clause 5.6.11 - 5.6.16) carry more than a before/after pair can say:
all the instances of a payload, or "forget this history". The temporal service plans such
a write like any other and attaches a ``Directive`` to the ``Write`` it returns; the hook
takes it from ``Directives`` in the same transaction. Keying by the Write object keeps the
entity store's interface unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from urbanos.core.temporal import Aggregation, NewInstance, TemporalQuery
from urbanos.core.temporal_render import EntityHistory
from urbanos.storage.base import Write
from urbanos.types import JSONObject

#: in a purge, every datasetId of the attribute
ALL_DATASETS = "*"


@dataclass(frozen=True, slots=True)
class TemporalEntity:
    """The identity of an entity with history; ``deleted_at`` once its entity is deleted."""

    id: str
    types: list[str]
    scope: list[str] | None
    created_at: str
    modified_at: str
    deleted_at: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """Which series to read and how: the window, the attributes and datasetIds (``@none``
    for the default instance), at most ``limit`` instances (or buckets) per series, in
    time order, backwards when the query has lastN."""

    query: TemporalQuery
    attrs: frozenset[str] | None = None
    datasets: frozenset[str] | None = None
    limit: int = 10
    aggregation: Aggregation | None = None

    def page_size(self) -> tuple[int, bool]:
        """How many instances (or buckets) to keep per series, and whether more than that
        means the limit cut the series (rather than lastN)."""
        last_n, limit = self.query.last_n, self.limit
        return min(limit, last_n or limit), last_n is None or last_n > limit


@dataclass(slots=True)
class Directive:
    """What a temporal API write records instead of the derived history.

    ``explicit`` instances replace the derived ones of their attributes (with
    ``replace_observed``, an instance with the same attribute, datasetId and observedAt as
    a recorded one replaces it); ``purge`` lists (attribute, datasetId or None or
    ``ALL_DATASETS``) series to forget; ``purge_entity`` forgets the whole history;
    ``untouched`` attributes get no derived instance (an expired entity's deletion).
    """

    explicit: list[NewInstance] = field(default_factory=list)
    replace_observed: bool = True
    purge: list[tuple[str, str | None]] = field(default_factory=list)
    purge_entity: bool = False
    #: attributes (and ``SCOPE``) whose history the write leaves exactly as it is
    untouched: frozenset[str] = frozenset()

    @property
    def skip(self) -> frozenset[str]:
        return (frozenset(i.attr for i in self.explicit) | {a for a, _ in self.purge}
                | self.untouched)


class Directives:
    """Directives waiting for the hook, by the identity of the Write they belong to."""

    def __init__(self) -> None:
        self._waiting: dict[int, Directive] = {}
        self._lock = threading.Lock()

    def attach(self, write: Write, directive: Directive) -> None:
        with self._lock:
            self._waiting[id(write)] = directive

    def take(self, write: Write) -> Directive | None:
        with self._lock:
            return self._waiting.pop(id(write), None)

    def discard(self, writes: Iterable[Write]) -> None:
        """Forget directives whose write never reached the hook (the plan failed)."""
        with self._lock:
            for w in writes:
                self._waiting.pop(id(w), None)


class TemporalStore(Protocol):
    directives: Directives

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def entity(self, tenant: str, entity_id: str) -> TemporalEntity | None: ...

    async def select(
        self, tenant: str, ids: tuple[str, ...] | None, types: frozenset[str] | None
    ) -> list[TemporalEntity]:
        """Candidates of a query in creation order: by id and by any of ``types``."""
        ...

    async def series_names(self, tenant: str, entity_id: str) -> set[tuple[str, str | None]]:
        """The (attribute, datasetId) pairs the entity has history for."""
        ...

    async def window(
        self, tenant: str, entity_ids: list[str], request: HistoryRequest
    ) -> dict[str, dict[str, list[JSONObject]]]:
        """Every instance in the request's window, by entity and attribute (no limit):
        what ``q`` and ``geoQ`` are judged on (clause 5.7.4.4)."""
        ...

    async def with_instances(
        self, tenant: str, entity_ids: list[str], request: HistoryRequest
    ) -> set[str]:
        """The entities that have at least one instance in the request's window."""
        ...

    async def history(
        self, tenant: str, entity_ids: list[str], request: HistoryRequest
    ) -> list[EntityHistory]:
        """The series of each entity (in the order given; unknown ids are left out),
        instances or, with an aggregation, buckets computed by the store."""
        ...

    async def update_instance(
        self, tenant: str, entity_id: str, attr: str, number: int,
        change: Callable[[JSONObject], JSONObject],
    ) -> bool:
        """Replace one instance by ``change(instance)``; False when it is not there."""
        ...

    async def delete_instance(self, tenant: str, entity_id: str, attr: str, number: int) -> bool:
        ...

    async def delete_series(
        self, tenant: str, entity_id: str, attr: str, dataset_id: str | None
    ) -> bool:
        """Forget one attribute's history (``ALL_DATASETS`` for every datasetId)."""
        ...

    async def delete_entity(self, tenant: str, entity_id: str) -> bool: ...

    async def tenants(self) -> list[str]: ...

    async def expire(self, tenant: str, before: int, *, batch: int = 5000) -> int:
        """Forget instances whose time (observedAt, else createdAt) is before ``before``
        (microseconds); returns how many went. Runs in small transactions."""
        ...
