"""Batch operations (clauses 5.6.7 - 5.6.10, 5.6.20): BatchOperationResult and atomicity."""

from __future__ import annotations

from typing import Any

import httpx

BAD = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"


def sensor(n: int, **attrs: Any) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Sensor:{n}", "type": "Sensor",
            "level": {"type": "Property", "value": n}, **attrs}


async def ids_of(client: httpx.AsyncClient) -> list[str]:
    r = await client.get("entities?type=Sensor&limit=100")
    assert r.status_code == 200
    return sorted(e["id"] for e in r.json())


async def test_create_all_valid_is_201_with_ids(client: httpx.AsyncClient) -> None:
    r = await client.post("entityOperations/create", json=[sensor(1), sensor(2)])
    assert r.status_code == 201, r.text
    assert sorted(r.json()) == ["urn:ngsi-ld:Sensor:1", "urn:ngsi-ld:Sensor:2"]
    assert await ids_of(client) == ["urn:ngsi-ld:Sensor:1", "urn:ngsi-ld:Sensor:2"]


async def test_create_with_invalid_and_duplicate_is_207(client: httpx.AsyncClient) -> None:
    await client.post("entities", json=sensor(1))
    bad = {"id": "urn:ngsi-ld:Sensor:3", "type": "Sensor", "level": {"type": "Property"}}
    r = await client.post("entityOperations/create", json=[sensor(1), sensor(2), bad])
    assert r.status_code == 207
    body = r.json()
    assert body["success"] == ["urn:ngsi-ld:Sensor:2"]
    errors = {e["entityId"]: e["error"]["type"] for e in body["errors"]}
    assert errors["urn:ngsi-ld:Sensor:1"].endswith("AlreadyExists")
    assert errors["urn:ngsi-ld:Sensor:3"] == BAD
    assert await ids_of(client) == ["urn:ngsi-ld:Sensor:1", "urn:ngsi-ld:Sensor:2"]


async def test_malformed_batches_change_nothing(client: httpx.AsyncClient) -> None:
    for body in ({"id": "x"}, [], [sensor(1), None], [sensor(1), 3]):
        r = await client.post("entityOperations/create", json=body)
        assert r.status_code == 400, body
    r = await client.get("entities?type=Sensor")
    assert r.status_code in (200, 404)
    assert r.status_code == 404 or r.json() == []


async def test_upsert_creates_then_replaces_or_updates(client: httpx.AsyncClient) -> None:
    r = await client.post("entityOperations/upsert", json=[sensor(1)])
    assert r.status_code == 201 and r.json() == ["urn:ngsi-ld:Sensor:1"]
    extra = {"id": "urn:ngsi-ld:Sensor:1", "type": "Sensor",
             "flow": {"type": "Property", "value": 5}}
    r = await client.post("entityOperations/upsert?options=update", json=[extra])
    assert r.status_code == 204
    body = (await client.get("entities/urn:ngsi-ld:Sensor:1")).json()
    assert body["level"]["value"] == 1 and body["flow"]["value"] == 5
    r = await client.post("entityOperations/upsert", json=[extra])
    assert r.status_code == 204
    body = (await client.get("entities/urn:ngsi-ld:Sensor:1")).json()
    assert "level" not in body
    r = await client.post("entityOperations/upsert?options=update,replace", json=[extra])
    assert r.status_code == 400


async def test_update_merge_delete(client: httpx.AsyncClient) -> None:
    await client.post("entityOperations/create", json=[sensor(1), sensor(2)])
    r = await client.post(
        "entityOperations/update",
        json=[{"id": "urn:ngsi-ld:Sensor:1", "level": {"type": "Property", "value": 10}},
              {"id": "urn:ngsi-ld:Sensor:9", "level": {"type": "Property", "value": 10}}],
    )
    assert r.status_code == 207
    assert r.json()["success"] == ["urn:ngsi-ld:Sensor:1"]
    r = await client.post(
        "entityOperations/update?options=noOverwrite",
        json=[{"id": "urn:ngsi-ld:Sensor:1", "level": {"type": "Property", "value": 99}}],
    )
    assert r.status_code == 207
    assert (await client.get("entities/urn:ngsi-ld:Sensor:1")).json()["level"]["value"] == 10
    r = await client.post(
        "entityOperations/merge",
        json=[{"id": "urn:ngsi-ld:Sensor:2", "flow": {"type": "Property", "value": 3}}],
    )
    assert r.status_code == 204
    assert (await client.get("entities/urn:ngsi-ld:Sensor:2")).json()["flow"]["value"] == 3
    r = await client.post(
        "entityOperations/delete", json=["urn:ngsi-ld:Sensor:1", "urn:ngsi-ld:Sensor:7"]
    )
    assert r.status_code == 207
    assert r.json()["success"] == ["urn:ngsi-ld:Sensor:1"]
    assert await ids_of(client) == ["urn:ngsi-ld:Sensor:2"]


async def test_ld_json_batch_needs_context_per_entity(client: httpx.AsyncClient) -> None:
    core = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
    good = {**sensor(1), "@context": core}
    r = await client.post(
        "entityOperations/create", json=[good, sensor(2)],
        headers={"Content-Type": "application/ld+json"},
    )
    assert r.status_code == 207
    assert r.json()["success"] == ["urn:ngsi-ld:Sensor:1"]
