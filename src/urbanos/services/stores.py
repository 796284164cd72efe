"""The stores of one process: the entity store named by the settings and the subscription,
history and snapshot stores that live beside it. The app opens them here and hands them to the
services; HTTP never imports a store."""

from __future__ import annotations

from dataclasses import dataclass

from urbanos.storage import open_store
from urbanos.storage.base import DEFAULT_TENANT, EntityStore
from urbanos.storage.snapshots import SnapshotStore, snapshot_store_for
from urbanos.storage.subscriptions import SubscriptionStore, subscription_store_for
from urbanos.storage.temporal import TemporalStore, temporal_store_for

__all__ = ["DEFAULT_TENANT", "EntityStore", "Stores"]


@dataclass(slots=True)
class Stores:
    entities: EntityStore
    subscriptions: SubscriptionStore
    history: TemporalStore | None
    snapshots: SnapshotStore

    @classmethod
    async def open(cls, url: str, *, readers: int, store: EntityStore | None = None) -> Stores:
        """Open ``store``, or the one ``url`` names, and the stores beside it. The history
        store registers its write hook here, before any write."""
        entities = store or open_store(url, readers=readers)
        await entities.open()
        subscriptions = subscription_store_for(entities)
        await subscriptions.open()
        history = temporal_store_for(entities)
        if history is not None:
            await history.open()
        snapshots = snapshot_store_for(entities)
        await snapshots.open()
        return cls(entities, subscriptions, history, snapshots)

    async def close(self) -> None:
        await self.subscriptions.close()
        await self.entities.close()
