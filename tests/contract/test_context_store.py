"""What every ContextStore does (the /jsonldContexts registry), and every store's leader
election: one leader per job among the nodes of one database, taken over when it goes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.conftest import reset_postgres
from urbanos.storage import open_stores
from urbanos.storage.base import ContextEntry, ContextUse, EntityStore
from urbanos.storage.postgres import PostgresStore
from urbanos.storage.postgres.listen import LEAD_LOCK

T0 = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EntityStore]:
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/c.db"}.get(request.param)
    if url is None:
        url = request.getfixturevalue("postgres_database")
    opened = open_stores(url, readers=1)
    await opened.open()
    try:
        yield opened.entities
    finally:
        await opened.close()
        if request.param == "postgres":
            reset_postgres(url)


def hosted(n: int) -> ContextEntry:
    return ContextEntry(f"urn:ngsi-ld:jsonldContext:{n}", "Hosted",
                        {"@context": {"b": "urn:b", "a": f"urn:a:{n}"}}, T0)


def cached(n: int, url: str, at: datetime = T0) -> ContextEntry:
    return ContextEntry(f"urn:ngsi-ld:jsonldContext:c{n}", "Cached", {"@context": {"n": n}},
                        at, url=url, expires_at=at + timedelta(hours=1))


async def test_entries_are_kept_per_tenant_with_every_field(store: EntityStore) -> None:
    implicit = ContextEntry("urn:ngsi-ld:jsonldContext:i", "ImplicitlyCreated",
                            {"@context": ["urn:x", {"k": "urn:k"}]}, T0, key=b'["urn:x"]')
    await store.contexts.add("", hosted(1))
    await store.contexts.add("", implicit)
    await store.contexts.add("other", hosted(2))
    assert await store.contexts.get("", hosted(1).local_id) == hosted(1)
    assert await store.contexts.get("", implicit.local_id) == implicit
    # the document keeps its key order: served as it was added
    first = await store.contexts.get("", hosted(1).local_id)
    assert first is not None and list(first.document["@context"]) == ["b", "a"]
    assert await store.contexts.get("other", hosted(1).local_id) is None
    assert sorted(e.local_id for _, e in await store.contexts.load("")) == [
        hosted(1).local_id, implicit.local_id]
    everything = await store.contexts.load()
    assert sorted((t, e.local_id) for t, e in everything) == [
        ("", hosted(1).local_id), ("", implicit.local_id), ("other", hosted(2).local_id)]


async def test_delete(store: EntityStore) -> None:
    await store.contexts.add("", hosted(1))
    assert await store.contexts.delete("other", hosted(1).local_id) is False
    assert await store.contexts.delete("", hosted(1).local_id) is True
    assert await store.contexts.delete("", hosted(1).local_id) is False
    assert await store.contexts.load("") == []


async def test_one_cached_entry_per_url_keeps_its_id_and_counts(store: EntityStore) -> None:
    """A second download of a URL (another node's, or a reload) refreshes the entry kept
    for it: its id and counts stay, its document, createdAt and expiry change."""
    first = await store.contexts.cache("", cached(1, "http://x/ctx"))
    assert first == cached(1, "http://x/ctx")
    await store.contexts.count_uses([ContextUse("", first.local_id, 3, T0)])
    later = T0 + timedelta(minutes=5)
    second = await store.contexts.cache("", cached(2, "http://x/ctx", later))
    assert second.local_id == first.local_id and second.hits == 3
    assert second.document == {"@context": {"n": 2}} and second.created_at == later
    assert second.expires_at == later + timedelta(hours=1)
    other_tenant = await store.contexts.cache("t", cached(3, "http://x/ctx"))
    assert other_tenant.local_id == cached(3, "").local_id
    assert len(await store.contexts.load("")) == 1


async def test_counting_uses_adds_and_keeps_the_latest_time(store: EntityStore) -> None:
    await store.contexts.add("", hosted(1))
    one = hosted(1).local_id
    await store.contexts.count_uses([ContextUse("", one, 2, T0 + timedelta(seconds=9))])
    await store.contexts.count_uses([  # another node, behind in time; unknown ids skipped
        ContextUse("", one, 5, T0 + timedelta(seconds=1)),
        ContextUse("", "urn:ngsi-ld:jsonldContext:gone", 1, T0),
    ])
    got = await store.contexts.get("", one)
    assert got is not None and got.hits == 7
    assert got.last_usage == T0 + timedelta(seconds=9)


async def test_a_single_node_leads_every_job(store: EntityStore) -> None:
    assert await store.try_lead("job") is True
    assert await store.try_lead("job") is True
    assert await store.try_lead("another job") is True


async def comes_to_lead(node: PostgresStore, job: str, timeout: float = 60.0) -> bool:
    """Whether ``node`` leads ``job`` before a generous ``timeout``: the server frees an
    ended session's locks a moment after it ends (a long moment on a busy machine)."""
    deadline = time.monotonic() + timeout
    while not await node.try_lead(job):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.fixture
async def two_nodes(postgres_database: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two PostgreSQL stores on one database: two nodes of a cluster."""
    a, b = (PostgresStore(postgres_database, pool_size=1) for _ in range(2))
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()
        reset_postgres(postgres_database)


async def test_postgres_nodes_elect_one_leader_per_job_and_take_over(
    two_nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two_nodes
    assert await a.try_lead("job") is True
    assert await b.try_lead("job") is False
    assert await a.try_lead("job") is True  # asked again: still the leader
    assert await b.try_lead("other job") is True  # each job has its own leader
    assert await a.try_lead("other job") is False
    await a.close()  # its session ends: the lock is released
    assert await comes_to_lead(b, "job")
    assert await b.try_lead("other job") is True


async def test_a_postgres_leader_cut_off_from_the_database_stops_leading(
    two_nodes: tuple[PostgresStore, PostgresStore], postgres_database: str,
) -> None:
    """Its session ends (here: terminated by an operator): another node takes the job
    over, and the old leader, reconnected, sees it is no longer the leader."""
    a, b = two_nodes
    assert await a.try_lead("job") is True
    with psycopg.connect(postgres_database, autocommit=True) as admin:
        ended = admin.execute(
            """SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'
               AND classid = %s::bigint::oid AND granted AND database =
               (SELECT oid FROM pg_database WHERE datname = current_database())""",
            (LEAD_LOCK,),
        ).fetchall()
    assert ended == [(True,)]
    assert await comes_to_lead(b, "job")
    assert await a.try_lead("job") is False  # its session is gone: it finds out
    assert await a.try_lead("job") is False  # reconnected: b holds the lock
