"""Media types, Link headers and request preconditions over HTTP (clauses 6.3.4 - 6.3.6)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
INVALID = "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest"
EID = "urn:ngsi-ld:WaterLevelSensor:kuma-1"
SENSOR = {
    "id": EID,
    "type": "WaterLevelSensor",
    "level": {"type": "Property", "value": 3.4, "unitCode": "MTR"},
    "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [130.76, 32.21]}},
}


@pytest.fixture
async def sensor(client: httpx.AsyncClient) -> httpx.AsyncClient:
    r = await client.post("entities", json=SENSOR)
    assert r.status_code == 201, r.text
    return client


def media(r: httpx.Response) -> str:
    return r.headers["content-type"].split(";")[0]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/ld+json, application/json", "application/json"),
        ("application/geo+json, application/json", "application/json"),
        ("application/json;q=0.1, application/ld+json;q=0.9", "application/ld+json"),
        ("application/json;q=0, */*", "application/ld+json"),
        ("*/*;q=0.9, application/ld+json;q=0.8", "application/json"),
        ("application/ld+json;q=notanumber", "application/ld+json"),
        ("application/geo+json", "application/geo+json"),
    ],
)
async def test_accept_selects_the_representation(
    sensor: httpx.AsyncClient, accept: str | None, expected: str
) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    r = await sensor.get(f"entities/{EID}", headers=headers)
    assert r.status_code == 200, r.text
    assert media(r) == expected


async def test_get_without_accept_is_json_with_a_link(sensor: httpx.AsyncClient) -> None:
    r = await sensor.get(f"entities/{EID}", headers={"Accept": ""})
    assert media(r) == "application/json"
    assert r.headers["link"] == (
        f'<{CORE}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    )
    assert "@context" not in r.json()


async def test_json_ld_carries_the_context_in_the_body(sensor: httpx.AsyncClient) -> None:
    r = await sensor.get(f"entities/{EID}", headers={"Accept": "application/ld+json"})
    assert "link" not in r.headers
    assert r.json()["@context"] == CORE
    r = await sensor.get(
        "entities", params={"type": "WaterLevelSensor"}, headers={"Accept": "application/ld+json"}
    )
    assert [e["@context"] for e in r.json()] == [CORE]


async def test_geojson_carries_the_context_in_the_body(sensor: httpx.AsyncClient) -> None:
    r = await sensor.get(
        "entities", params={"type": "WaterLevelSensor"}, headers={"Accept": "application/geo+json"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "FeatureCollection" and body["@context"] == CORE


async def test_geojson_prefer_body_json_moves_the_context_to_link(
    sensor: httpx.AsyncClient,
) -> None:
    r = await sensor.get(
        "entities", params={"type": "WaterLevelSensor"},
        headers={"Accept": "application/geo+json", "Prefer": "body=json"},
    )
    assert media(r) == "application/geo+json"
    assert "@context" not in r.json()
    assert CORE in r.headers["link"]


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        (f"entities/{EID}", "application/xml"),
        ("entities?type=WaterLevelSensor", "text/html, text/*;q=0.5"),
        ("types", "application/geo+json"),  # GeoJSON only for entity reads (6.3.15)
        ("attributes", "application/json;q=0, application/ld+json;q=0"),
        ("info/sourceIdentity", "application/geo+json"),
    ],
)
async def test_not_acceptable(sensor: httpx.AsyncClient, path: str, accept: str) -> None:
    r = await sensor.get(path, headers={"Accept": accept})
    assert r.status_code == 406
    assert r.json()["type"] == INVALID


@pytest.mark.parametrize("ctype", ["application/xml", "text/plain", None])
async def test_unsupported_media_type(client: httpx.AsyncClient, ctype: str | None) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    r = await client.post("entities", content=b'{"id": "urn:a:b", "type": "T"}', headers=headers)
    assert r.status_code == 415
    problem = r.json()
    assert problem["type"] == INVALID and problem["title"] and problem["detail"]


async def test_merge_patch_is_accepted_on_patch_only(sensor: httpx.AsyncClient) -> None:
    merge = {"Content-Type": "application/merge-patch+json"}
    r = await sensor.patch(f"entities/{EID}/attrs/level", json={"value": 3.0}, headers=merge)
    assert r.status_code == 204, r.text
    r = await sensor.patch(f"entities/{EID}", json={"level": 3.1}, headers=merge)
    assert r.status_code == 204, r.text
    r = await sensor.post(f"entities/{EID}/attrs", json={"depth": 1}, headers=merge)
    assert r.status_code == 415
    r = await sensor.put(f"entities/{EID}/attrs/level", json={"value": 1}, headers=merge)
    assert r.status_code == 415
    r = await sensor.get(f"entities/{EID}", params={"format": "keyValues"})
    assert r.json()["level"] == 3.1


async def _chunks() -> AsyncIterator[bytes]:
    yield b'{"id": "urn:ngsi-ld:T:411", "type": "T"}'


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "entities"), ("PATCH", f"entities/{EID}/attrs"), ("PUT", f"entities/{EID}"),
     ("POST", "entityOperations/upsert")],
)
async def test_length_required_is_bare(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    """A chunked body has no Content-Length: 411 with no body, even for an unknown tenant."""
    headers = {"Content-Type": "application/json", "NGSILD-Tenant": "nosuchtenant411"}
    r = await client.request(method, path, content=_chunks(), headers=headers)
    assert r.status_code == 411
    assert r.content == b""


async def test_invalid_json_is_invalid_request(client: httpx.AsyncClient) -> None:
    for body in (b"", b"{", b'{"a": 1, "a": 2}', b"\xff"):
        r = await client.post(
            "entities", content=body, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, body
        assert r.json()["type"] == INVALID


@pytest.mark.parametrize(
    "path",
    [
        "entities?type=T&nonsense=1",
        "types?limit=5",
        "types/T?details=true",
        "attributes?count=x&foo=1",
        "attributes/level?details=true",
        "info/sourceIdentity?x=1",
    ],
)
async def test_unknown_query_parameter_is_invalid_request(
    client: httpx.AsyncClient, path: str
) -> None:
    r = await client.get(path)
    assert r.status_code == 400
    assert r.json()["type"] == INVALID


async def test_malformed_link_header_is_bad_request(client: httpx.AsyncClient) -> None:
    r = await client.get("types", headers={"Link": "not a link"})
    assert r.status_code == 400
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
