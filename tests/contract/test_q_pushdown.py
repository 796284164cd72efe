"""Each SQL store's q pushdown selects exactly what the reference evaluator selects."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from urbanos.core.query.parse import parse_q
from urbanos.core.selection import EntityQuery
from urbanos.storage import open_stores
from urbanos.storage.base import EntityStore, Write
from urbanos.storage.memory import MemoryStore

V = "https://example.org/"


def expand(term: str) -> str:
    return term if ":" in term else V + term


def entity(n: int) -> dict:
    attrs: dict = {
        V + "level": [{"type": "Property", "value": n % 7 + 0.5}],
        V + "name": [{"type": "Property", "value": f"s{n % 3}"}],
        V + "bridge": [{"type": "Relationship", "object": f"urn:ngsi-ld:Bridge:{n % 4}"}],
        V + "tags": [{"type": "Property", "value": ["a", "b"] if n % 2 else ["c"]}],
        V + "when": [{"type": "Property", "value": f"2024-01-0{n % 9 + 1}T00:00:00Z"}],
    }
    if n % 5 == 0:
        attrs[V + "level"].append({"type": "Property", "value": 100, "datasetId": "urn:d:1"})
    if n % 6 == 0:
        del attrs[V + "name"]
    return {"id": f"urn:ngsi-ld:S:{n}", "type": [V + "S"], "attrs": attrs,
            "createdAt": "2024-01-01T00:00:00.000Z", "modifiedAt": "2024-01-01T00:00:00.000Z"}


QUERIES = [
    "level>3", "level>=3.5;name==\"s1\"", "level<2|name==\"s2\"", "level==1.5,2.5",
    "level==2..4", "level!=100", "name!=\"s1\"", "bridge==urn:ngsi-ld:Bridge:2",
    "tags==\"a\"", "tags!=\"a\"", "name", "!name", "name~=\"s[12]\"",
    "when>2024-01-05T00:00:00Z", "when==\"2024-01-03T00:00:00Z\"", "(level>5|bridge==urn:ngsi-ld:Bridge:1);tags==\"c\"",
    "level>99", "level<0",
]


@pytest.fixture
async def stores(store_url: str) -> AsyncIterator[tuple[MemoryStore, EntityStore]]:
    """The reference store and the store under test (SQLite, PostgreSQL, memory), both
    holding the same entities."""
    memory, opened = MemoryStore(), open_stores(store_url)
    await opened.open()
    store = opened.entities
    writes = [Write("put", e["id"], e) for e in (entity(n) for n in range(60))]
    await memory.apply("", writes)
    await store.apply("", writes)
    yield memory, store
    await opened.close()


@pytest.mark.parametrize("q", QUERIES)
async def test_pushdown_matches_reference(
    stores: tuple[MemoryStore, EntityStore], q: str
) -> None:
    memory, store = stores
    query = EntityQuery(q=parse_q(q, expand), limit=1000, count=True)
    expected = await memory.query("", query)
    got = await store.query("", query)
    assert [e["id"] for e in got.entities] == [e["id"] for e in expected.entities]
    assert got.total == expected.total
