"""Query semantics every store shares: ordering, linked-entity q terms, id precedence."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from urbanos.core.ordering import parse_ordering
from urbanos.core.query import parse_q
from urbanos.core.selection import EntityQuery, EntitySelector
from urbanos.storage.base import EntityStore, Write
from urbanos.storage.memory import MemoryStore
from urbanos.storage.sqlite import SqliteStore
from urbanos.types import JSONObject

X = "https://ex.org/"


def expand(name: str) -> str:
    return X + name


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EntityStore]:
    s: EntityStore = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "s.db")
    await s.open()
    yield s
    await s.close()


def building(n: int, owner: str, rank: object = None) -> JSONObject:
    attrs: JSONObject = {X + "owner": [{"type": "Relationship", "object": owner}]}
    if rank is not None:
        attrs[X + "rank"] = [{"type": "Property", "value": rank}]
    return {"id": f"urn:b:{n}", "type": [X + "Building"], "attrs": attrs}


def person(pid: str, name: str, works: str | None = None) -> JSONObject:
    attrs: JSONObject = {X + "name": [{"type": "Property", "value": name}]}
    if works:
        attrs[X + "works"] = [{"type": "Relationship", "object": works}]
    return {"id": pid, "type": [X + "Person"], "attrs": attrs}


async def seed(store: EntityStore) -> None:
    docs = [building(1, "urn:p:ann", 5), building(2, "urn:p:bob", "abc"),
            building(3, "urn:p:ann"), person("urn:p:ann", "Ann", "urn:o:acme"),
            person("urn:p:bob", "Bob"),
            {"id": "urn:o:acme", "type": [X + "Org"],
             "attrs": {X + "name": [{"type": "Property", "value": "Acme"}]}}]
    await store.apply("", [Write("put", d["id"], d) for d in docs])


async def test_linked_q_follows_relationships_level_by_level(store: EntityStore) -> None:
    await seed(store)
    q = parse_q('owner{works{name}}=="Acme"', expand)
    page = await store.query("", EntityQuery(q=q, count=True))
    assert sorted(e["id"] for e in page.entities) == ["urn:b:1", "urn:b:3"]
    hinted = parse_q('owner{Org:name}=="Ann"', expand)
    assert (await store.query("", EntityQuery(q=hinted))).entities == []


async def test_order_applies_before_paging(store: EntityStore) -> None:
    await seed(store)
    order = parse_ordering("rank", expand)
    query = EntityQuery(types=None, ids=("urn:b:1", "urn:b:2", "urn:b:3"), order=order,
                        limit=2, offset=1, count=True)
    page = await store.query("", query)
    assert [e["id"] for e in page.entities] == ["urn:b:2", "urn:b:3"]
    assert page.total == 3


async def test_selector_ids_take_precedence_over_id_pattern(store: EntityStore) -> None:
    await seed(store)
    selector = EntitySelector(ids=("urn:b:1", "urn:b:2"), id_pattern="^urn:b:3$")
    page = await store.query("", EntityQuery(selectors=(selector,)))
    assert sorted(e["id"] for e in page.entities) == ["urn:b:1", "urn:b:2"]
