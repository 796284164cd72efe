"""Snapshots (clause 5.16) and queries scoped to one (NGSILD-Snapshot, clause 6.3.22)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

BAD = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
NOT_FOUND = "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"
FAST, SLOW = "urn:ngsi-ld:Vehicle:fast", "urn:ngsi-ld:Vehicle:slow"


def snapshot(**members: Any) -> dict[str, Any]:
    return {"type": "Snapshot", "snapshotQueries": [
        {"type": "Query", "entities": [{"type": "Vehicle"}], "q": "speed>50"}], **members}


@pytest.fixture
async def vehicles(client: httpx.AsyncClient) -> httpx.AsyncClient:
    for eid, speed in ((FAST, 80), (SLOW, 30)):
        body = {"id": eid, "type": "Vehicle", "speed": {"type": "Property", "value": speed}}
        assert (await client.post("entities", json=body)).status_code == 201
    return client


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    r = await client.post("snapshots", json=body)
    assert r.status_code == 201, r.text
    location = r.headers["Location"]
    assert location.startswith("/ngsi-ld/v1/snapshots/urn:ngsi-ld:Snapshot:")
    return location.removeprefix("/ngsi-ld/v1/")


async def test_a_snapshot_freezes_what_its_queries_selected(vehicles: httpx.AsyncClient) -> None:
    client = vehicles
    path = await create(client, snapshot())
    shown = (await client.get(path)).json()
    assert shown["snapshotStatus"] == "success" and shown["snapshotPriority"] == 5
    assert shown["snapshotQueriesDetails"] == [{"resultStatus": "success", "entitiesCount": 1}]
    assert shown["lastUsedAt"] and shown["createdAt"]
    scoped = {"NGSILD-Snapshot": shown["id"]}
    r = await client.get("entities", params={"type": "Vehicle"}, headers=scoped)
    assert r.status_code == 200 and r.headers["NGSILD-Snapshot"] == shown["id"]
    assert [e["id"] for e in r.json()] == [FAST]
    r = await client.patch(f"entities/{FAST}/attrs", json={"speed": 10})
    assert r.status_code == 204
    r = await client.get(f"entities/{FAST}", headers=scoped)
    assert r.status_code == 200 and r.json()["speed"]["value"] == 80
    assert r.headers["NGSILD-Snapshot"] == shown["id"]
    assert (await client.get(f"entities/{FAST}")).json()["speed"]["value"] == 10
    r = await client.get(f"entities/{SLOW}", headers=scoped)
    assert r.status_code == 404  # never selected
    r = await client.post("entityOperations/query", headers=scoped,
                          json={"type": "Query", "q": "speed==80"})
    assert [e["id"] for e in r.json()] == [FAST]
    assert (await client.delete(path)).status_code == 204
    assert (await client.get(path)).status_code == 404
    r = await client.get("entities", params={"type": "Vehicle"}, headers=scoped)
    assert r.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"type": "Snapshot"},
        {"type": "Snapshot", "snapshotQueries": []},
        {"snapshotQueries": [{"type": "Query", "entities": [{"type": "V"}]}]},
        {"type": "Snapshot", "snapshotQueries": [{"type": "Query", "entities": [{"type": "V"}],
         "temporalQ": {"timerel": "after", "timeAt": "2020-01-01T00:00:00Z"}}]},
        snapshot(snapshotPriority="high"),
        snapshot(snapshotStatus="success"),
        {"type": "Snapshot", "snapshotQueries": [{"type": "Query", "q": "speed>>"}]},
    ],
)
async def test_invalid_snapshots_are_bad_request_data(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    r = await client.post("snapshots", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == BAD
    assert (await client.get("snapshots")).json() == []


async def test_unknown_snapshot_is_not_found(client: httpx.AsyncClient) -> None:
    scoped = {"NGSILD-Snapshot": "urn:ngsi-ld:snapshot:absent"}
    for path in ("entities?type=Vehicle", f"entities/{FAST}"):
        r = await client.get(path, headers=scoped)
        assert r.status_code == 404 and r.json()["type"] == NOT_FOUND
    assert (await client.get("snapshots/urn:ngsi-ld:snapshot:absent")).status_code == 404
    assert (await client.delete("snapshots/urn:ngsi-ld:snapshot:absent")).status_code == 404


async def test_update_clone_and_purge(vehicles: httpx.AsyncClient) -> None:
    client = vehicles
    path = await create(client, snapshot())
    r = await client.patch(path, json={"snapshotPriority": 2})
    assert r.status_code == 200 and r.json()["snapshotPriority"] == 2
    for bad in ({"snapshotQueries": []}, {"snapshotStatus": "failed"},
                {"snapshotPriority": -1}, {}):
        r = await client.patch(path, json=bad)
        assert r.status_code == 400, r.text
    assert (await client.get(path)).json()["snapshotPriority"] == 2
    r = await client.post(f"{path}/clone", json={"type": "Snapshot", "snapshotPriority": 9})
    assert r.status_code == 201, r.text
    clone = r.headers["Location"].removeprefix("/ngsi-ld/v1/")
    assert clone != path and (await client.get(clone)).json()["snapshotPriority"] == 9
    r = await client.delete("snapshots", params={"q": "speed>50"})
    assert r.status_code == 400 and r.json()["type"] == BAD
    assert (await client.get(path)).status_code == 200
    assert (await client.delete("snapshots", params={"q": "snapshotPriority<5"})).status_code == 204
    assert (await client.get(path)).status_code == 404
    kept = (await client.get(clone)).json()
    r = await client.get("entities", params={"type": "Vehicle"},
                         headers={"NGSILD-Snapshot": kept["id"]})
    assert [e["id"] for e in r.json()] == [FAST]
    assert [d["id"] for d in (await client.get("snapshots")).json()] == [kept["id"]]
