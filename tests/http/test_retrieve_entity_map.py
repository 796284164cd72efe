"""EntityMaps on Retrieve Entity (clause 5.7.1.4) and the /entityMaps resource (6.32)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from tests.conftest import _lifespan
from urbanos.http.app import create_app
from urbanos.http.endpoints import entity_maps
from urbanos.settings import Settings

MAPS = "/ngsi-ld/v1/entityMaps/{map_id}"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app, with the EntityMap routes added if the route table lacks them."""
    app = create_app(settings)
    inner: Any = app
    while not hasattr(inner, "router"):  # under the path normalizer and the metrics
        inner = inner.app
    if not any(getattr(r, "path", None) == MAPS for r in inner.router.routes):
        inner.router.routes.append(
            Route(MAPS, entity_maps.retrieve_entity_map, methods=["GET"]))
        inner.router.routes.append(
            Route(MAPS, entity_maps.delete_entity_map, methods=["DELETE"]))
    async with _lifespan(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://broker/ngsi-ld/v1/"
    ) as c:
        r = await c.post("entities", json={"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"})
        assert r.status_code == 201
        yield c


async def test_entity_map_flag_creates_a_readable_map(client: httpx.AsyncClient) -> None:
    r = await client.get("entities/urn:ngsi-ld:Vehicle:1", params={"entityMap": "true"})
    assert r.status_code == 200
    location = r.headers["NGSILD-EntityMap"]
    assert location.startswith("/ngsi-ld/v1/entityMaps/urn:ngsi-ld:entitymap:")
    assert "entityMap" not in r.json()
    m = await client.get("http://broker" + location)
    assert m.status_code == 200
    assert m.json()["entityMap"] == {"urn:ngsi-ld:Vehicle:1": ["@none"]}
    assert (await client.delete("http://broker" + location)).status_code == 204
    assert (await client.get("http://broker" + location)).status_code == 404


async def test_live_maps_are_echoed_and_dead_ones_replaced(client: httpx.AsyncClient) -> None:
    first = await client.get("entities/urn:ngsi-ld:Vehicle:1", params={"entityMap": "true"})
    location = first.headers["NGSILD-EntityMap"]
    again = await client.get("entities/urn:ngsi-ld:Vehicle:1",
                             headers={"NGSILD-EntityMap": location})
    assert again.headers["NGSILD-EntityMap"] == location
    dead = await client.get("entities/urn:ngsi-ld:Vehicle:1",
                            headers={"NGSILD-EntityMap": "urn:ngsi-ld:entitymap:gone"})
    assert "gone" not in dead.headers["NGSILD-EntityMap"]
