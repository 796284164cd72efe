"""Strings holding U+0000, which JSON allows: memory and SQLite keep them; PostgreSQL cannot
(neither text nor JSONB holds that character), so it refuses the write as bad request data,
writes nothing, and keeps serving the tenant. Never a 500."""

from __future__ import annotations

from typing import Any

import httpx

BAD = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
NUL = "before\u0000after"


def lamp(n: int, **attrs: Any) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Lamp:{n}", "type": "Lamp",
            "level": {"type": "Property", "value": n}, **attrs}


def refused(store_url: str) -> bool:
    return store_url.startswith("postgresql")


async def test_a_nul_in_a_value_is_kept_or_refused_never_a_server_error(
    client: httpx.AsyncClient, store_url: str
) -> None:
    assert (await client.post("entities", json=lamp(1))).status_code == 201
    r = await client.post("entities", json=lamp(2, name={"type": "Property", "value": NUL}))
    if refused(store_url):
        assert r.status_code == 400 and r.json()["type"] == BAD, r.text
        assert (await client.get("entities/urn:ngsi-ld:Lamp:2")).status_code == 404
    else:
        assert r.status_code == 201, r.text
        got = await client.get("entities/urn:ngsi-ld:Lamp:2?options=keyValues")
        assert got.json()["name"] == NUL
    # the store still serves the tenant: the failed transaction left nothing behind
    r = await client.patch("entities/urn:ngsi-ld:Lamp:1/attrs",
                           json={"level": {"type": "Property", "value": 5}})
    assert r.status_code == 204, r.text
    got = await client.get("entities/urn:ngsi-ld:Lamp:1?options=keyValues")
    assert got.json()["level"] == 5


async def test_a_nul_in_an_update_or_a_json_key_leaves_the_entity_as_it_was(
    client: httpx.AsyncClient, store_url: str
) -> None:
    assert (await client.post("entities", json=lamp(1))).status_code == 201
    updates = [
        {"level": {"type": "Property", "value": NUL}},
        {"meta": {"type": "JsonProperty", "json": {NUL: 1}}},
    ]
    for update in updates:
        r = await client.post("entities/urn:ngsi-ld:Lamp:1/attrs", json=update)
        assert r.status_code == (400 if refused(store_url) else 204), r.text
    got = (await client.get("entities/urn:ngsi-ld:Lamp:1?options=keyValues")).json()
    if refused(store_url):
        assert got == {"id": "urn:ngsi-ld:Lamp:1", "type": "Lamp", "level": 1}
    else:
        assert got["level"] == NUL and got["meta"] == {"json": {NUL: 1}}


async def test_a_nul_in_temporal_instances_is_kept_or_refused(
    client: httpx.AsyncClient, store_url: str
) -> None:
    body = {"id": "urn:ngsi-ld:Lamp:9", "type": "Lamp",
            "name": [{"type": "Property", "value": NUL, "observedAt": "2024-01-01T00:00:00Z"}]}
    r = await client.post("temporal/entities", json=body)
    if refused(store_url):
        assert r.status_code == 400 and r.json()["type"] == BAD, r.text
        assert (await client.get("temporal/entities/urn:ngsi-ld:Lamp:9")).status_code == 404
    else:
        assert r.status_code == 201, r.text
        got = (await client.get("temporal/entities/urn:ngsi-ld:Lamp:9")).json()
        assert got["name"][0]["value"] == NUL
