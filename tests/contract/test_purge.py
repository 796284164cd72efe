"""Purge Entities (clause 5.6.21) over more entities than one page of its work: every
selected entity is deleted or trimmed, on every store, even when trimming takes an entity
out of the selection while the purge runs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from urbanos.core.query.ast import TypeName
from urbanos.core.selection import EntityQuery
from urbanos.services.entities import EntityService
from urbanos.storage import open_stores
from urbanos.storage.base import EntityStore, Write
from urbanos.types import JSONObject

X = "https://ex.org/"
LAMP = X + "Lamp"
LEVEL, COLOUR = X + "level", X + "colour"
CHUNK = 2  # the purge's page size, lowered so that 7 lamps make 4 pages
LAMPS = [f"urn:lamp:{n}" for n in range(7)]


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[EntityStore]:
    stores = open_stores(store_url)
    await stores.open()
    s = stores.entities
    await s.apply("", [Write("put", i, lamp(i)) for i in [*LAMPS, "urn:lamp:unlit"]])
    yield s
    await stores.close()


def lamp(eid: str) -> JSONObject:
    attrs: JSONObject = {COLOUR: [{"type": "Property", "value": "white"}]}
    if eid != "urn:lamp:unlit":
        attrs[LEVEL] = [{"type": "Property", "value": 3}]
    return {"id": eid, "type": [LAMP], "attrs": attrs}


def with_level() -> EntityQuery:
    return EntityQuery(types=TypeName(LAMP), attrs=frozenset({LEVEL}))


async def attrs_of(store: EntityStore) -> dict[str, set[str]]:
    found = await store.get_many("", [*LAMPS, "urn:lamp:unlit"])
    return {i: set(e["attrs"]) for i, e in found.items()}


async def test_drop_removes_the_attribute_from_every_selected_entity(store: EntityStore) -> None:
    touched = await EntityService(store).purge("", with_level(), drop=frozenset({LEVEL}),
                                               chunk=CHUNK)
    assert touched == len(LAMPS)
    assert await attrs_of(store) == {i: {COLOUR} for i in [*LAMPS, "urn:lamp:unlit"]}


async def test_keep_trims_every_selected_entity(store: EntityStore) -> None:
    await EntityService(store).purge("", with_level(), keep=frozenset({COLOUR}), chunk=CHUNK)
    assert await attrs_of(store) == {i: {COLOUR} for i in [*LAMPS, "urn:lamp:unlit"]}


async def test_delete_removes_every_selected_entity(store: EntityStore) -> None:
    assert await EntityService(store).purge("", with_level(), chunk=CHUNK) == len(LAMPS)
    assert await attrs_of(store) == {"urn:lamp:unlit": {COLOUR}}
