"""The broker answers the basic create/retrieve/delete cycle on every store."""

from __future__ import annotations

import httpx


async def test_create_retrieve_delete(client: httpx.AsyncClient) -> None:
    body = {"id": "urn:ngsi-ld:Sensor:1", "type": "Sensor", "level": {"type": "Property", "value": 2.5}}
    r = await client.post("entities", json=body)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/ngsi-ld/v1/entities/urn:ngsi-ld:Sensor:1"
    r = await client.get("entities/urn:ngsi-ld:Sensor:1")
    assert r.status_code == 200
    assert r.json() == body
    assert "ngsi-ld-core-context" in r.headers["link"]
    r = await client.delete("entities/urn:ngsi-ld:Sensor:1")
    assert r.status_code == 204
    r = await client.get("entities/urn:ngsi-ld:Sensor:1")
    assert r.status_code == 404
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"


async def test_the_api_description_lists_every_route(client: httpx.AsyncClient) -> None:
    """/openapi.json and /docs describe the app's own route table, operations included."""
    r = await client.get("http://broker/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert {"post", "get"} <= set(paths["/ngsi-ld/v1/entities"])
    assert "delete" in paths["/ngsi-ld/v1/entities/{entity_id}"]
    assert "/admin/dead-letters" in paths and "/openapi.json" in paths
    page = await client.get("http://broker/docs")
    assert page.status_code == 200 and "/ngsi-ld/v1/entities/{entity_id}" in page.text
