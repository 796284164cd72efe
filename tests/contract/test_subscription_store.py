"""What every SubscriptionStore does: ids per tenant, creation order, documents and delivery
counters kept apart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import reset_postgres
from urbanos.errors import AlreadyExists
from urbanos.storage.postgres import PostgresStore
from urbanos.storage.postgres.subscriptions import PostgresSubscriptionStore
from urbanos.storage.sqlite import SqliteStore
from urbanos.storage.sqlite.subscriptions import SqliteSubscriptionStore
from urbanos.storage.subscriptions import (
    CSOURCE,
    ENTITY,
    MemorySubscriptionStore,
    SubscriptionStore,
)
from urbanos.types import JSONObject


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SubscriptionStore]:
    if request.param == "memory":
        yield MemorySubscriptionStore()
        return
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_database")
        pg = PostgresStore(url, pool_size=2)
        await pg.open()
        pg_subs = PostgresSubscriptionStore(pg)
        await pg_subs.open()
        try:
            yield pg_subs
        finally:
            await pg_subs.close()
            await pg.close()
            reset_postgres(url)
        return
    entities = SqliteStore(tmp_path / "s.db")
    await entities.open()
    subs = SqliteSubscriptionStore(entities.db)
    await subs.open()
    yield subs
    await subs.close()
    await entities.close()


def doc(n: int, **extra: object) -> JSONObject:
    return {"id": f"urn:ngsi-ld:Subscription:{n}", "type": "Subscription",
            "notification": {"endpoint": {"uri": "http://r/n"}}, **extra}


async def test_insert_get_and_duplicate(store: SubscriptionStore) -> None:
    await store.insert("", doc(1))
    found = await store.get("", "urn:ngsi-ld:Subscription:1")
    assert found is not None and found.doc == doc(1)
    assert found.stats.times_sent == 0 and found.stats.status is None
    with pytest.raises(AlreadyExists):
        await store.insert("", doc(1))


async def test_tenants_are_separate(store: SubscriptionStore) -> None:
    await store.insert("a", doc(1))
    await store.insert("b", doc(1, description="other"))
    assert await store.get("", "urn:ngsi-ld:Subscription:1") is None
    b = await store.get("b", "urn:ngsi-ld:Subscription:1")
    assert b is not None and b.doc["description"] == "other"
    assert [s.tenant for s in await store.load()] == ["a", "b"]
    assert [s.tenant for s in await store.load("b")] == ["b"]


async def test_page_keeps_creation_order(store: SubscriptionStore) -> None:
    for n in (3, 1, 2):
        await store.insert("", doc(n))
    page, total = await store.page("", 2, 1)
    assert total == 3
    assert [s.doc["id"][-1] for s in page] == ["1", "2"]


async def test_replace_keeps_counters_and_delete(store: SubscriptionStore) -> None:
    sid = "urn:ngsi-ld:Subscription:1"
    assert not await store.replace("", doc(1))
    await store.insert("", doc(1))
    await store.record_delivery("", sid, ok=False, at="2024-01-01T00:00:00.000Z", error="503")
    assert await store.replace("", doc(1, description="new"))
    found = await store.get("", sid)
    assert found is not None and found.doc["description"] == "new"
    assert found.stats.times_failed == 1
    assert await store.delete("", sid)
    assert not await store.delete("", sid)
    assert await store.get("", sid) is None


async def test_record_delivery(store: SubscriptionStore) -> None:
    sid = "urn:ngsi-ld:Subscription:1"
    await store.insert("", doc(1))
    await store.record_delivery("", sid, ok=True, at="2024-01-01T00:00:01.000Z", error=None)
    await store.record_delivery("", sid, ok=False, at="2024-01-01T00:00:02.000Z", error="timeout")
    await store.record_delivery("", "urn:unknown", ok=True, at="2024-01-01T00:00:03.000Z",
                                error=None)
    found = await store.get("", sid)
    assert found is not None
    s = found.stats
    assert (s.times_sent, s.times_failed, s.status) == (2, 1, "failed")
    assert s.last_success == "2024-01-01T00:00:01.000Z"
    assert s.last_failure == s.last_notification == "2024-01-01T00:00:02.000Z"


async def test_kinds_are_apart_and_ids_unique_over_both(store: SubscriptionStore) -> None:
    """Entity and csource subscriptions share one table: each kind sees its own, and a
    delivery's (tenant, id) names exactly one subscription."""
    csource = store.of_kind(CSOURCE)
    assert store.kind == ENTITY and csource.kind == CSOURCE
    await store.insert("", doc(1))
    await csource.insert("", doc(2, entities=[{"type": "Building"}]))
    with pytest.raises(AlreadyExists):
        await csource.insert("", doc(1))
    with pytest.raises(AlreadyExists):
        await store.insert("", doc(2))
    assert await store.get("", "urn:ngsi-ld:Subscription:2") is None
    assert await csource.get("", "urn:ngsi-ld:Subscription:1") is None
    assert [s.doc["id"] for s in (await store.page("", 10, 0))[0]] == [doc(1)["id"]]
    rows, total = await csource.page("", 10, 0)
    assert [s.doc["id"] for s in rows] == [doc(2)["id"]] and total == 1
    assert [s.doc["id"] for s in await csource.load()] == [doc(2)["id"]]
    assert [s.doc["id"] for s in await store.load("")] == [doc(1)["id"]]
    assert not await store.replace("", doc(2, isActive=False))
    assert not await store.delete("", "urn:ngsi-ld:Subscription:2")
    # a delivery names only the id: it is counted whichever kind the subscription is
    await store.record_delivery("", "urn:ngsi-ld:Subscription:2", ok=True, at=NOW, error=None)
    await csource.record_delivery("", "urn:ngsi-ld:Subscription:2", ok=False, at=NOW,
                                  error="HTTP 500 from the receiver")
    found = await csource.get("", "urn:ngsi-ld:Subscription:2")
    assert found is not None and found.stats.times_sent == 2 and found.stats.status == "failed"
    entity = await store.get("", "urn:ngsi-ld:Subscription:1")
    assert entity is not None and entity.stats.times_sent == 0
    assert await csource.replace("", doc(2, isActive=False))
    assert await csource.delete("", "urn:ngsi-ld:Subscription:2")
    assert await store.get("", "urn:ngsi-ld:Subscription:1") is not None


async def test_a_sqlite_file_from_before_kinds_is_upgraded(tmp_path: Path) -> None:
    """A subscriptions table without the kind column gets it at open; its rows are entity
    subscriptions."""
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(SQLITE_V1)
        conn.execute("INSERT INTO subscriptions (tenant, id, doc) VALUES ('', ?, ?)",
                     (doc(1)["id"], orjson.dumps(doc(1)).decode()))
    entities = SqliteStore(path)
    await entities.open()
    subs = SqliteSubscriptionStore(entities.db)
    await subs.open()
    try:
        assert [s.doc for s in await subs.load()] == [doc(1)]
        assert await subs.of_kind(CSOURCE).load() == []
    finally:
        await subs.close()
        await entities.close()


#: the subscriptions table of SQLite files written before the kind column
SQLITE_V1 = """CREATE TABLE subscriptions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, id TEXT NOT NULL,
    doc TEXT NOT NULL, times_sent INTEGER NOT NULL DEFAULT 0,
    times_failed INTEGER NOT NULL DEFAULT 0, last_notification TEXT, last_success TEXT,
    last_failure TEXT, last_status TEXT, last_error TEXT, UNIQUE (tenant, id))"""
NOW = "2030-01-01T00:00:00.000Z"
