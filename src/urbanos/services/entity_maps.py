"""EntityMaps (clause 5.14, 4.3.6.7): which sources hold each entity of a response, kept
for a while.

Each entity maps to the registrations whose sources gave some of it, and ``@none`` when
the local broker holds some of it. A query passing the map back (``NGSILD-EntityMap``)
is answered over the map's entities only (clause 5.5.9.3), and those that no longer fit
are removed from it. Maps live in memory, per tenant, and expire after ``ttl`` seconds (a
requested lifetime or expiresAt is bounded by ``max_ttl``); an expired or unknown map is
simply replaced.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from urbanos.core.timeutil import format_datetime
from urbanos.types import JSONObject

LOCAL_SOURCE = "@none"
URN_PREFIX = "urn:ngsi-ld:entitymap:"


@dataclass(slots=True)
class EntityMap:
    id: str
    created: float
    expires: float
    entities: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self, now: float) -> JSONObject:
        """The EntityMap data type (clause 5.2.39)."""
        left = max(0.0, self.expires - now)
        return {
            "id": self.id,
            "type": "EntityMap",
            "expiresAt": format_datetime(datetime.now(UTC) + timedelta(seconds=left)),
            "entityMap": {k: list(v) for k, v in self.entities.items()},
            "linkedMaps": {},
        }


class EntityMapRegistry:
    """Live maps by (tenant, id); the oldest go first once ``max_maps`` is reached."""

    def __init__(
        self, ttl: float = 3600.0, max_maps: int = 10_000,
        clock: Callable[[], float] = time.monotonic, max_ttl: float = 86_400.0,
    ) -> None:
        self.ttl = ttl
        self.max_ttl = max_ttl
        self.max_maps = max_maps
        self.clock = clock
        self._maps: OrderedDict[tuple[str, str], EntityMap] = OrderedDict()

    def create(self, tenant: str, entity_ids: Iterable[str],
               holders: Mapping[str, list[str]] | None = None,
               lifetime: float | None = None) -> EntityMap:
        """A new map of ``entity_ids``, each held by its ``holders`` (default: local), for
        ``lifetime`` seconds (default ``ttl``; at most ``max_ttl``)."""
        now = self.clock()
        ttl = self.ttl if lifetime is None else min(max(lifetime, 0.0), self.max_ttl)
        entity_map = EntityMap(URN_PREFIX + uuid.uuid4().hex, now, now + ttl)
        for eid in entity_ids:
            found = holders.get(eid) if holders is not None else None
            entity_map.entities.setdefault(eid, list(found) if found else [LOCAL_SOURCE])
        self._maps[(tenant, entity_map.id)] = entity_map
        while len(self._maps) > self.max_maps:
            self._maps.popitem(last=False)
        return entity_map

    def get(self, tenant: str, map_id: str) -> EntityMap | None:
        found = self._maps.get((tenant, map_id))
        if found is not None and found.expires <= self.clock():
            del self._maps[(tenant, map_id)]
            return None
        return found

    def delete(self, tenant: str, map_id: str) -> bool:
        return self._maps.pop((tenant, map_id), None) is not None

    def expire_in(self, tenant: str, map_id: str, seconds: float) -> bool:
        """Update EntityMap's expiresAt (clause 5.14.2), bounded by ``max_ttl``; a time in
        the past ends the map. False when there is no such live map."""
        found = self.get(tenant, map_id)
        if found is None:
            return False
        found.expires = self.clock() + min(seconds, self.max_ttl)
        return True

    def prune(self, tenant: str, map_id: str, keep: Iterable[str]) -> None:
        """Remove the entities no longer fitting the map's query (clause 5.5.9.3)."""
        found = self.get(tenant, map_id)
        if found is None:
            return
        kept = set(keep)
        for eid in [e for e in found.entities if e not in kept]:
            del found.entities[eid]
