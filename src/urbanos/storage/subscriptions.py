"""Where subscriptions are kept: the SubscriptionStore interface and its memory version.

A store keeps, per tenant, each subscription's document (``core.subscription_payload``)
and its delivery bookkeeping (``DeliveryStats``) apart, so the notification side updating
counters never overwrites a concurrent Update Subscription, and the other way round.
Listing order is creation order.

Entity subscriptions (clause 5.8) and context source registration subscriptions (5.11)
share one table and one delivery bookkeeping, told apart by a *kind*: a store reads and
changes the subscriptions of its own kind only (``ENTITY`` unless built with ``of_kind``),
while ids stay unique per tenant over both kinds, so a delivery (tenant, subscription id)
names exactly one subscription whichever kind it is, and ``record_delivery`` counts it
whatever the kind: one write per outcome.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Protocol

from urbanos.core.subscription import DeliveryStats
from urbanos.errors import AlreadyExists
from urbanos.types import JSONObject

__all__ = [
    "CSOURCE",
    "ENTITY",
    "MemorySubscriptionStore",
    "StoredSubscription",
    "SubscriptionStore",
    "record",
]


#: the kinds of subscription a store keeps: on entities, on context source registrations
ENTITY, CSOURCE = "entity", "csource"


@dataclass(frozen=True, slots=True)
class StoredSubscription:
    tenant: str
    doc: JSONObject
    stats: DeliveryStats


class SubscriptionStore(Protocol):
    #: the kind of subscription this store reads and writes
    kind: str

    def of_kind(self, kind: str) -> SubscriptionStore:
        """The same table seen for another kind of subscription (opened and closed with
        this store)."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def insert(self, tenant: str, doc: JSONObject) -> None:
        """Add a subscription; AlreadyExists when the tenant has one with that id (of
        any kind)."""
        ...

    async def replace(self, tenant: str, doc: JSONObject) -> bool:
        """Replace the document (not the stats); False when there is no such subscription."""
        ...

    async def delete(self, tenant: str, subscription_id: str) -> bool: ...

    async def get(self, tenant: str, subscription_id: str) -> StoredSubscription | None: ...

    async def page(
        self, tenant: str, limit: int, offset: int
    ) -> tuple[list[StoredSubscription], int]:
        """One page in creation order, and how many the tenant has."""
        ...

    async def load(self, tenant: str | None = None) -> list[StoredSubscription]:
        """Every subscription of ``tenant`` (of all tenants with None): to build indexes."""
        ...

    async def record_delivery(
        self, tenant: str, subscription_id: str, *, ok: bool, at: str, error: str | None
    ) -> None:
        """Count one delivery attempt of the subscription with this id, whatever its kind
        (a delivery names only the id, unique over the kinds): the engine reports each
        outcome once. Nothing happens for an unknown subscription."""
        ...


def record(stats: DeliveryStats, *, ok: bool, at: str) -> DeliveryStats:
    """The bookkeeping after one attempt (clause 5.2.14): sent, failed, last times, status."""
    if ok:
        return replace(stats, times_sent=stats.times_sent + 1, last_notification=at,
                       last_success=at, status="ok")
    return replace(stats, times_sent=stats.times_sent + 1, times_failed=stats.times_failed + 1,
                   last_notification=at, last_failure=at, status="failed")


class MemorySubscriptionStore:
    """The in-memory SubscriptionStore, also the fake for unit tests. Stores of every kind
    made with ``of_kind`` share one table: per tenant, id -> (kind, document, stats)."""

    def __init__(self, kind: str = ENTITY,
                 _shared: MemorySubscriptionStore | None = None) -> None:
        self.kind = kind
        if _shared is None:
            self._tenants: dict[str, dict[str, tuple[str, JSONObject, DeliveryStats]]] = {}
            self.errors: dict[tuple[str, str], str] = {}
        else:
            self._tenants = _shared._tenants
            self.errors = _shared.errors

    def of_kind(self, kind: str) -> MemorySubscriptionStore:
        return MemorySubscriptionStore(kind, self)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _mine(self, tenant: str) -> dict[str, tuple[JSONObject, DeliveryStats]]:
        return {i: (d, s) for i, (k, d, s) in self._tenants.get(tenant, {}).items()
                if k == self.kind}

    async def insert(self, tenant: str, doc: JSONObject) -> None:
        table = self._tenants.setdefault(tenant, {})
        if doc["id"] in table:
            raise AlreadyExists(f"subscription {doc['id']} already exists")
        table[doc["id"]] = (self.kind, copy.deepcopy(doc), DeliveryStats())

    async def replace(self, tenant: str, doc: JSONObject) -> bool:
        table = self._tenants.get(tenant, {})
        found = table.get(doc["id"])
        if found is None or found[0] != self.kind:
            return False
        table[doc["id"]] = (self.kind, copy.deepcopy(doc), found[2])
        return True

    async def delete(self, tenant: str, subscription_id: str) -> bool:
        table = self._tenants.get(tenant, {})
        found = table.get(subscription_id)
        if found is None or found[0] != self.kind:
            return False
        del table[subscription_id]
        return True

    async def get(self, tenant: str, subscription_id: str) -> StoredSubscription | None:
        found = self._tenants.get(tenant, {}).get(subscription_id)
        if found is None or found[0] != self.kind:
            return None
        return StoredSubscription(tenant, copy.deepcopy(found[1]), found[2])

    async def page(
        self, tenant: str, limit: int, offset: int
    ) -> tuple[list[StoredSubscription], int]:
        rows = list(self._mine(tenant).values())
        chosen = rows[offset : offset + limit]
        return [StoredSubscription(tenant, copy.deepcopy(d), s) for d, s in chosen], len(rows)

    async def load(self, tenant: str | None = None) -> list[StoredSubscription]:
        tenants = [tenant] if tenant is not None else list(self._tenants)
        return [
            StoredSubscription(t, copy.deepcopy(d), s)
            for t in tenants
            for d, s in self._mine(t).values()
        ]

    async def record_delivery(
        self, tenant: str, subscription_id: str, *, ok: bool, at: str, error: str | None
    ) -> None:
        table = self._tenants.get(tenant, {})
        found = table.get(subscription_id)
        if found is None:
            return
        kind, doc, stats = found
        table[subscription_id] = (kind, doc, record(stats, ok=ok, at=at))
        if error is not None:
            self.errors[(tenant, subscription_id)] = error
