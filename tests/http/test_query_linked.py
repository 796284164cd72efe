"""Linked Entity retrieval over HTTP (clause 4.5.23): join, joinLevel and nested projections."""

from __future__ import annotations

import httpx
import pytest

ENTITIES = [
    {"id": "urn:ngsi-ld:Building:1", "type": "Building",
     "name": {"type": "Property", "value": "Tower"},
     "locatedAt": {"type": "Relationship", "object": "urn:ngsi-ld:City:1"}},
    {"id": "urn:ngsi-ld:City:1", "type": "City", "name": {"type": "Property", "value": "Paris"},
     "isIn": {"type": "Relationship", "object": "urn:ngsi-ld:Country:1"}},
    {"id": "urn:ngsi-ld:Country:1", "type": "Country",
     "name": {"type": "Property", "value": "France"}},
]


@pytest.fixture
async def seeded(client: httpx.AsyncClient) -> httpx.AsyncClient:
    r = await client.post("entityOperations/create", json=ENTITIES)
    assert r.status_code == 201, r.text
    return client


async def test_retrieve_inline_two_levels(seeded: httpx.AsyncClient) -> None:
    r = await seeded.get("entities/urn:ngsi-ld:Building:1",
                         params={"join": "inline", "joinLevel": "2", "options": "keyValues"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "id": "urn:ngsi-ld:Building:1", "type": "Building", "name": "Tower",
        "locatedAt": {"id": "urn:ngsi-ld:City:1", "type": "City", "name": "Paris",
                      "isIn": {"id": "urn:ngsi-ld:Country:1", "type": "Country",
                               "name": "France"}},
    }


async def test_query_flat_with_nested_pick(seeded: httpx.AsyncClient) -> None:
    r = await seeded.get("entities", params={
        "type": "Building", "join": "flat", "joinLevel": "2",
        "pick": "id,locatedAt{id,isIn{name}}"})
    assert r.status_code == 200, r.text
    assert r.json() == [
        {"id": "urn:ngsi-ld:Building:1",
         "locatedAt": {"type": "Relationship", "object": "urn:ngsi-ld:City:1"}},
        {"id": "urn:ngsi-ld:City:1",
         "isIn": {"type": "Relationship", "object": "urn:ngsi-ld:Country:1"}},
        {"name": {"type": "Property", "value": "France"}},
    ]


async def test_post_query_inline_defaults_to_one_level(seeded: httpx.AsyncClient) -> None:
    body = {"type": "Query", "entities": [{"type": "Building"}], "join": "inline"}
    r = await seeded.post("entityOperations/query", json=body)
    assert r.status_code == 200, r.text
    city = r.json()[0]["locatedAt"]["entity"]
    assert city["id"] == "urn:ngsi-ld:City:1"
    assert "entity" not in city["isIn"]


async def test_linked_q_needs_a_deep_enough_join(seeded: httpx.AsyncClient) -> None:
    q = 'locatedAt{isIn{name}}=="France"'
    r = await seeded.get("entities", params={"type": "Building", "q": q})
    assert r.status_code == 400
    assert r.json()["type"].endswith("BadRequestData")
    r = await seeded.get("entities", params={"type": "Building", "q": q, "join": "inline"})
    assert r.status_code == 400
    r = await seeded.get("entities", params={"type": "Building", "q": q, "join": "flat",
                                             "joinLevel": "2", "count": "true"})
    assert r.status_code == 200, r.text
    assert r.headers["NGSILD-Results-Count"] == "1"


@pytest.mark.parametrize(
    ("params", "status"),
    [({"pick": "locatedAt{name}"}, 400),
     ({"pick": "locatedAt{isIn{name}}", "join": "inline"}, 400),
     ({"omit": "locatedAt{isIn{name}}", "join": "inline", "joinLevel": "2"}, 200),
     ({"join": "inline", "joinLevel": "0"}, 400),
     ({"join": "sideways"}, 400)],
)
async def test_projection_depth_and_join_checks(
    seeded: httpx.AsyncClient, params: dict[str, str], status: int
) -> None:
    r = await seeded.get("entities/urn:ngsi-ld:Building:1", params=params)
    assert r.status_code == status, r.text
