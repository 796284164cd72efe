"""The SQLite write path: what a write records beside the entity document, and that the
shortcuts it takes (no change without a subscription, index rows rewritten only where the
entity changed) leave the same state as writing everything."""

from __future__ import annotations

from pathlib import Path

from urbanos.storage.base import Write
from urbanos.storage.outbox import open_outbox
from urbanos.storage.sqlite import SqliteStore
from urbanos.storage.sqlite.subscriptions import SqliteSubscriptionStore

DOC = {"id": "urn:e:1", "type": ["T"], "attrs": {}}


async def test_no_change_is_recorded_for_a_tenant_without_subscriptions(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "w.db")
    await store.open()
    subscriptions = SqliteSubscriptionStore(store.db)
    await subscriptions.open()
    outbox = open_outbox(store)
    assert outbox is not None
    await outbox.open()
    try:
        await store.apply("a", [Write("put", "urn:e:1", DOC)])
        assert await outbox.counts() == (0, 0)
        await subscriptions.insert("b", {"id": "urn:s:1", "type": "Subscription"})
        await store.apply("a", [Write("put", "urn:e:2", {**DOC, "id": "urn:e:2"})])
        await store.apply("b", [Write("put", "urn:e:1", DOC)])
        [change] = await outbox.changes(10)
        assert (change.tenant, change.entity_id) == ("b", "urn:e:1")
    finally:
        await store.close()
