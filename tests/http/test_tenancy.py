"""Tenants (clauses 4.14, 5.5.10, 6.3.14): created by the first write, isolated, echoed."""

from __future__ import annotations

import httpx
import pytest

NONEXISTENT = "https://uri.etsi.org/ngsi-ld/errors/NonexistentTenant"
EID = "urn:ngsi-ld:Lamp:bridge-1"
LAMP = {"id": EID, "type": "Lamp", "colour": {"type": "Property", "value": "white"}}


def tenant(name: str) -> dict[str, str]:
    return {"NGSILD-Tenant": name}


@pytest.mark.parametrize(
    "path",
    ["entities?type=Lamp", f"entities/{EID}", "types", "types/Lamp", "attributes",
     "attributes/colour"],
)
async def test_reading_an_unknown_tenant_is_nonexistent_tenant(
    client: httpx.AsyncClient, path: str
) -> None:
    r = await client.get(path, headers=tenant("hitoyoshi"))
    assert r.status_code == 404
    assert r.json()["type"] == NONEXISTENT
    assert r.headers["NGSILD-Tenant"] == "hitoyoshi"


async def test_the_first_write_creates_the_tenant(client: httpx.AsyncClient) -> None:
    r = await client.post("entities", json=LAMP, headers=tenant("hitoyoshi"))
    assert r.status_code == 201, r.text
    assert r.headers["NGSILD-Tenant"] == "hitoyoshi"
    r = await client.get("entities", params={"type": "Lamp"}, headers=tenant("hitoyoshi"))
    assert r.status_code == 200
    assert r.headers["NGSILD-Tenant"] == "hitoyoshi"
    assert [e["id"] for e in r.json()] == [EID]
    r = await client.get("types", headers=tenant("hitoyoshi"))
    assert r.json()["typeList"] == ["Lamp"]


async def test_tenants_are_isolated(client: httpx.AsyncClient) -> None:
    assert (await client.post("entities", json=LAMP, headers=tenant("a"))).status_code == 201
    other = {"id": "urn:ngsi-ld:Sign:1", "type": "Sign"}
    assert (await client.post("entities", json=other, headers=tenant("b"))).status_code == 201
    r = await client.get(f"entities/{EID}", headers=tenant("b"))
    assert r.status_code == 404
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"
    assert (await client.get(f"entities/{EID}")).status_code == 404  # default tenant
    assert (await client.get("types", headers=tenant("b"))).json()["typeList"] == ["Sign"]
    r = await client.get("types/Lamp", headers=tenant("b"))
    assert r.status_code == 404
    r = await client.delete(f"entities/{EID}", headers=tenant("b"))
    assert r.status_code == 404
    assert (await client.get(f"entities/{EID}", headers=tenant("a"))).status_code == 200


async def test_the_default_tenant_always_exists(client: httpx.AsyncClient) -> None:
    r = await client.get("entities", params={"type": "Lamp"})
    assert r.status_code == 200 and r.json() == []
    assert "NGSILD-Tenant" not in r.headers
    assert (await client.get("types")).json()["typeList"] == []


async def test_an_invalid_tenant_name_is_rejected_and_not_echoed(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("entities", json=LAMP, headers=tenant("no spaces<>"))
    assert r.status_code == 400
    assert "NGSILD-Tenant" not in r.headers
