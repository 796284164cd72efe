"""Query Entities parameters (clauses 5.7.2.4, 6.4.3.2, 4.12, 4.23) and the Query body."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture
async def seeded(client: httpx.AsyncClient) -> httpx.AsyncClient:
    entities = [
        {"id": f"urn:ngsi-ld:Vehicle:{n}", "type": "Vehicle",
         "speed": {"type": "Property", "value": speed},
         "name": {"type": "Property", "value": name}}
        for n, speed, name in ((1, 80, "b"), (2, 120, "á"), (3, 50, "A"))
    ]
    r = await client.post("entityOperations/create", json=entities)
    assert r.status_code == 201, r.text
    return client


@pytest.mark.parametrize(
    "params",
    [{"id": "urn:ngsi-ld:Vehicle:1"}, {"attrs": "createdAt"},
     {"q": 'modifiedAt>"2020-01-01T00:00:00Z"'}, {"attrs": "id,type"},
     {"type": "*", "local": "false"}, {"type": "Vehicle", "csf": "))bad(("},
     {"type": "Vehicle", "pick": "speed", "attrs": "speed"},
     {"type": "Vehicle", "geometryProperty": "location"}],
)
async def test_rejected_queries_are_bad_request_data(
    seeded: httpx.AsyncClient, params: dict[str, str]
) -> None:
    r = await seeded.get("entities", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"


async def test_paging_links_repeat_the_query_in_name_order(seeded: httpx.AsyncClient) -> None:
    r = await seeded.get("entities", params={"type": "Vehicle", "limit": "1", "offset": "1",
                                             "count": "true", "idPattern": "urn:ngsi-ld:.*"})
    assert r.status_code == 200
    links = [part.strip() for part in r.headers["link"].split(",")
             if "json-ld#context" not in part]
    assert links == [
        '</ngsi-ld/v1/entities?count=true&idPattern=urn:ngsi-ld:.*&limit=1&offset=0'
        '&type=Vehicle>; rel="prev"; type="application/json"',
        '</ngsi-ld/v1/entities?count=true&idPattern=urn:ngsi-ld:.*&limit=1&offset=2'
        '&type=Vehicle>; rel="next"; type="application/json"',
    ]


async def test_order_by_with_and_without_collation(seeded: httpx.AsyncClient) -> None:
    async def names(**params: str) -> list[str]:
        r = await seeded.get("entities", params={"type": "Vehicle", **params})
        assert r.status_code == 200, r.text
        return [e["name"]["value"] for e in r.json()]

    assert await names(orderBy="name") == ["A", "b", "á"]
    assert await names(orderBy="name", collation="und") == ["A", "á", "b"]
    assert await names(orderBy="speed;desc") == ["á", "b", "A"]
    r = await seeded.get("entities", params={"type": "Vehicle", "orderBy": "name",
                                             "collation": "!!nope"})
    assert r.status_code == 400


async def test_pick_drops_entities_left_empty(seeded: httpx.AsyncClient) -> None:
    r = await seeded.post("entities", json={"id": "urn:ngsi-ld:Vehicle:9", "type": "Vehicle"})
    assert r.status_code == 201
    r = await seeded.get("entities", params={"type": "Vehicle", "pick": "speed",
                                             "orderBy": "speed"})
    assert r.json() == [{"speed": {"type": "Property", "value": v}} for v in (50, 80, 120)]


@pytest.mark.parametrize(
    "body",
    [{"type": "Query", "entities": [{"id": "urn:ngsi-ld:Vehicle:1"}]},
     {"type": "Query", "entities": [{"type": "Vehicle"}], "attrs": []},
     {"type": "Query", "entities": [{"type": "Vehicle"}], "joinLevel": 0, "join": "inline"},
     {"type": "Query", "entities": [{"type": "Vehicle"}],
      "temporalQ": {"timerel": "after", "timeAt": "2020-01-01T00:00:00Z"}},
     {"type": "Query", "entities": [{"type": "Vehicle", "id": ["urn:ngsi-ld:Vehicle:1", 5]}]},
     {"type": "Query", "entities": [{"type": "Vehicle"}],
      "ordering": {"orderBy": ["id"], "geometry": 5}},
     {"type": "Query", "entities": [{"type": "Vehicle"}],
      "ordering": {"orderBy": ["location;dist-asc"], "coordinates": "8,40"}},
     {"type": "Query", "scopeQ": "/A"}],
)
async def test_rejected_query_bodies(seeded: httpx.AsyncClient, body: dict[str, object]) -> None:
    r = await seeded.post("entityOperations/query", json=body)
    assert r.status_code == 400, r.text


async def test_query_body_ids_pick_and_ordering(seeded: httpx.AsyncClient) -> None:
    body = {"type": "Query",
            "entities": [{"type": "Vehicle", "id": ["urn:ngsi-ld:Vehicle:1", "urn:ngsi-ld:Vehicle:2"],
                          "idPattern": "^urn:ngsi-ld:Vehicle:3$"}],
            "pick": ["id", "speed"], "ordering": {"orderBy": ["speed;desc"]}}
    r = await seeded.post("entityOperations/query", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == [
        {"id": "urn:ngsi-ld:Vehicle:2", "speed": {"type": "Property", "value": 120}},
        {"id": "urn:ngsi-ld:Vehicle:1", "speed": {"type": "Property", "value": 80}},
    ]


@pytest.mark.parametrize(
    ("q", "expected"),
    [("speed<12345678901234567890", ["urn:ngsi-ld:Vehicle:1", "urn:ngsi-ld:Vehicle:2",
                                     "urn:ngsi-ld:Vehicle:3"]),
     ("speed>12345678901234567890", []),
     ("speed==12345678901234567890,80", ["urn:ngsi-ld:Vehicle:1"]),
     ("speed==-1" + "0" * 400 + "..100", ["urn:ngsi-ld:Vehicle:1", "urn:ngsi-ld:Vehicle:3"])],
)
async def test_numbers_beyond_64_bits_compare_as_numbers(
    seeded: httpx.AsyncClient, q: str, expected: list[str]
) -> None:
    r = await seeded.get("entities", params={"type": "Vehicle", "q": q})
    assert r.status_code == 200, r.text
    assert sorted(e["id"] for e in r.json()) == expected
