"""The Temporal API writes and retrieval (clauses 5.6.11 - 5.6.16, 5.7.3) over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

BAD = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
INVALID = "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest"
NOT_FOUND = "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"
EID = "urn:ngsi-ld:River:kuma"
DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"



def obs(value: Any, minute: int, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, "observedAt": f"2024-05-01T10:{minute:02d}:00Z",
            **extra}


def river(**attrs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": EID, "type": "River",
        "level": [obs(2.5, 1), obs(2.7, 2), obs(3.1, 3)],
        "flow": [obs(10, 1), obs(12, 2, datasetId="urn:ngsi-ld:Dataset:radar")],
    }
    body.update(attrs)
    return body


async def history(client: httpx.AsyncClient, query: str = "", eid: str = EID,
                  status: int = 200) -> Any:
    r = await client.get(f"temporal/entities/{eid}{query}")
    assert r.status_code == status, r.text
    return r.json()


@pytest.fixture
async def created(client: httpx.AsyncClient) -> httpx.AsyncClient:
    r = await client.post("temporal/entities", json=river())
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/ngsi-ld/v1/temporal/entities/{EID}"
    return client


async def test_create_records_every_instance_and_the_current_state(
    created: httpx.AsyncClient,
) -> None:
    body = await history(created)
    assert [i["value"] for i in body["level"]] == [2.5, 2.7, 3.1]
    assert all(i["instanceId"].startswith("urn:ngsi-ld:Instance:") for i in body["level"])
    assert {i.get("datasetId") for i in body["flow"]} == {None, "urn:ngsi-ld:Dataset:radar"}
    current = (await created.get(f"entities/{EID}")).json()
    assert current["level"]["value"] == 3.1  # the latest observation is the current state
    assert len(current["flow"]) == 2


async def test_upsert_adds_instances_and_replaces_same_observation(
    created: httpx.AsyncClient,
) -> None:
    r = await created.post("temporal/entities", json={
        "id": EID, "type": ["River", "Stream"], "level": [obs(9.9, 3), obs(3.3, 4)]})
    assert r.status_code == 204, r.text
    body = await history(created)
    assert [i["value"] for i in body["level"]] == [2.5, 2.7, 9.9, 3.3]
    assert body["type"] == ["River", "Stream"]


async def test_older_observations_backfill_history_only(created: httpx.AsyncClient) -> None:
    r = await created.post(f"temporal/entities/{EID}/attrs", json={"level": [obs(1.0, 0)]})
    assert r.status_code == 204, r.text
    assert (await created.get(f"entities/{EID}")).json()["level"]["value"] == 3.1
    assert [i["value"] for i in (await history(created))["level"]][0] == 1.0


async def test_add_attributes(created: httpx.AsyncClient) -> None:
    r = await created.post(f"temporal/entities/{EID}/attrs",
                           json={"turbidity": [obs(4, 5), obs(5, 6)]})
    assert r.status_code == 204, r.text
    assert [i["value"] for i in (await history(created))["turbidity"]] == [4, 5]
    r = await created.post("temporal/entities/urn:ngsi-ld:River:none/attrs",
                           json={"turbidity": [obs(4, 5)]})
    assert r.status_code == 404


async def test_core_writes_become_history(client: httpx.AsyncClient) -> None:
    r = await client.post("entities", json={"id": EID, "type": "River", "scope": "/Kyoto",
                                            "level": {"type": "Property", "value": 1}})
    assert r.status_code == 201
    for value in (2, 3):
        r = await client.patch(f"entities/{EID}/attrs",
                               json={"level": {"type": "Property", "value": value}})
        assert r.status_code == 204, r.text
    r = await client.delete(f"entities/{EID}/attrs/level")
    assert r.status_code == 204
    body = await history(client, "?timeproperty=createdAt&options=sysAttrs")
    values = [i["value"] for i in body["level"]]
    assert values == [1, 2, 3, "urn:ngsi-ld:null"]
    assert "deletedAt" in body["level"][-1]
    assert body["scope"][0]["value"] == ["/Kyoto"]
    assert body["scope"][0]["observedAt"] == body["scope"][0]["modifiedAt"]
    deleted = await history(client, "?timeproperty=deletedAt&options=temporalValues")
    assert deleted["level"]["values"][0][0] == "urn:ngsi-ld:null"


async def test_entity_deletion_keeps_history_until_temporal_delete(
    created: httpx.AsyncClient,
) -> None:
    assert (await created.delete(f"entities/{EID}")).status_code == 204
    body = await history(created, "?timeproperty=deletedAt")
    assert {"level", "flow"} <= set(body)
    assert (await created.delete(f"temporal/entities/{EID}")).status_code == 204
    await history(created, status=404)
    assert (await created.delete(f"temporal/entities/{EID}")).status_code == 404


async def test_temporal_delete_removes_entity_and_history(created: httpx.AsyncClient) -> None:
    assert (await created.delete(f"temporal/entities/{EID}")).status_code == 204
    assert (await created.get(f"entities/{EID}")).status_code == 404
    await history(created, status=404)
    r = await created.post("temporal/entities", json=river())
    assert r.status_code == 201  # a new history


async def test_delete_attribute_history(created: httpx.AsyncClient) -> None:
    r = await created.delete(f"temporal/entities/{EID}/attrs/flow")
    assert r.status_code == 204, r.text
    body = await history(created)
    assert [i.get("datasetId") for i in body["flow"]] == ["urn:ngsi-ld:Dataset:radar"]
    r = await created.delete(f"temporal/entities/{EID}/attrs/flow",
                             params={"datasetId": "urn:ngsi-ld:Dataset:radar"})
    assert r.status_code == 204
    assert "flow" not in await history(created)
    assert "flow" not in (await created.get(f"entities/{EID}")).json()
    r = await created.delete(f"temporal/entities/{EID}/attrs/flow")
    assert r.status_code == 404
    r = await created.delete(f"temporal/entities/{EID}/attrs/level", params={"deleteAll": "true"})
    assert r.status_code == 204
    assert "level" not in await history(created)


async def test_modify_and_delete_one_instance(created: httpx.AsyncClient) -> None:
    first = (await history(created))["level"][0]
    url = f"temporal/entities/{EID}/attrs/level/{first['instanceId']}"
    r = await created.patch(url, json={"type": "Property", "value": 2.0,
                                       "observedAt": "2024-05-01T10:01:00Z"})
    assert r.status_code == 204, r.text
    body = await history(created, "?options=sysAttrs")
    assert body["level"][0]["value"] == 2.0
    assert body["level"][0]["instanceId"] == first["instanceId"]
    assert body["level"][0]["modifiedAt"] != body["level"][0]["createdAt"]
    assert (await created.delete(url)).status_code == 204
    assert [i["value"] for i in (await history(created))["level"]] == [2.7, 3.1]
    assert (await created.delete(url)).status_code == 404
    r = await created.patch(f"temporal/entities/{EID}/attrs/flow/{first['instanceId']}",
                            json={"value": 1})
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("DELETE", f"temporal/entities/{EID}/attrs/level/not-a-uri", 400),
        ("DELETE", f"temporal/entities/{EID}/attrs/level/urn:ngsi-ld:x:1", 404),
        ("DELETE", f"temporal/entities/{EID}/attrs//urn:ngsi-ld:Instance:1", 400),
        ("DELETE", "temporal/entities//attrs/level/urn:ngsi-ld:Instance:1", 400),
        ("PATCH", f"temporal/entities/{EID}/attrs//urn:ngsi-ld:Instance:1", 405),
        ("PATCH", f"temporal/entities/{EID}/attrs/level/", 405),
        ("DELETE", "temporal/entities/", 405),
        ("DELETE", "temporal/entities/notAnId", 400),
        ("DELETE", f"temporal/entities/{EID}/attrs/in(valid", 400),
        ("DELETE", f"temporal/entities/{EID}/attrs/%2e%2e", 400),
    ],
)
async def test_bad_paths(created: httpx.AsyncClient, method: str, path: str, status: int) -> None:
    r = await created.request(method, path, json={"value": 1} if method == "PATCH" else None)
    assert r.status_code == status, r.text
    assert len((await history(created))["level"]) == 3  # nothing changed


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"type": "River", "level": [obs(1, 1)]}, BAD),
        ({"id": "not a uri", "type": "River"}, BAD),
        ({"id": EID, "level": [obs(1, 1)]}, BAD),
        ({"id": EID, "type": "River", "expiresAt": "urn:ngsi-ld:null"}, BAD),
        ({"id": EID, "type": "River", "level": [{"type": "Property", "value": 1,
                                                 "observedAt": "2024-05-01T10:00:00+03:00"}]},
         BAD),
        ({"id": EID, "type": "River", "level": [{"type": "Property"}]}, BAD),
        ([], BAD),
    ],
)
async def test_invalid_temporal_entities_change_nothing(
    client: httpx.AsyncClient, body: Any, problem: str,
) -> None:
    r = await client.post("temporal/entities", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == problem
    await history(client, status=404)
    assert (await client.get(f"entities/{EID}")).status_code == 404


async def test_invalid_json_is_invalid_request(client: httpx.AsyncClient) -> None:
    r = await client.post("temporal/entities", content=b"{not json",
                          headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["type"] == INVALID


async def test_null_instances_are_history(client: httpx.AsyncClient) -> None:
    r = await client.post("temporal/entities", json={"id": EID, "type": "River",
                                                     "level": [obs(1, 1)]})
    assert r.status_code == 201
    r = await client.post("temporal/entities", json={
        "id": EID, "type": "River", "level": [obs("urn:ngsi-ld:null", 2)]})
    assert r.status_code == 204, r.text
    assert [i["value"] for i in (await history(client))["level"]] == [1, "urn:ngsi-ld:null"]
    assert "level" not in (await client.get(f"entities/{EID}")).json()


async def test_retrieve_projections_and_representations(created: httpx.AsyncClient) -> None:
    picked = await history(created, "?pick=level")
    assert set(picked) == {"level"}
    omitted = await history(created, "?omit=type,flow")
    assert set(omitted) == {"id", "level"}
    await history(created, "?pick=nothing", status=404)
    await history(created, "?attrs=nothing", status=404)
    only = await history(created, "?attrs=flow&datasetId=urn:ngsi-ld:Dataset:radar")
    assert only["flow"] == [{"type": "Property", "value": 12, "datasetId":
                             "urn:ngsi-ld:Dataset:radar", "observedAt": "2024-05-01T10:02:00Z",
                             "instanceId": only["flow"][0]["instanceId"]}]
    values = await history(created, "?options=temporalValues&attrs=level")
    assert values["level"] == {"type": "Property", "values": [
        [2.5, "2024-05-01T10:01:00Z"], [2.7, "2024-05-01T10:02:00Z"],
        [3.1, "2024-05-01T10:03:00Z"]]}
    ld = await created.get(f"temporal/entities/{EID}", headers={"Accept": "application/ld+json"})
    assert ld.headers["content-type"] == "application/ld+json" and "@context" in ld.json()
    r = await created.get(f"temporal/entities/{EID}", headers={"Accept": "application/geo+json"})
    assert r.status_code == 406


async def test_last_n_and_windows(created: httpx.AsyncClient) -> None:
    body = await history(created, "?lastN=2&attrs=level")
    assert [i["value"] for i in body["level"]] == [2.7, 3.1]
    body = await history(created, "?timerel=after&timeAt=2024-05-01T10:02:00Z&attrs=level")
    assert [i["value"] for i in body["level"]] == [2.7, 3.1]
    body = await history(created, "?timerel=before&timeAt=2024-05-01T10:02:00.000Z")
    assert [i["value"] for i in body["level"]] == [2.5]
    body = await history(created, "?timerel=between&timeAt=2024-05-01T10:02:00Z"
                                  "&endTimeAt=2024-05-01T10:03:00Z")
    assert [i["value"] for i in body["level"]] == [2.7]
    assert [i["value"] for i in body["flow"]] == [12]
    empty = await history(created, "?timerel=after&timeAt=2030-01-01T00:00:00Z")
    assert set(empty) == {"id", "type"}


async def test_instance_limit_pages_with_content_range(client: httpx.AsyncClient) -> None:
    levels = [obs(n, n) for n in range(25)]
    r = await client.post("temporal/entities", json={"id": EID, "type": "River",
                                                     "level": levels})
    assert r.status_code == 201
    r = await client.get(f"temporal/entities/{EID}")
    assert r.status_code == 206
    assert r.headers["content-range"] == (
        "date-time 2024-05-01T10:00:00Z-2024-05-01T10:09:00Z/*")
    assert len(r.json()["level"]) == 10
    r = await client.get(f"temporal/entities/{EID}?lastN=15")
    assert r.status_code == 206
    assert r.headers["content-range"] == (
        "date-time 2024-05-01T10:24:00Z-2024-05-01T10:15:00Z/15")
    r = await client.get(f"temporal/entities/{EID}?lastN=5")
    assert r.status_code == 200 and "content-range" not in r.headers
