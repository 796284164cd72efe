"""Retrieve Entity takes a short path past the routing table; its answers, errors and
metrics must be those of the full stack."""

from __future__ import annotations

import re

import httpx

EID = "urn:ngsi-ld:Lamp:bridge/1"  # a '/' inside the id travels as %2F
LAMP = {"id": EID, "type": "Lamp", "colour": {"type": "Property", "value": "red"}}
PATH = "entities/urn:ngsi-ld:Lamp:bridge%2F1"


def count(metrics: str, status: str) -> float:
    pattern = (r'urbanos_http_requests_total\{method="GET",route="[^"]*entities/\{entity_id'
               rf'[^"]*\}}",status="{status}"\}} (\S+)')
    found = re.search(pattern, metrics)
    return float(found.group(1)) if found else 0.0


async def metrics(client: httpx.AsyncClient) -> str:
    return (await client.get("http://broker/metrics")).text


async def test_the_entity_its_headers_and_one_count_in_the_metrics(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post("entities", json=LAMP)).status_code == 201
    before = count(await metrics(client), "200")
    r = await client.get(PATH)
    assert r.status_code == 200
    assert r.json() == {"id": EID, "type": "Lamp",
                        "colour": {"type": "Property", "value": "red"}}
    assert r.headers["content-type"] == "application/json"
    assert "ngsi-ld-core-context" in r.headers["link"]
    assert count(await metrics(client), "200") == before + 1


async def test_json_ld_carries_the_context_in_the_body(client: httpx.AsyncClient) -> None:
    assert (await client.post("entities", json=LAMP)).status_code == 201
    r = await client.get(PATH, headers={"Accept": "application/ld+json"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/ld+json"
    assert "@context" in r.json()


async def test_errors_are_the_full_stacks_problem_details_counted_once(
    client: httpx.AsyncClient,
) -> None:
    before = count(await metrics(client), "404")
    r = await client.get("entities/urn:ngsi-ld:Lamp:nowhere")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"
    assert count(await metrics(client), "404") == before + 1
    r = await client.get("entities/not-a-uri")
    assert r.status_code == 400
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    r = await client.get(PATH, headers={"Accept": "text/html"})
    assert r.status_code == 406


async def test_the_tenant_header_is_honoured(client: httpx.AsyncClient) -> None:
    r = await client.post("entities", json=LAMP, headers={"NGSILD-Tenant": "kumamoto"})
    assert r.status_code == 201
    assert (await client.get(PATH)).status_code == 404
    r = await client.get(PATH, headers={"NGSILD-Tenant": "kumamoto"})
    assert r.status_code == 200
    assert r.headers["NGSILD-Tenant"] == "kumamoto"
