"""After a bulk write the PostgreSQL store refreshes the planner's statistics itself, so
queries over freshly loaded data are planned from real row counts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from tests.conftest import reset_postgres
from urbanos.storage.base import Write
from urbanos.storage.postgres import PostgresStore

X = "https://ex.org/"


@pytest.fixture
async def store(postgres_database: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(postgres_database, pool_size=2)
    await s.open()
    yield s
    await s.close()
    reset_postgres(postgres_database)


def sensor(n: int) -> Write:
    doc = {"id": f"urn:s:{n}", "type": [X + "Sensor"],
           "attrs": {X + "level": [{"type": "Property", "value": n}]}}
    return Write("put", doc["id"], doc)


def analyzed(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT relname FROM pg_stat_user_tables WHERE schemaname = 'tenant_default'
               AND last_analyze IS NOT NULL"""
        ).fetchall()
    return {name for (name,) in rows}


async def test_a_bulk_write_is_followed_by_an_analysis(
    store: PostgresStore, postgres_database: str
) -> None:
    await store.apply("", [sensor(n) for n in range(500)])
    await asyncio.sleep(0.5)
    assert "attr_values" not in analyzed(postgres_database)  # 500 rows: not yet worth it
    await store.apply("", [sensor(n) for n in range(500, 1200)])
    for _ in range(100):
        if {"entities", "attr_values", "geo_values"} <= analyzed(postgres_database):
            break
        await asyncio.sleep(0.1)
    assert {"entities", "attr_values", "geo_values"} <= analyzed(postgres_database)
