"""Context source registrations in memory: the reference for the SQL stores."""

from __future__ import annotations

import copy

from urbanos.errors import AlreadyExists
from urbanos.storage.registrations import RegistrationUse, with_use, without_use
from urbanos.types import JSONObject

__all__ = ["MemoryRegistrationStore"]


class MemoryRegistrationStore:
    """Per tenant, a dict from id to (document, counters); a dict keeps insertion order,
    which is creation order since ``replace`` assigns an existing key."""

    def __init__(self) -> None:
        self._tenants: dict[str, dict[str, tuple[JSONObject, RegistrationUse]]] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def insert(self, tenant: str, doc: JSONObject) -> None:
        table = self._tenants.setdefault(tenant, {})
        if doc["id"] in table:
            raise AlreadyExists(f"registration {doc['id']} already exists")
        table[doc["id"]] = (copy.deepcopy(without_use(doc)), RegistrationUse())

    async def replace(self, tenant: str, doc: JSONObject) -> bool:
        table = self._tenants.get(tenant, {})
        if doc["id"] not in table:
            return False
        table[doc["id"]] = (copy.deepcopy(without_use(doc)), table[doc["id"]][1])
        return True

    async def delete(self, tenant: str, registration_id: str) -> bool:
        return self._tenants.get(tenant, {}).pop(registration_id, None) is not None

    async def get(self, tenant: str, registration_id: str) -> JSONObject | None:
        found = self._tenants.get(tenant, {}).get(registration_id)
        return None if found is None else with_use(copy.deepcopy(found[0]), found[1])

    async def all(self, tenant: str) -> list[JSONObject]:
        return [with_use(copy.deepcopy(d), u) for d, u in self._tenants.get(tenant, {}).values()]

    async def page(self, tenant: str, limit: int, offset: int) -> tuple[list[JSONObject], int]:
        rows = list(self._tenants.get(tenant, {}).values())
        chosen = rows[offset : offset + limit]
        return [with_use(copy.deepcopy(d), u) for d, u in chosen], len(rows)

    async def record_use(self, tenant: str, registration_id: str, use: RegistrationUse) -> None:
        table = self._tenants.get(tenant, {})
        found = table.get(registration_id)
        if found is not None:
            table[registration_id] = (found[0], found[1].plus(use))
