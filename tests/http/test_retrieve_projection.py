"""Retrieve Entity (clause 5.7.1): 404 rules, type selector, GeoJSON and version preference."""

from __future__ import annotations

import httpx
import pytest

E = "entities/urn:ngsi-ld:Building:1"


@pytest.fixture
async def seeded(client: httpx.AsyncClient) -> httpx.AsyncClient:
    body = {"id": "urn:ngsi-ld:Building:1", "type": "Building",
            "name": [{"type": "Property", "value": "Eiffel Tower"},
                     {"type": "Property", "value": "Tour Eiffel",
                      "datasetId": "urn:ngsi-ld:Dataset:fr"}],
            "category": {"type": "VocabProperty", "vocab": "commercial"},
            "location": {"type": "GeoProperty",
                         "value": {"type": "Point", "coordinates": [2.29, 48.85]}}}
    r = await client.post("entities", json=body)
    assert r.status_code == 201, r.text
    return client


@pytest.mark.parametrize(
    "params",
    [{"type": "Vehicle"}, {"attrs": "unknown"}, {"pick": "unknown"},
     {"omit": "id,type,name,category,location"}],
)
async def test_nothing_to_show_is_resource_not_found(
    seeded: httpx.AsyncClient, params: dict[str, str]
) -> None:
    r = await seeded.get(E, params=params)
    assert r.status_code == 404, r.text
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"


async def test_pick_with_pipe_and_dataset_filter(seeded: httpx.AsyncClient) -> None:
    r = await seeded.get(E, params={"pick": "name|category", "type": "Building"})
    assert r.status_code == 200
    assert set(r.json()) == {"name", "category"}
    r = await seeded.get(E, params={"attrs": "name", "datasetId": "urn:ngsi-ld:Dataset:fr"})
    assert r.json()["name"] == {"type": "Property", "value": "Tour Eiffel",
                                "datasetId": "urn:ngsi-ld:Dataset:fr"}


async def test_geometry_property_needs_geojson(seeded: httpx.AsyncClient) -> None:
    r = await seeded.get(E, params={"geometryProperty": "location"})
    assert r.status_code == 400
    r = await seeded.get(E, params={"geometryProperty": "location"},
                         headers={"Accept": "application/geo+json"})
    assert r.status_code == 200
    assert r.json()["geometry"] == {"type": "Point", "coordinates": [2.29, 48.85]}


async def test_prefer_an_older_version_reformats_vocab_properties(
    seeded: httpx.AsyncClient,
) -> None:
    r = await seeded.get(E, headers={"Prefer": "ngsi-ld=1.5"})
    assert r.status_code == 203
    assert r.headers["Preference-Applied"] == "ngsi-ld=1.5"
    assert r.json()["category"] == {"type": "Property", "value": "commercial"}
    r = await seeded.get(E, headers={"Prefer": "ngsi-ld=1.9"})
    assert r.status_code == 200
    assert r.json()["category"]["type"] == "VocabProperty"


async def test_flat_join_without_linked_entities_is_the_entity(seeded: httpx.AsyncClient) -> None:
    r = await seeded.get(E, params={"join": "flat", "options": "keyValues"})
    assert r.status_code == 200
    assert r.json()["id"] == "urn:ngsi-ld:Building:1"
    assert r.json()["name"] == {"dataset": {"@none": "Eiffel Tower",
                                            "urn:ngsi-ld:Dataset:fr": "Tour Eiffel"}}
