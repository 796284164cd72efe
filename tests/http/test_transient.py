"""Transient entities and attributes (clause 4.22) over the HTTP API, on every store.

An ``expiresAt`` in the past can be set by Merge Entity or a partial attribute update (not
by a creation), which makes "already expired" reachable without waiting: these tests never
sleep. The background deletion itself is covered in tests/integration/test_expiry.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

BAD = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
NOT_FOUND = "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"
FUTURE = "2100-01-01T00:00:00Z"
PAST = "2020-01-01T00:00:00Z"
EID = "urn:ngsi-ld:Vehicle:t1"


def vehicle(eid: str = EID, **members: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": eid, "type": "Vehicle",
        "speed": {"type": "Property", "value": 7, "expiresAt": FUTURE,
                  "accuracy": {"type": "Property", "value": 0.5, "expiresAt": FUTURE}},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"},
    }
    body.update(members)
    return body


async def merge(client: httpx.AsyncClient, fragment: dict[str, Any], eid: str = EID) -> None:
    r = await client.patch(f"entities/{eid}", json=fragment)
    assert r.status_code == 204, r.text


async def test_expires_at_is_a_system_attribute(client: httpx.AsyncClient) -> None:
    r = await client.post("entities", json=vehicle(expiresAt=FUTURE))
    assert r.status_code == 201, r.text
    plain = await client.get(f"entities/{EID}")
    assert plain.status_code == 200
    assert "expiresAt" not in plain.text
    assert plain.json()["speed"]["accuracy"]["value"] == 0.5
    shown = (await client.get(f"entities/{EID}", params={"options": "sysAttrs"})).json()
    assert shown["expiresAt"] == FUTURE  # as written, not reformatted
    assert shown["speed"]["expiresAt"] == FUTURE
    assert shown["speed"]["accuracy"]["expiresAt"] == FUTURE
    assert "expiresAt" not in shown["owner"]
    listed = await client.get("entities", params={"type": "Vehicle"})
    assert "expiresAt" not in listed.text


@pytest.mark.parametrize(
    "body",
    [
        vehicle(expiresAt="not-a-date"),
        vehicle(expiresAt="2026-13-45T00:00:00Z"),
        vehicle(expiresAt="2100-01-01T00:00:00+01:00"),
        vehicle(expiresAt=PAST),
        vehicle(expiresAt=None),
        vehicle(expiresAt="urn:ngsi-ld:null"),
        vehicle(speed={"type": "Property", "value": 1, "expiresAt": "not-a-date"}),
        vehicle(speed={"type": "Property", "value": 1, "expiresAt": 12}),
        vehicle(owner={"type": "Relationship", "object": "urn:x:1", "expiresAt": "2026-13-45T00:00:00Z"}),
    ],
)
async def test_invalid_expires_at_is_bad_request_data(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    r = await client.post("entities", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == BAD
    assert (await client.get(f"entities/{EID}")).status_code == 404
    r = await client.post("entityOperations/create", json=[body])
    assert r.status_code == 207, r.text  # a batch reports each entity's error (5.6.7)
    assert r.json()["errors"][0]["error"]["type"] == BAD
    assert (await client.get(f"entities/{EID}")).status_code == 404


async def test_invalid_expires_at_in_a_merge_changes_nothing(client: httpx.AsyncClient) -> None:
    assert (await client.post("entities", json=vehicle())).status_code == 201
    before = (await client.get(f"entities/{EID}", params={"options": "sysAttrs"})).json()
    r = await client.patch(f"entities/{EID}", json={"expiresAt": "tomorrow"})
    assert r.status_code == 400 and r.json()["type"] == BAD
    after = (await client.get(f"entities/{EID}", params={"options": "sysAttrs"})).json()
    assert after == before


async def test_an_expired_entity_is_gone_for_every_read(client: httpx.AsyncClient) -> None:
    for n in (1, 2, 3):
        r = await client.post("entities", json=vehicle(f"urn:ngsi-ld:Vehicle:{n}"))
        assert r.status_code == 201
    await merge(client, {"expiresAt": PAST}, "urn:ngsi-ld:Vehicle:2")
    r = await client.get("entities/urn:ngsi-ld:Vehicle:2")
    assert r.status_code == 404 and r.json()["type"] == NOT_FOUND
    r = await client.get("entities", params={"type": "Vehicle", "count": "true"})
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Vehicle:1", "urn:ngsi-ld:Vehicle:3"]
    assert r.headers["NGSILD-Results-Count"] == "2"
    r = await client.get("entities", params={"q": "speed==7", "limit": "1", "offset": "1"})
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Vehicle:3"]
    r = await client.post("entityOperations/query",
                          json={"type": "Query", "entities": [{"type": "Vehicle"}]})
    assert len(r.json()) == 2
    # writes see it as absent too: 404, then a new entity under the same id is a creation
    r = await client.patch("entities/urn:ngsi-ld:Vehicle:2/attrs", json={"speed": 1})
    assert r.status_code == 404
    r = await client.post("entityOperations/update", json=[vehicle("urn:ngsi-ld:Vehicle:2")])
    assert r.status_code == 207
    r = await client.post("entities", json=vehicle("urn:ngsi-ld:Vehicle:2", speed=9))
    assert r.status_code == 201, r.text
    assert (await client.get("entities/urn:ngsi-ld:Vehicle:2")).json()["speed"]["value"] == 9


async def test_merge_sets_moves_and_removes_the_expiry(client: httpx.AsyncClient) -> None:
    assert (await client.post("entities", json=vehicle())).status_code == 201
    await merge(client, {"expiresAt": FUTURE})
    got = await client.get(f"entities/{EID}", params={"options": "sysAttrs"})
    assert got.json()["expiresAt"] == FUTURE
    await merge(client, {"expiresAt": "urn:ngsi-ld:null"})
    got = await client.get(f"entities/{EID}", params={"options": "sysAttrs"})
    assert "expiresAt" not in got.json()
    # Replace Entity takes everything from the new entity: no expiresAt there, none kept
    await merge(client, {"expiresAt": FUTURE})
    r = await client.put(f"entities/{EID}", json={"type": "Vehicle", "speed": 3})
    assert r.status_code == 204
    assert "expiresAt" not in (await client.get(f"entities/{EID}",
                                                params={"options": "sysAttrs"})).text


async def test_expired_instances_are_hidden_and_the_rest_stays(
    client: httpx.AsyncClient,
) -> None:
    body = vehicle(speed=[
        {"type": "Property", "value": 1, "expiresAt": FUTURE},
        {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:d:gps", "expiresAt": FUTURE},
    ])
    assert (await client.post("entities", json=body)).status_code == 201
    r = await client.patch(f"entities/{EID}/attrs/speed",
                           json={"datasetId": "urn:ngsi-ld:d:gps", "expiresAt": PAST})
    assert r.status_code == 204, r.text
    got = (await client.get(f"entities/{EID}")).json()
    assert got["speed"]["value"] == 1 and "datasetId" not in got["speed"]
    r = await client.get("entities", params={"q": "speed==2"})
    assert r.json() == []
    await merge(client, {"owner": {"expiresAt": PAST}})
    got = (await client.get(f"entities/{EID}")).json()
    assert "owner" not in got
    r = await client.get("entities", params={"attrs": "owner"})
    assert r.json() == []


async def test_partial_update_keeps_and_update_replaces_the_expiry(
    client: httpx.AsyncClient,
) -> None:
    body = vehicle(level={"type": "Property", "value": 1, "expiresAt": FUTURE})
    assert (await client.post("entities", json=body)).status_code == 201
    r = await client.patch(f"entities/{EID}/attrs/speed", json={"value": 8})
    assert r.status_code == 204
    r = await client.patch(f"entities/{EID}/attrs", json={"level": {"type": "Property",
                                                                    "value": 2}})
    assert r.status_code == 204
    got = (await client.get(f"entities/{EID}", params={"options": "sysAttrs"})).json()
    assert got["speed"]["value"] == 8 and got["speed"]["expiresAt"] == FUTURE
    assert got["level"]["value"] == 2 and "expiresAt" not in got["level"]


async def test_batch_upsert_sets_the_expiry_of_an_existing_entity(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post("entities", json=vehicle())).status_code == 201
    r = await client.post("entityOperations/upsert",
                          json=[{"id": EID, "type": "Vehicle", "expiresAt": FUTURE}])
    assert r.status_code == 204, r.text
    got = (await client.get(f"entities/{EID}", params={"options": "sysAttrs"})).json()
    assert got["expiresAt"] == FUTURE


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_replace_or_merge_without_an_id_is_bad_request(
    client: httpx.AsyncClient, method: str
) -> None:
    assert (await client.post("entities", json=vehicle())).status_code == 201
    for path in ("entities", "entities/"):
        r = await client.request(method, path, json=vehicle(speed=1))
        assert r.status_code == 400, r.text
        assert r.json()["type"] == BAD
    assert (await client.get(f"entities/{EID}")).json()["speed"]["value"] == 7


async def test_append_no_overwrite_names_in_the_update_result(
    client: httpx.AsyncClient,
) -> None:
    ctx = {"speed": "https://example.org/speed"}
    body = {"id": EID, "type": "Vehicle", "@context": ctx,
            "speed": [{"type": "Property", "value": 1},
                      {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:d:a"}]}
    ld = {"Content-Type": "application/ld+json"}
    assert (await client.post("entities", json=body, headers=ld)).status_code == 201
    fragment = {"@context": ctx, "speed": {"type": "Property", "value": 3,
                                           "datasetId": "urn:ngsi-ld:d:a"},
                "added": {"type": "Property", "value": 4}}
    r = await client.post(f"entities/{EID}/attrs", params={"options": "noOverwrite"},
                          json=fragment, headers=ld)
    assert r.status_code == 207, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert "Link" not in r.headers
    result = r.json()
    # plain JSON: ``updated`` holds plain strings, ``attributeName`` is compacted with the
    # core @context only, whatever the request's context
    assert result["updated"] == ["https://uri.etsi.org/ngsi-ld/default-context/added"]
    assert [n["attributeName"] for n in result["notUpdated"]] == ["https://example.org/speed"]
    got = (await client.get(f"entities/{EID}")).json()
    assert sorted(i["value"] for i in got["https://example.org/speed"]) == [1, 2]
    assert got["added"]["value"] == 4
