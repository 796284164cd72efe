"""Create Entity refuses invalid payloads with the right ProblemDetails and stores nothing.

Each case is one rule of GS CIM 009 (see tests/unit/test_entity.py for the rules in detail);
here we check the whole request path: status, error type, and that the store is untouched.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

BAD_DATA = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
INVALID = "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest"
EID = "urn:ngsi-ld:Probe:1"
NULL = "urn:ngsi-ld:null"
POINT = {"type": "Point", "coordinates": [17.1, 48.7]}


def probe(**attrs: Any) -> dict[str, Any]:
    return {"id": EID, "type": "Probe", **attrs}


INVALID_ENTITIES: dict[str, Any] = {
    "type starting with a digit": {"id": EID, "type": "9Probe"},
    "type that is a keyword alias": {"id": EID, "type": "type"},
    "id with a zero width space": {"id": "urn:ngsi-ld:Probe:A\u200bB", "type": "Probe"},
    "id with a right-to-left override": {"id": "urn:ngsi-ld:Probe:A\u202eB", "type": "Probe"},
    "id that is the null": {"id": NULL, "type": "Probe"},
    "core member as attribute name": probe(datasetId={"type": "Property", "value": 1}),
    "embedded @context": probe(speed={"type": "Property", "value": 1, "@context": {}}),
    "output-only previousValue": probe(speed={"type": "Property", "value": 1,
                                              "previousValue": 0}),
    "sealed member outside ngsildproof": probe(speed={"type": "Property", "value": 1,
                                                      "entityIdSealed": EID}),
    "proof value that is no object": probe(ngsildproof={"type": "Property", "value": "x"}),
    "relationship with unitCode": probe(rel={"type": "Relationship", "object": "urn:x:1",
                                             "unitCode": "MTR"}),
    "json property with unitCode": probe(j={"type": "JsonProperty", "json": {},
                                            "unitCode": "MTR"}),
    "scalar json": probe(j={"type": "JsonProperty", "json": 5}),
    "geometry collection": probe(location={"type": "GeoProperty", "value": {
        "type": "GeometryCollection", "geometries": [POINT]}}),
    "observedAt with an offset": probe(speed={"type": "Property", "value": 1,
                                              "observedAt": "2026-08-10T12:00:00+02:00"}),
    "location as a plain property": probe(location={"type": "Property", "value": 7}),
    "unparseable string geometry": probe(location={"type": "GeoProperty", "value": "x"}),
    "null language map": probe(street={"type": "LanguageProperty",
                                       "languageMap": {"@none": NULL}}),
    "empty language tag": probe(street={"type": "LanguageProperty", "languageMap": {"": "x"}}),
    "language valueType not langString": probe(street={
        "type": "LanguageProperty", "languageMap": {"en": "x"}, "valueType": "xsd:string"}),
    "null property value": probe(speed={"type": "Property", "value": NULL}),
    "null relationship object": probe(rel={"type": "Relationship", "object": NULL}),
    "null sub-attribute": probe(speed={"type": "Property", "value": 1,
                                       "sub": {"type": "Property", "value": NULL}}),
    "null inside a compound value": probe(address={"type": "Property", "value": {
        "geo": {"country": NULL}}}),
    "null scope": probe(scope=NULL),
    "json null value": probe(speed={"type": "Property", "value": None}),
    "two default instances": probe(speed=[{"type": "Property", "value": 1},
                                          {"type": "Property", "value": 2,
                                           "datasetId": "@none"}]),
}


async def assert_nothing_stored(client: httpx.AsyncClient) -> None:
    r = await client.get("entities", params={"type": "Probe"})
    assert r.status_code == 200, r.text
    assert r.json() == []
    r = await client.get(f"entities/{EID}")
    assert r.status_code == 404, r.text


@pytest.mark.parametrize("case", sorted(INVALID_ENTITIES))
async def test_invalid_entity_is_bad_request_data(client: httpx.AsyncClient, case: str) -> None:
    r = await client.post("entities", json=INVALID_ENTITIES[case])
    assert r.status_code == 400, r.text
    assert r.json()["type"] == BAD_DATA
    await assert_nothing_stored(client)


async def test_a_body_that_is_not_an_object_is_an_invalid_request(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("entities", json=[])
    assert r.status_code == 400
    assert r.json()["type"] == INVALID
    assert r.json()["title"]


async def test_inputs_are_normalized_on_the_way_in(client: httpx.AsyncClient) -> None:
    """objectList entries, string geometries, @none and concise geo values come back normalized."""
    body = probe(
        route={"type": "ListRelationship", "objectList": ["urn:r:1", {"object": "urn:r:2"}]},
        location={"type": "GeoProperty", "value": '{"type": "Point", "coordinates": [1, 2]}'},
        area={"value": POINT},
        speed=[{"type": "Property", "value": 55, "datasetId": "@none"},
               {"type": "Property", "value": 11, "datasetId": "urn:ds:gps"}],
    )
    r = await client.post("entities", json=body)
    assert r.status_code == 201, r.text
    got = (await client.get(f"entities/{EID}")).json()
    assert got["route"]["objectList"] == [{"object": "urn:r:1"}, {"object": "urn:r:2"}]
    assert got["location"]["value"] == {"type": "Point", "coordinates": [1, 2]}
    assert got["area"]["type"] == "GeoProperty"
    assert sorted(i.get("datasetId", "") for i in got["speed"]) == ["", "urn:ds:gps"]


async def test_a_partial_update_cannot_hide_a_null_in_a_value(client: httpx.AsyncClient) -> None:
    """Clause 5.5.4: only a merge may patch inside a value; the stored value stays as it was."""
    address = {"street": "Straße des 17. Juni", "country": "Germany"}
    r = await client.post("entities", json=probe(address={"type": "Property", "value": address}))
    assert r.status_code == 201, r.text
    r = await client.patch(f"entities/{EID}/attrs/address",
                           json={"value": {"country": NULL}})
    assert r.status_code == 400, r.text
    assert r.json()["type"] == BAD_DATA
    got = (await client.get(f"entities/{EID}")).json()
    assert got["address"]["value"] == address
