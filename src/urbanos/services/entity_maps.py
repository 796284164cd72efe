"""EntityMaps (clause 5.14): which sources hold each entity of a response, kept for a while.

This broker answers from its own store, so every entity maps to ``@none`` (the local
broker); the maps still matter to clients that page through distributed results and
pass the map back with the ``NGSILD-EntityMap`` header. Maps live in memory, per tenant,
and expire after ``ttl`` seconds; an expired or unknown map is simply replaced.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_maps = max_maps
        self.clock = clock
        self._maps: OrderedDict[tuple[str, str], EntityMap] = OrderedDict()

    def create(self, tenant: str, entity_ids: Iterable[str]) -> EntityMap:
        now = self.clock()
        entity_map = EntityMap(URN_PREFIX + uuid.uuid4().hex, now, now + self.ttl)
        for eid in entity_ids:
            entity_map.entities.setdefault(eid, [LOCAL_SOURCE])
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
