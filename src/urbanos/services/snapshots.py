"""Snapshots (clause 5.16): frozen copies of what some queries selected, queried later.

Creating a snapshot runs its queries (``EntityService.query``, so expired entities stay
out) and keeps the selected entities in the stored form beside the Snapshot resource
(``storage.snapshots``). Queries that name a snapshot (the NGSILD-Snapshot header, clause
6.3.22) are answered from that copy with the same predicate the stores use
(``core.selection.select_page``); later writes to the live entities never reach it.

The queries run while the creation request waits, so a snapshot is already ``success``
when its creation is answered (``preparing`` never shows).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

from urbanos.core.query.ast import QExpr
from urbanos.core.query.evaluate import attribute_names, matches_q
from urbanos.core.selection import EntityQuery, select_page
from urbanos.core.timeutil import now_iso
from urbanos.core.validation import is_uri
from urbanos.errors import AlreadyExists, BadRequestData, ResourceNotFound
from urbanos.services.entities import EntityService
from urbanos.storage.base import Page
from urbanos.storage.snapshots import SnapshotStore
from urbanos.types import JSONObject, Terms

__all__ = ["DEFAULT_PRIORITY", "MAX_ENTITIES", "SnapshotService", "check_snapshot"]

DEFAULT_PRIORITY = 5
#: the most entities one snapshot may copy
MAX_ENTITIES = 100_000
_CHUNK = 1000
#: members a client may set on creation or update; the rest are the broker's
_WRITABLE = frozenset({"snapshotPriority"})
_READ_ONLY = frozenset({"snapshotQueries", "snapshotStatus", "snapshotQueriesDetails",
                        "createdAt", "modifiedAt", "lastUsedAt", "id"})
#: members of the Snapshot data type a purge's q may test (clause 5.16.7.4)
_QUERYABLE = ("snapshotPriority", "snapshotStatus", "lastUsedAt")


def _priority(value: object) -> int:
    if type(value) is not int or value < 0:
        raise BadRequestData("snapshotPriority must be a non-negative integer")
    return value


def check_snapshot(body: object) -> tuple[list[JSONObject], JSONObject]:
    """The raw queries and the client's members of a Snapshot payload (clause 5.2.41)."""
    if not isinstance(body, dict):
        raise BadRequestData("a Snapshot must be a JSON object")
    if body.get("type") != "Snapshot":
        raise BadRequestData('a Snapshot needs "type": "Snapshot"')
    queries = body.get("snapshotQueries")
    if not isinstance(queries, list) or not queries:
        raise BadRequestData("a Snapshot needs a non-empty snapshotQueries array")
    if "id" in body and not is_uri(body["id"]):
        raise BadRequestData("a Snapshot id must be a URI")
    known = _WRITABLE | {"type", "id", "snapshotQueries", "@context"}
    unknown = set(body) - known
    if unknown:
        raise BadRequestData(f"unknown or read-only Snapshot members: {', '.join(sorted(unknown))}")
    members: JSONObject = {"snapshotPriority": _priority(
        body.get("snapshotPriority", DEFAULT_PRIORITY))}
    if "id" in body:
        members["id"] = body["id"]
    return queries, members


