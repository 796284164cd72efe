"""Entity write operations (clauses 5.6.1 - 5.6.6, 5.6.17 - 5.6.21) over the HTTP API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

BAD = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
NOT_FOUND = "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"
EID = "urn:ngsi-ld:River:kuma"


def river(**attrs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": EID,
        "type": "River",
        "level": {"type": "Property", "value": 2.7, "unitCode": "MTR"},
        "bridge": {"type": "Relationship", "object": "urn:ngsi-ld:Bridge:1"},
    }
    body.update(attrs)
    return body


async def stored(client: httpx.AsyncClient, eid: str = EID) -> dict[str, Any]:
    r = await client.get(f"entities/{eid}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture
async def created(client: httpx.AsyncClient) -> httpx.AsyncClient:
    r = await client.post("entities", json=river())
    assert r.status_code == 201, r.text
    return client


async def test_create_twice_is_already_exists(created: httpx.AsyncClient) -> None:
    r = await created.post("entities", json=river())
    assert r.status_code == 409
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/AlreadyExists"


@pytest.mark.parametrize(
    "body",
    [
        {"id": "not a uri", "type": "River"},
        {"type": "River"},
        {"id": EID},
        {"id": EID, "type": "River", "level": {"type": "Property"}},
        {"id": EID, "type": "River", "level": {"type": "Unknown", "value": 1}},
        {"id": EID, "type": "River", "bridge": {"type": "Relationship", "object": "nope"}},
        {"id": EID, "type": "River", "location": {"type": "GeoProperty",
                                                   "value": {"type": "Point", "coordinates": [500, 1]}}},
    ],
)
async def test_invalid_create_changes_nothing(client: httpx.AsyncClient, body: Any) -> None:
    r = await client.post("entities", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == BAD
    assert r.json()["detail"]
    assert (await client.get(f"entities/{EID}")).status_code in (400, 404)


async def test_bad_json_is_invalid_request(client: httpx.AsyncClient) -> None:
    for raw in (b"{", b'{"id": NaN}', b'{"a": 1, "a": 2}', b"[" * 100 + b"]" * 100):
        r = await client.post(
            "entities", content=raw, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, raw
        assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest"


async def test_body_too_large_is_413(client: httpx.AsyncClient) -> None:
    big = river(note={"type": "Property", "value": "x" * 70000})
    r = await client.post("entities", json=big)
    assert r.status_code == 413


async def test_replace_keeps_created_at_and_drops_missing(created: httpx.AsyncClient) -> None:
    before = (await created.get(f"entities/{EID}?options=sysAttrs")).json()
    r = await created.put(
        f"entities/{EID}", json={"type": "River", "flow": {"type": "Property", "value": 10}}
    )
    assert r.status_code == 204, r.text
    after = (await created.get(f"entities/{EID}?options=sysAttrs")).json()
    assert "level" not in after and after["flow"]["value"] == 10
    assert after["createdAt"] == before["createdAt"]


async def test_merge_with_null_deletes(created: httpx.AsyncClient) -> None:
    r = await created.patch(
        f"entities/{EID}",
        json={"level": {"type": "Property", "value": 3.1},
              "bridge": {"type": "Relationship", "object": "urn:ngsi-ld:null"}},
    )
    assert r.status_code == 204, r.text
    body = await stored(created)
    assert body["level"] == {"type": "Property", "value": 3.1, "unitCode": "MTR"}
    assert "bridge" not in body


async def test_append_no_overwrite_reports_207(created: httpx.AsyncClient) -> None:
    r = await created.post(
        f"entities/{EID}/attrs?options=noOverwrite",
        json={"level": {"type": "Property", "value": 9},
              "flow": {"type": "Property", "value": 1}},
    )
    assert r.status_code == 207
    result = r.json()
    assert result["notUpdated"][0]["attributeName"] == "level"
    body = await stored(created)
    assert body["level"]["value"] == 2.7 and body["flow"]["value"] == 1


async def test_update_replaces_whole_attribute_and_null_deletes(
    created: httpx.AsyncClient,
) -> None:
    r = await created.patch(
        f"entities/{EID}/attrs",
        json={"level": {"type": "Property", "value": 3.4},
              "bridge": {"type": "Relationship", "object": "urn:ngsi-ld:null"}},
    )
    assert r.status_code == 204, r.text
    body = await stored(created)
    assert body["level"] == {"type": "Property", "value": 3.4}  # unitCode gone
    assert "bridge" not in body


async def test_update_scope_only_when_present(created: httpx.AsyncClient) -> None:
    r = await created.patch(f"entities/{EID}/attrs", json={"scope": "/Kumamoto"})
    assert r.status_code == 207
    assert "scope" not in await stored(created)


async def test_partial_attribute_update_merges(created: httpx.AsyncClient) -> None:
    r = await created.patch(
        f"entities/{EID}/attrs/level", json={"type": "Property", "value": 4.07}
    )
    assert r.status_code == 204, r.text
    assert (await stored(created))["level"] == {
        "type": "Property", "value": 4.07, "unitCode": "MTR"
    }
    r = await created.patch(
        f"entities/{EID}/attrs/level", json={"type": "Relationship", "object": "urn:a:b"}
    )
    assert r.status_code == 400
    r = await created.patch(f"entities/{EID}/attrs/missing", json={"value": 1})
    assert r.status_code == 404


async def test_replace_and_delete_attribute(created: httpx.AsyncClient) -> None:
    r = await created.put(f"entities/{EID}/attrs/level", json={"type": "Property", "value": 1})
    assert r.status_code == 204
    assert (await stored(created))["level"] == {"type": "Property", "value": 1}
    r = await created.delete(f"entities/{EID}/attrs/level")
    assert r.status_code == 204
    assert "level" not in await stored(created)
    r = await created.delete(f"entities/{EID}/attrs/level")
    assert r.status_code == 404
    assert r.json()["type"] == NOT_FOUND


async def test_delete_by_dataset_id(client: httpx.AsyncClient) -> None:
    body = river(level=[
        {"type": "Property", "value": 1},
        {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:b"},
    ])
    assert (await client.post("entities", json=body)).status_code == 201
    r = await client.delete(f"entities/{EID}/attrs/level?datasetId=urn:ngsi-ld:Dataset:b")
    assert r.status_code == 204
    assert (await stored(client))["level"] == {"type": "Property", "value": 1}
    r = await client.delete(f"entities/{EID}/attrs/level?deleteAll=true")
    assert r.status_code == 204
    assert "level" not in await stored(client)


async def test_type_selector_gates_writes(created: httpx.AsyncClient) -> None:
    r = await created.delete(f"entities/{EID}?type=Bridge")
    assert r.status_code == 404
    assert (await created.get(f"entities/{EID}")).status_code == 200
    r = await created.delete(f"entities/{EID}?type=River")
    assert r.status_code == 204


async def test_invalid_ids_in_path(client: httpx.AsyncClient) -> None:
    for method in ("GET", "DELETE"):
        r = await client.request(method, "entities/not-a-uri")
        assert r.status_code == 400
        assert r.json()["type"] == BAD


async def test_unknown_parameter_is_rejected(created: httpx.AsyncClient) -> None:
    r = await created.delete(f"entities/{EID}?foo=bar")
    assert r.status_code == 400
    assert (await created.get(f"entities/{EID}")).status_code == 200


async def test_purge_needs_a_narrow_filter_then_keeps_or_drops(
    created: httpx.AsyncClient,
) -> None:
    r = await created.delete("entities?idPattern=.*")
    assert r.status_code == 400
    assert (await created.get(f"entities/{EID}")).status_code == 200
    r = await created.delete("entities?type=River&drop=level")
    assert r.status_code == 204
    body = await stored(created)
    assert "level" not in body and "bridge" in body
    r = await created.delete("entities?type=River")
    assert r.status_code == 204
    assert (await created.get(f"entities/{EID}")).status_code == 404


async def test_tenants_are_isolated(client: httpx.AsyncClient) -> None:
    t = {"NGSILD-Tenant": "city-a"}
    assert (await client.get(f"entities/{EID}", headers=t)).status_code == 404
    assert (await client.post("entities", json=river(), headers=t)).status_code == 201
    assert (await client.get(f"entities/{EID}", headers=t)).status_code == 200
    assert (await client.get(f"entities/{EID}")).status_code == 404
    r = await client.get("entities?type=River", headers={"NGSILD-Tenant": "city-b"})
    assert r.status_code == 404
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/NonexistentTenant"
