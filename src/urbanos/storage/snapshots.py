"""Where snapshots (clause 5.16) are kept: the SnapshotStore interface and the memory
backend (the SQL ones: ``sqlite/snapshots.py``, ``postgres/snapshots.py``).

A snapshot is its resource document (``services.snapshots``) plus the frozen copy of the
entities its queries selected, in the stored form (``core.model``). The copy is written
with the document when the snapshot is filled and never changes; the document alone is
replaced on updates. SQLite keeps them in the entity store's file, PostgreSQL in the
catalog schema (migration catalog/0006), the memory store in dicts. Bound parameters only.
"""

from __future__ import annotations

import copy
from typing import Protocol

from urbanos.types import JSONObject

__all__ = ["MemorySnapshotStore", "SnapshotStore"]


class SnapshotStore(Protocol):
    async def open(self) -> None: ...

    async def put(self, tenant: str, doc: JSONObject,
                  entities: list[JSONObject] | None = None) -> None:
        """Insert or replace the document; ``entities`` (the frozen copy) when given."""
        ...

    async def get(self, tenant: str, snapshot_id: str) -> JSONObject | None: ...

    async def entities(self, tenant: str, snapshot_id: str) -> list[JSONObject] | None: ...

    async def all(self, tenant: str) -> list[JSONObject]:
        """Every document of the tenant, in creation order."""
        ...

    async def delete(self, tenant: str, snapshot_id: str) -> bool: ...


class MemorySnapshotStore:
    def __init__(self) -> None:
        self._docs: dict[tuple[str, str], JSONObject] = {}
        self._entities: dict[tuple[str, str], list[JSONObject]] = {}

    async def open(self) -> None:
        return None

    async def put(self, tenant: str, doc: JSONObject,
                  entities: list[JSONObject] | None = None) -> None:
        key = (tenant, doc["id"])
        self._docs[key] = copy.deepcopy(doc)
        if entities is not None or key not in self._entities:
            self._entities[key] = copy.deepcopy(entities or [])

    async def get(self, tenant: str, snapshot_id: str) -> JSONObject | None:
        found = self._docs.get((tenant, snapshot_id))
        return copy.deepcopy(found) if found is not None else None

    async def entities(self, tenant: str, snapshot_id: str) -> list[JSONObject] | None:
        found = self._entities.get((tenant, snapshot_id))
        return copy.deepcopy(found) if found is not None else None

    async def all(self, tenant: str) -> list[JSONObject]:
        return [copy.deepcopy(d) for (t, _), d in self._docs.items() if t == tenant]

    async def delete(self, tenant: str, snapshot_id: str) -> bool:
        self._entities.pop((tenant, snapshot_id), None)
        return self._docs.pop((tenant, snapshot_id), None) is not None