class SnapshotService:
    def __init__(self, store: SnapshotStore, entities: EntityService,
                 clock: Callable[[], str] = now_iso) -> None:
        self.store = store
        self.entities = entities
        self.clock = clock

    async def create(self, tenant: str, raw_queries: list[JSONObject], members: JSONObject,
                     queries: list[EntityQuery]) -> str:
        """Create Snapshot (clause 5.16.1): run the queries, keep what they selected."""
        snapshot_id = members.get("id") or f"urn:ngsi-ld:Snapshot:{uuid.uuid4()}"
        if await self.store.get(tenant, snapshot_id) is not None:
            raise AlreadyExists(f"snapshot {snapshot_id} already exists")
        copied: dict[str, JSONObject] = {}
        details = []
        for query in queries:
            found = await self._select(tenant, query)
            details.append({"resultStatus": "success", "entitiesCount": len(found)})
            for entity in found:
                copied.setdefault(entity["id"], entity)
            if len(copied) > MAX_ENTITIES:
                raise BadRequestData(f"a snapshot holds at most {MAX_ENTITIES} entities")
        now = self.clock()
        doc: JSONObject = {
            "id": snapshot_id, "type": "Snapshot", "snapshotQueries": raw_queries,
            "snapshotStatus": "success", "snapshotPriority": members["snapshotPriority"],
            "snapshotQueriesDetails": details, "createdAt": now, "modifiedAt": now,
            "lastUsedAt": now,
        }
        await self.store.put(tenant, doc, list(copied.values()))
        return snapshot_id

    async def _select(self, tenant: str, query: EntityQuery) -> list[JSONObject]:
        out: list[JSONObject] = []
        offset = 0
        while True:
            page = await self.entities.query(
                tenant, replace(query, limit=_CHUNK, offset=offset, count=False)
            )
            out.extend(page.entities)
            if len(page.entities) < _CHUNK or len(out) > MAX_ENTITIES:
                return out
            offset += _CHUNK

    async def retrieve(self, tenant: str, snapshot_id: str) -> JSONObject:
        doc = await self.store.get(tenant, snapshot_id)
        if doc is None:
            raise ResourceNotFound(f"snapshot {snapshot_id} not found")
        return doc

    async def all(self, tenant: str) -> list[JSONObject]:
        return await self.store.all(tenant)

    async def update(self, tenant: str, snapshot_id: str, fragment: object) -> JSONObject:
        """Update Snapshot (clause 5.16.4): only snapshotPriority is the client's."""
        if not isinstance(fragment, dict) or not fragment:
            raise BadRequestData("a Snapshot fragment must be a non-empty JSON object")
        changes = {k: v for k, v in fragment.items() if k not in ("type", "@context")}
        bad = set(changes) - _WRITABLE
        if bad:
            raise BadRequestData(f"Snapshot members that cannot be updated: {', '.join(sorted(bad))}")
        doc = await self.retrieve(tenant, snapshot_id)
        if "snapshotPriority" in changes:
            doc["snapshotPriority"] = _priority(changes["snapshotPriority"])
        doc["modifiedAt"] = self.clock()
        await self.store.put(tenant, doc)
        return doc

    async def delete(self, tenant: str, snapshot_id: str) -> None:
        if not await self.store.delete(tenant, snapshot_id):
            raise ResourceNotFound(f"snapshot {snapshot_id} not found")

    async def clone(self, tenant: str, snapshot_id: str, body: object) -> str:
        """Clone Snapshot (clause 5.16.2): the same frozen copy under a new snapshot."""
        if not isinstance(body, dict) or body.get("type", "Snapshot") != "Snapshot":
            raise BadRequestData('a clone request is a Snapshot: "type": "Snapshot"')
        bad = set(body) - _WRITABLE - {"type", "@context"}
        if bad:
            raise BadRequestData(f"Snapshot members a clone cannot set: {', '.join(sorted(bad))}")
        doc = await self.retrieve(tenant, snapshot_id)
        copied = await self.store.entities(tenant, snapshot_id) or []
        now = self.clock()
        doc.update(id=f"urn:ngsi-ld:Snapshot:{uuid.uuid4()}", createdAt=now, modifiedAt=now,
                   lastUsedAt=now)
        if "snapshotPriority" in body:
            doc["snapshotPriority"] = _priority(body["snapshotPriority"])
        await self.store.put(tenant, doc, copied)
        return str(doc["id"])

    async def purge(self, tenant: str, q: QExpr, terms: Terms) -> int:
        """Purge Snapshots (clause 5.16.7): delete those the q selects; the q may only test
        members of the Snapshot data type."""
        names = {terms.expand(m): m for m in _QUERYABLE}
        outside = attribute_names(q) - set(names)
        if outside:
            raise BadRequestData(
                f"a snapshot purge can only test {', '.join(_QUERYABLE)} (clause 5.16.7.4)"
            )
        gone = 0
        for doc in await self.store.all(tenant):
            shape: JSONObject = {
                "id": doc["id"], "type": ["Snapshot"], "createdAt": doc.get("createdAt"),
                "modifiedAt": doc.get("modifiedAt"),
                "attrs": {iri: [{"type": "Property", "value": doc[m]}]
                          for iri, m in names.items() if m in doc},
            }
            if matches_q(q, shape) and await self.store.delete(tenant, doc["id"]):
                gone += 1
        return gone

    # -- reads scoped to a snapshot (NGSILD-Snapshot, clause 6.3.22) ---------------------
    async def _frozen(self, tenant: str, snapshot_id: str) -> list[JSONObject]:
        found = await self.store.entities(tenant, snapshot_id)
        if found is None:
            raise ResourceNotFound(f"snapshot {snapshot_id} not found")
        return found

    async def query(self, tenant: str, snapshot_id: str, query: EntityQuery) -> Page:
        frozen = await self._frozen(tenant, snapshot_id)
        by_id = {e["id"]: e for e in frozen}
        page, total = select_page(frozen, query, by_id.get)
        return Page(page, total)

    async def retrieve_entity(self, tenant: str, snapshot_id: str, entity_id: str) -> JSONObject:
        for entity in await self._frozen(tenant, snapshot_id):
            if entity["id"] == entity_id:
                return entity
        raise ResourceNotFound(f"entity {entity_id} is not in snapshot {snapshot_id}")
