"""/types and /attributes (clauses 5.7.5 - 5.7.10): what exists, by term or by full IRI."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"
VOCAB = "https://example.org/kuma#"
NOT_FOUND = "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"


@pytest.fixture
async def river(client: httpx.AsyncClient) -> httpx.AsyncClient:
    for body in (
        {"id": "urn:ngsi-ld:River:kuma", "type": "River",
         "level": {"type": "Property", "value": 2.7},
         "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [130.7, 32.2]}}},
        {"id": "urn:ngsi-ld:Bridge:1", "type": "Bridge", "level": 4.1,
         "crosses": {"type": "Relationship", "object": "urn:ngsi-ld:River:kuma"}},
    ):
        r = await client.post("entities", json=body)
        assert r.status_code == 201, r.text
    return client


async def test_type_list(river: httpx.AsyncClient) -> None:
    r = await river.get("types")
    body = r.json()
    assert body["type"] == "EntityTypeList" and body["id"].startswith("urn:ngsi-ld:EntityTypeList:")
    assert body["typeList"] == ["Bridge", "River"]
    assert "link" in r.headers


async def test_type_details(river: httpx.AsyncClient) -> None:
    r = await river.get("types", params={"details": "true"})
    assert r.json() == [
        {"id": DEFAULT + "Bridge", "type": "EntityType", "typeName": "Bridge",
         "attributeNames": ["crosses", "level"]},
        {"id": DEFAULT + "River", "type": "EntityType", "typeName": "River",
         "attributeNames": ["level", "location"]},
    ]


@pytest.mark.parametrize("name", ["River", quote(DEFAULT + "River", safe="")])
async def test_type_information_by_term_or_iri(river: httpx.AsyncClient, name: str) -> None:
    r = await river.get(f"types/{name}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == DEFAULT + "River" and body["type"] == "EntityTypeInfo"
    assert body["typeName"] == "River" and body["entityCount"] == 1
    assert [(a["attributeName"], a["attributeTypes"]) for a in body["attributeDetails"]] == [
        ("level", ["Property"]), ("location", ["GeoProperty"]),
    ]


async def test_a_type_resolves_through_the_request_context(client: httpx.AsyncClient) -> None:
    """The same term names another type under another @context, hence 404 without it."""
    body = {"id": "urn:ngsi-ld:Gauge:1", "type": "Gauge",
            "@context": {"Gauge": VOCAB + "Gauge"}}
    r = await client.post("entities", json=body, headers={"Content-Type": "application/ld+json"})
    assert r.status_code == 201, r.text
    r = await client.get("types/Gauge")
    assert r.status_code == 404
    assert r.json()["type"] == NOT_FOUND
    r = await client.get(f"types/{quote(VOCAB + 'Gauge', safe='')}")
    assert r.status_code == 200
    assert r.json()["typeName"] == VOCAB + "Gauge"  # no term for it in the core @context
    assert (await client.get("types")).json()["typeList"] == [VOCAB + "Gauge"]


async def test_attribute_list_and_details(river: httpx.AsyncClient) -> None:
    r = await river.get("attributes")
    body = r.json()
    assert body["type"] == "AttributeList"
    assert body["attributeList"] == ["crosses", "level", "location"]
    r = await river.get("attributes", params={"details": "true"})
    assert {a["attributeName"]: a["typeNames"] for a in r.json()} == {
        "crosses": ["Bridge"], "level": ["Bridge", "River"], "location": ["River"],
    }


@pytest.mark.parametrize("name", ["level", quote(DEFAULT + "level", safe="")])
async def test_attribute_information(river: httpx.AsyncClient, name: str) -> None:
    r = await river.get(f"attributes/{name}")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "id": DEFAULT + "level", "type": "Attribute", "attributeName": "level",
        "attributeCount": 2, "attributeTypes": ["Property"], "typeNames": ["Bridge", "River"],
    }


@pytest.mark.parametrize(
    "path", ["types/Lamp", "attributes/colour", "attributes/id", "attributes/createdAt"]
)
async def test_unknown_names_are_not_found(river: httpx.AsyncClient, path: str) -> None:
    r = await river.get(path)
    assert r.status_code == 404
    assert r.json()["type"] == NOT_FOUND


async def test_json_ld_answers_carry_the_context(river: httpx.AsyncClient) -> None:
    r = await river.get("types/River", headers={"Accept": "application/ld+json"})
    assert r.headers["content-type"].startswith("application/ld+json")
    assert "@context" in r.json() and "link" not in r.headers
